"""The test server's own xruns: which period lets the suite's JACK servers run without one.

Run ``python -m hil.bench_rig_server [--seconds 60] [--periods 128,256,512,1024]``.

The suite records audio on a private realtime dummy JACK server (48 kHz) and
fails any take during which that server had an xrun (``tests/rig.py``): the
server's period must be one at which it has none of its own over a test. For
each period, one fresh server and the rig (its player and recorder, in their
own process as in the suite), counted with the rig's xrun callback (one per
missed cycle) over ``--seconds`` each:

* **bare**: the server and the rig, idle: the floor;
* **4 jalv**: the same with a chain of four ``eg-amp`` plugins in series
  between the rig's player and recorder, each a ``jalv`` process (the jalv
  engine, no faders): what the suite's busiest audio tests run;
* **4 jalv, recording**: the same while the rig plays a tone through the
  chain and records it, as a test's takes do.

It prints one row per period, the machine's load average beside it (other
work on the machine makes xruns), and the smallest period with no xrun in any
column. A measurement, not a test: it exits 0 whatever the figures. Every
server, plugin and rig process it starts is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.engine import TrackPorts
from appliance.engine.jack.server import DummySettings, JackServer
from appliance.engine.jalv.engine import JalvEngine
from appliance.plugins.catalog import Catalog
from tests.rig import Rig, sine

ROOT = Path(__file__).resolve().parent.parent
RATE = 48000
PERIODS = (128, 256, 512, 1024)
TRACK = "t"
#: The chain: this many eg-amps (catalog key ``gain``) in series, each at 0 dB.
PLUGINS = 4
#: Settling time after the chain is built, before counting, seconds.
SETTLE = 2.0
#: Length of each take while recording, seconds (several in a row fill a column's time).
TAKE_SECONDS = 10.0


@dataclass
class Row:
    """One period's figures."""

    period: int
    realtime: bool = True
    xruns: dict[str, int] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)  # load average (1 min) before and after

    @property
    def clean(self) -> bool:
        return all(count == 0 for count in self.xruns.values())


COLUMNS = ("bare", f"{PLUGINS} jalv", f"{PLUGINS} jalv, recording")


async def _count(rig: Rig, seconds: float) -> int:
    before = await rig.server_xruns()
    await asyncio.sleep(seconds)
    return await rig.server_xruns() - before


async def _count_recording(rig: Rig, seconds: float) -> int:
    before = await rig.server_xruns()
    tone = sine(1000.0, round(TAKE_SECONDS * RATE), RATE, -12.0)
    left = seconds
    while left > 0:
        await rig.play_and_record(tone[: round(min(left, TAKE_SECONDS) * RATE)])
        left -= TAKE_SECONDS
    return await rig.server_xruns() - before


async def measure(period: int, seconds: float, catalog: Catalog, log: bool = True) -> Row:
    """One period: the three columns on one fresh server."""
    row = Row(period, load=(os.getloadavg()[0], 0.0))
    server = JackServer(f"rigbench-{secrets.token_hex(3)}", DummySettings(RATE, period, realtime=True))
    await server.start()
    row.realtime = server.is_realtime
    rig = Rig(server.name)
    engine: JalvEngine | None = None
    try:
        await rig.open()
        await asyncio.sleep(SETTLE)
        row.xruns[COLUMNS[0]] = await _count(rig, seconds)
        engine = JalvEngine([TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], server_name=server.name)
        await engine.start()
        amp = catalog.lookup("gain")
        assert amp is not None, "eg-amp is not installed (lv2-examples)"
        for index in range(PLUGINS):
            await engine.add_plugin(TRACK, f"amp{index}", amp, index, {"gain": 0.0})
        await asyncio.sleep(SETTLE)
        row.xruns[COLUMNS[1]] = await _count(rig, seconds)
        row.xruns[COLUMNS[2]] = await _count_recording(rig, seconds)
    finally:
        if engine is not None:
            await engine.stop()
        await rig.close()
        await server.stop()
    row.load = (row.load[0], os.getloadavg()[0])
    if log:
        print(f"  {period} frames: {row.xruns} (load {row.load[0]:.2f} → {row.load[1]:.2f})", flush=True)
    return row


def table(rows: Sequence[Row], seconds: float) -> str:
    """The rows as a table, the bare server as the floor beside the chain."""
    head = f"{'period':>8} {'ms':>6} " + " ".join(f"{c:>20}" for c in COLUMNS) + "   load avg    server"
    lines = [f"xruns in {seconds:g} s per column (48 kHz, dummy backend; one per missed cycle)", head]
    for row in rows:
        ms = 1000 * row.period / RATE
        cells = " ".join(f"{row.xruns.get(c, 0):>20}" for c in COLUMNS)
        mode = "realtime" if row.realtime else "NOT realtime"
        lines.append(f"{row.period:>8} {ms:>6.1f} {cells}   {row.load[0]:4.2f}→{row.load[1]:4.2f}  {mode}")
    clean = [row.period for row in rows if row.clean]
    lines.append(
        f"smallest period with no xrun in any column: {min(clean)} frames"
        if clean
        else "no period was free of xruns: measure again on a quieter machine, or longer periods"
    )
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hil.bench_rig_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each column's count")
    parser.add_argument("--periods", default=",".join(map(str, PERIODS)))
    args = parser.parse_args(argv)
    catalog = Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)
    periods = [int(p) for p in args.periods.split(",")]
    print(
        f"the test server's own xruns: {len(periods)} periods, 3 × {args.seconds:g} s each, "
        f"{os.cpu_count()} CPUs"
    )
    rows = [await measure(period, args.seconds, catalog) for period in periods]
    print(table(rows, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
