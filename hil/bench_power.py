"""Real power cuts: the Debian card in QEMU unplugged during bursts of knob changes, 100 times.

Run as root ``python -m hil.bench_power [--cuts 100] [--seed N] [--card out/card/pedalboard-amd64.img]``
(build the card first: ``image/card/build --arch amd64``). Each round
(:mod:`tests.powercuts`) powers the card up, waits until the box plays, reads the board
it came back with, sends a burst of knob changes and kills QEMU more than 1 s after the
first change was acknowledged: the guest's page cache and unwritten files are lost, as
at a player's unplug. The cut times come from the seed (printed; the same seed, the same
cut times).

Printed: cuts, cuts that broke the promise (a change acknowledged more than 1 s before
the cut lost; target 0), boots that did not bring the whole board back (target 0: such
a boot stops the run), the age of the oldest change lost per cut (p50/p99/max: the last
~0.5–0.75 s of changes are expected to go, by design), and the power-up to playing
time (p50/p99/max, emulated: a figure to compare with itself, not a Pi's).

A measurement, not a test: it exits 0 whatever the figures (1 if a boot failed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from hil.figures import spread
from image.card.qemu import EMULATED_AUDIO, Machine, MachineError, arch_of, why_not_here
from tests.killloop import PROMISE, SEED_VARIABLE, seed_from_environment
from tests.powercuts import power_cuts

ROOT = Path(__file__).resolve().parent.parent
CARD = ROOT / "out" / "card" / "pedalboard-amd64.img"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_power", description=__doc__.split("\n")[0])
    parser.add_argument("--cuts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None, help=f"default: {SEED_VARIABLE}, else a fresh one")
    parser.add_argument("--card", type=Path, default=CARD, help="a card of image/card/build")
    parser.add_argument("--period", type=int, default=int(EMULATED_AUDIO["audio_period"]), help="frames")
    parser.add_argument("--rate", type=int, default=int(EMULATED_AUDIO["audio_rate"]), help="audio_rate=, Hz")
    args = parser.parse_args(argv)
    why = why_not_here(arch_of(args.card))
    if why is not None or not args.card.is_file():
        print(f"bench_power: {why or f'no card at {args.card}: build it with image/card/build --arch amd64'}")
        return 2
    seed = args.seed if args.seed is not None else seed_from_environment()
    print(f"seed {seed} (--seed {seed} runs the same cut times); card {args.card}", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-power-") as folder:
        settings = {**EMULATED_AUDIO, "audio_period": str(args.period), "audio_rate": str(args.rate)}
        machine = Machine(args.card, Path(folder) / "card", settings)
        try:
            cuts = await power_cuts(machine, args.cuts, seed, log=lambda line: print(line, flush=True))
        except (MachineError, AssertionError) as exc:
            print(f"bench_power: stopped: {exc}")
            return 1
        finally:
            machine.discard()
    broken = [c for c in cuts if not c.verdict.kept]
    untested = [c for c in cuts if not c.verdict.tested]
    print(f"cuts: {len(cuts)} in {time.monotonic() - started:.0f} s (seed {seed})")
    print(
        f"promise broken (a change older than {PROMISE:.0f} s lost): {len(broken)}  target 0  "
        f"{'PASS' if not broken else 'FAIL'}"
    )
    print(f"cuts before any change was {PROMISE:.0f} s old: {len(untested)}  target 0")
    print("boots without the whole board: 0 (every boot brought it back; one that did not stops the run)")
    print(f"oldest change lost per cut: {spread([c.verdict.lost_age for c in cuts], 's', 2)}")
    print(f"power-up to the box playing (emulated): {spread([c.boot_seconds for c in cuts], 's', 1)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
