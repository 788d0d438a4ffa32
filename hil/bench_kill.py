"""Power cuts while saving: the virtual box killed (SIGKILL) hundreds of times mid-burst.

Run ``python -m hil.bench_kill [--rounds 500] [--seed 1]``. Each round
(:mod:`tests.killloop`) starts the box on the same data folder, checks the board
it came back with, sends a burst of knob changes, and kills it at a random
moment. Printed: rounds, rounds that broke the promise (a change acknowledged
more than 1 s before the cut lost; target 0), rounds whose board did not load
(target 0), the age of the oldest change lost per cut (p50/p99/max; the
changes of the last ~0.5–0.75 s before a cut are expected to go, by design),
and the time from start to a healthy box (p50/p99).

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
from tests.killloop import PROMISE, rounds


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_kill", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as folder:
        judged = await rounds(Path(folder), args.rounds, args.seed)
    broken = [v for _, v in judged if not v.kept]
    print(f"rounds: {len(judged)} in {time.monotonic() - started:.0f} s (seed {args.seed})")
    print(
        f"promise broken (a change older than {PROMISE:.0f} s lost): {len(broken)}  target 0  "
        f"{'PASS' if not broken else 'FAIL'}"
    )
    print("board did not load: 0 (every start came up with its gain; a failed start stops the run)")
    print(f"oldest change lost per cut: {spread([v.lost_age * 1000 for _, v in judged])}")
    print(f"start to healthy box: {spread([r.back_after * 1000 for r, _ in judged])}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
