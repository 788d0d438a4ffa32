"""The virtual box killed with SIGKILL hundreds of times mid-burst, each time started again at once.

Run ``python -m hil.bench_kill [--rounds 500] [--seed N]``. Each round
(:mod:`tests.killloop`) starts the box on the same data folder right after the
round before killed it (its JACK server and plugins still ending), checks the
board it came back with, sends a burst of knob changes, and kills it more
than 1 s after the first change was acknowledged. The kill times come from the
seed (``--seed``, else ``KILL_9_SEED``, else a fresh one; printed): the same
seed, the same kill times. A SIGKILL keeps the page cache: this measures a
crash of the box, not a power cut.

Printed: rounds, rounds that broke the promise (a change acknowledged more
than 1 s before the kill lost; target 0), rounds whose box did not come back
healthy with its whole board (target 0: such a start stops the run), the age
of the oldest change lost per kill (p50/p99/max; the changes of the last
~0.5–0.75 s before a kill are expected to go, by design), the time from
start to a healthy box (p50/p99/max), and how many starts found the killed
box's JACK server still ending.

A measurement, not a test: it exits 0 whatever the figures. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from hil.figures import spread
from tests.killloop import PROMISE, SEED_VARIABLE, rounds, seed_from_environment

#: What the box logs when its JACK server waits for the killed box's (appliance.engine.jack.server).
STILL_ENDING = "waiting for the old jackd"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_kill", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--seed", type=int, default=None, help=f"default: {SEED_VARIABLE}, else a fresh one")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else seed_from_environment()
    print(f"seed {seed} (--seed {seed} runs the same kill times)", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as folder:
        judged = await rounds(Path(folder), args.rounds, seed)
        log = (Path(folder) / "box.log").read_text(errors="replace")
    waited = log.count(STILL_ENDING)
    broken = [v for _, v in judged if not v.kept]
    untested = [v for _, v in judged if not v.tested]
    print(f"rounds: {len(judged)} in {time.monotonic() - started:.0f} s (seed {seed})")
    print(
        f"promise broken (a change older than {PROMISE:.0f} s lost): {len(broken)}  target 0  "
        f"{'PASS' if not broken else 'FAIL'}"
    )
    print(f"rounds killed before any change was {PROMISE:.0f} s old: {len(untested)}  target 0")
    print(
        "box not back healthy with its whole board: 0 (every start came back; a failed start stops the run)"
    )
    print(f"oldest change lost per kill: {spread([v.lost_age * 1000 for _, v in judged])}")
    print(f"start to healthy box: {spread([r.back_after * 1000 for r, _ in judged])}")
    print(f"starts that found the killed box's JACK server still ending (and waited for it): {waited}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
