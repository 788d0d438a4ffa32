"""``python -m hil.rig``: measure a box into a report folder, calibrate the rig, compare two reports.

::

    python -m hil.rig run --report out/jalv                 # a virtual box: 10 min of dropouts
    python -m hil.rig run --quick --engine carla --report out/carla
    python -m hil.rig calibrate --out calibration.json      # the rig's interface, loopback cable
    python -m hil.rig run --box ws://pedalboard.local:8000/ws --token TOKEN \\
        --calibration calibration.json --report out/box     # a real box, cabled to the interface
    python -m hil.rig compare out/jalv out/carla            # table to stdout, HTML beside them

``run`` without ``--box`` starts its own dummy JACK server and virtual box;
with ``--box`` it plays into and records from the rig computer's JACK
server (``--jack-server``, ``--play-port``, ``--record-port``) and talks to
the box over the protocol (see :mod:`hil.rig.runner`). It is a
measurement, not a test, and exits 0 once the report is written; it exits
2 with a sentence when the box, the interface or the calibration cannot be
used. ``calibrate`` measures the interface with its output cabled straight
into its input. ``compare`` prints every figure of two reports side by side
and writes an HTML page with their plots in pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

from hil.rig.calibration import Calibration
from hil.rig.report import compare, write_report
from hil.rig.results import RigRun
from hil.rig.runner import QUICK, RunSettings, calibrate, run_box, run_virtual
from hil.rig.setups import DEFAULT_CAPTURE, DEFAULT_PLAYBACK, Box, InterfacePorts, RigError


def _settings(args: argparse.Namespace) -> RunSettings:
    settings = QUICK if args.quick else RunSettings()
    changes: dict[str, Any] = {"track": args.track}
    if getattr(args, "engine", None) is not None:
        changes["engine"] = args.engine
    for name in ("dropout_seconds", "latency_takes", "changes", "switches"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    return dataclasses.replace(settings, **changes)


def _db(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} dB"


def _ports(args: argparse.Namespace) -> InterfacePorts:
    return InterfacePorts(args.jack_server, args.play_port, args.record_port)


def _interface_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jack-server", default=None, help="the rig computer's JACK server (its default)")
    parser.add_argument(
        "--play-port", default=DEFAULT_PLAYBACK, help=f"interface output to play into ({DEFAULT_PLAYBACK})"
    )
    parser.add_argument(
        "--record-port", default=DEFAULT_CAPTURE, help=f"interface input the rig records ({DEFAULT_CAPTURE})"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hil.rig", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="measure a box: a virtual one here, or a real one with --box")
    run.add_argument("--report", type=Path, required=True, help="the report folder (made if missing)")
    run.add_argument("--quick", action="store_true", help="the short run (a minute or two)")
    run.add_argument("--engine", default=None, choices=("jalv", "carla"), help="virtual box engine (jalv)")
    run.add_argument(
        "--box", default=None, help="a real box's WebSocket URL, e.g. ws://pedalboard.local:8000/ws"
    )
    run.add_argument("--token", default=None, help="the box's token (its /boot/firmware/appliance-token.txt)")
    run.add_argument("--calibration", type=Path, default=None, help="the interface's file from `calibrate`")
    run.add_argument("--box-version", default=None, help="the real box's version, for the report")
    run.add_argument("--track", default="track_001", help="the box's track the rig plays through")
    run.add_argument("--dropout-seconds", type=float, default=None, help="length of the dropout recording")
    run.add_argument("--latency-takes", type=int, default=None, help="noise takes per latency figure")
    run.add_argument("--changes", type=int, default=None, help="changes per knob-to-sound series")
    run.add_argument("--switches", type=int, default=None, help="switches of each kind")
    _interface_options(run)

    cal = commands.add_parser("calibrate", help="measure the rig's interface with a loopback cable")
    cal.add_argument("--out", type=Path, required=True, help="the calibration file to write (JSON)")
    cal.add_argument("--report", type=Path, default=None, help="also a report folder with its plots")
    cal.add_argument("--latency-takes", type=int, default=None, help="noise takes for the round trip")
    cal.set_defaults(quick=False, track="track_001")
    _interface_options(cal)

    both = commands.add_parser("compare", help="two report folders side by side")
    both.add_argument("a", type=Path)
    both.add_argument("b", type=Path)
    both.add_argument("--html", type=Path, default=None, help="where the page goes")
    return parser


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RigRun:
    settings = _settings(args)
    if args.box is None:
        for option in ("token", "calibration", "box_version", "jack_server"):
            if getattr(args, option) is not None:
                parser.error(f"--{option.replace('_', '-')} is for a real box (--box)")
        with tempfile.TemporaryDirectory(prefix="rig-") as work:
            return asyncio.run(run_virtual(settings, Path(work)))
    if args.engine is not None:
        parser.error("--engine is for a virtual box: a real box runs its own")
    box = Box.parse(args.box, args.token)
    calibration = Calibration.load(args.calibration) if args.calibration is not None else None
    return asyncio.run(run_box(settings, box, _ports(args), calibration, args.box_version))


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "compare":
        page = compare(args.a, args.b, args.html)
        print(f"side by side: {page}")
        return 0
    try:
        if args.command == "calibrate":
            calibration, run = asyncio.run(calibrate(_settings(args), _ports(args)))
            calibration.save(args.out)
            figures = calibration.figures()
            print(
                f"interface: round trip {figures['latency_frames']} frames ({figures['latency_ms']:.2f} ms), "
                f"THD+N {_db(figures['thd_n_db'])}, response {_db(figures['response_min_db'])} to "
                f"{_db(figures['response_max_db'])}"
            )
            _warn_spoiled(run)
            print(f"calibration: {args.out}")
            if args.report is not None:
                print(f"report: {write_report(run, args.report)}")
            return 0
        result = _run(args, parser)
    except RigError as exc:
        print(f"hil.rig: {exc}", file=sys.stderr)
        return 2
    page = write_report(result, args.report)
    _warn_spoiled(result)
    print(f"report: {page}")
    return 0


def _warn_spoiled(run: RigRun) -> None:
    """Say so when the rig's own JACK server spoiled takes (the report marks each)."""
    if run.spoiled:
        sections = sorted({take.section for take in run.spoiled})
        print(
            f"hil.rig: {len(run.spoiled)} take(s) had xruns of the rig's own JACK server "
            f"({', '.join(sections)}): their figures include the rig's dropped cycles (marked in the report)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(main())
