"""``python -m hil.rig``: measure a virtual box into a report folder, or compare two reports.

::

    python -m hil.rig run --report out/jalv                 # the long run: 10 min of dropouts
    python -m hil.rig run --quick --engine carla --report out/carla
    python -m hil.rig compare out/jalv out/carla            # table to stdout, HTML beside them

``run`` starts its own dummy JACK server and virtual box (see
:mod:`hil.rig.runner`); it is a measurement, not a test, and exits 0 once
the report is written. ``compare`` prints every figure of two reports side
by side and writes an HTML page with their plots in pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

from hil.rig.report import compare, write_report
from hil.rig.runner import QUICK, RunSettings, run_virtual


def _settings(args: argparse.Namespace) -> RunSettings:
    settings = QUICK if args.quick else RunSettings()
    changes: dict[str, Any] = {"engine": args.engine}
    if args.dropout_seconds is not None:
        changes["dropout_seconds"] = args.dropout_seconds
    return dataclasses.replace(settings, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.rig", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="measure a virtual box on this machine")
    run.add_argument("--engine", default="jalv", choices=("jalv", "carla"))
    run.add_argument("--report", type=Path, required=True, help="the report folder (made if missing)")
    run.add_argument("--quick", action="store_true", help="the short run (about two minutes)")
    run.add_argument("--dropout-seconds", type=float, default=None, help="length of the dropout recording")
    both = commands.add_parser("compare", help="two report folders side by side")
    both.add_argument("a", type=Path)
    both.add_argument("b", type=Path)
    both.add_argument("--html", type=Path, default=None, help="where the page goes")
    args = parser.parse_args(argv)
    if args.command == "compare":
        page = compare(args.a, args.b, args.html)
        print(f"side by side: {page}")
        return 0
    settings = _settings(args)
    with tempfile.TemporaryDirectory(prefix="rig-") as work:
        result = asyncio.run(run_virtual(settings, Path(work)))
    page = write_report(result, args.report)
    print(f"report: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
