"""Switching sounds: how long a snapshot recall and a pedalboard switch take, and what they cost.

Run ``python -m hil.bench_switch [--rounds 20] [--engines jalv,carla]``.

For each engine, on a private realtime dummy JACK server (48 kHz, 128
frames) with the virtual rig and the box's faders:

* **snapshot**: two eg-amps whose gains change in one step (the recall path:
  every value in one loop turn); frames from sending to the first sample
  played at the new gain, read off the recording (its frame clock, not the
  wall clock).
* **pedalboard**: switches back and forth between two 7-plugin boards (gate,
  overdrive, compressor, eq, delay, reverb, gain: ``hil/bench_engines``'s
  board), spillover on; frames from the request to the moment the new chain
  takes the signal (the fade-in then takes 20 ms), and the longest silence in
  a recording of each switch.
* **load**: peak and mean DSP load and the server's xruns during the switching
  rounds, beside the same time with the board playing and no switch.

A measurement, not a test: it prints p50/p99/max per engine and exits 0.
Traffic stays on this machine; every round is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from appliance.config import CarlaConfig, JackConfig
from appliance.core.controls import PluginType
from appliance.engine import Engine, OwnPlugins, SavedPlugin, TrackPorts
from appliance.engine.faders import FADER_URI
from appliance.engine.jack.server import DummySettings, JackServer
from appliance.plugins import lilv
from appliance.plugins.catalog import Catalog
from hil.bench_engines import BOARD, BOARD_VALUES
from hil.figures import spread
from tests.rig import Rig, longest_gap, sine

ROOT = Path(__file__).resolve().parent.parent

TRACK = "t"
RATE = 48000
PERIOD = 128
TONE = sine(1000.0, RATE, RATE, -12.0)
SPILLOVER = 3.0
#: How often DSP load is sampled.
SAMPLE_EVERY = 0.05


def _engine(kind: str, server: str, rig: Rig, fader: PluginType) -> Engine:
    tracks = [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)]
    if kind == "jalv":
        from appliance.engine.jalv.engine import JalvEngine

        return JalvEngine(tracks, server_name=server, own=OwnPlugins(fader=fader))
    from appliance.engine.carla.engine import CarlaEngine

    return CarlaEngine(tracks, CarlaConfig(), JackConfig(server=server), own=OwnPlugins(fader=fader))


def _board(catalog: Catalog, prefix: str, gain: float) -> list[SavedPlugin]:
    plugins = []
    for index, key in enumerate(BOARD):
        plugin_type = catalog.lookup(key)
        assert plugin_type is not None, f"{key} is not installed"
        values = {**plugin_type.defaults(), **BOARD_VALUES.get(key, {})}
        if key == "gain":
            values["gain"] = gain
        engine_values = {
            plugin_type.canonical(k).symbol: plugin_type.canonical(k).to_engine(v) for k, v in values.items()
        }
        plugins.append(SavedPlugin(TRACK, f"{prefix}{index}", plugin_type, engine_values))
    return plugins


async def _snapshots(engine: Engine, rig: Rig, amp: PluginType, rounds: int) -> list[int]:
    await engine.switch_board(
        [SavedPlugin(TRACK, "a1", amp, {"gain": 0.0}), SavedPlugin(TRACK, "a2", amp, {"gain": 0.0})],
        0.0,
        lambda: None,
    )
    delays: list[int] = []
    for round_ in range(rounds):
        gain = -6.0 if round_ % 2 == 0 else 0.0
        sent: list[int] = []

        async def recall(gain: float = gain, sent: list[int] = sent) -> None:
            await engine.set_parameters("a1", {"gain": gain})
            await engine.set_parameters("a2", {"gain": gain})
            sent.append(rig.position())

        reference, recorded, _ = await rig.record_during(TONE[: RATE // 2], recall, lead_frames=RATE // 5)
        ratio = np.abs(recorded[:, 0]) / np.maximum(np.abs(reference), 1e-9)
        changed = np.flatnonzero((np.abs(reference) > 0.1) & (np.abs(ratio - 10 ** (2 * gain / 20)) < 0.01))
        after = changed[changed >= sent[0] - 2 * PERIOD]
        if after.size:
            delays.append(int(after[0]) - sent[0])
    return delays


async def _sample_load(engine: Engine, peaks: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peaks.append(engine.info().dsp_load)
        await asyncio.sleep(SAMPLE_EVERY)


async def _switches(
    engine: Engine, rig: Rig, boards: list[list[SavedPlugin]], rounds: int
) -> tuple[list[int], list[int], list[float], int, int]:
    """(frames request → switched, longest silence per switch, DSP load samples, xruns,
    of which while the new plugins started)."""
    starting = 0
    times: list[int] = []
    silences: list[int] = []
    load: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(_sample_load(engine, load, stop))
    xruns = engine.info().xruns
    try:
        for round_ in range(rounds):
            plugins = [
                SavedPlugin(p.track_id, f"{p.plugin_id}r{round_}", p.type, p.values)
                for p in boards[round_ % 2]
            ]
            marks: list[int] = []

            async def switch(plugins: list[SavedPlugin] = plugins, marks: list[int] = marks) -> None:
                nonlocal starting
                marks.append(rig.position())
                before = engine.info().xruns

                def commit() -> None:
                    nonlocal starting
                    marks.append(rig.position())
                    starting += engine.info().xruns - before

                await engine.switch_board(plugins, SPILLOVER, commit)

            _reference, recorded, _ = await rig.record_during(np.tile(TONE, 3), switch, lead_frames=RATE // 4)
            if len(marks) == 2:
                times.append(marks[1] - marks[0])
            silences.append(longest_gap(recorded[PERIOD:-PERIOD, 0])[0])
    finally:
        stop.set()
        await sampler
    return times, silences, load, engine.info().xruns - xruns, starting


async def _idle(engine: Engine, seconds: float) -> tuple[list[float], int]:
    load: list[float] = []
    stop = asyncio.Event()
    xruns = engine.info().xruns
    sampler = asyncio.ensure_future(_sample_load(engine, load, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await sampler
    return load, engine.info().xruns - xruns


def _line(name: str, values: list[float], unit: str, scale: Callable[[float], float] = float) -> str:
    return f"  {name:<22} {spread([scale(v) for v in values], unit, digits=1)}"


def _ms(frames: float) -> float:
    return frames / RATE * 1000


async def measure(kind: str, rounds: int, catalog: Catalog, fader: PluginType) -> None:
    server = JackServer(f"switch-{secrets.token_hex(3)}", DummySettings(RATE, PERIOD, realtime=True))
    await server.start()
    rig = Rig(server.name)
    await rig.open()
    engine = _engine(kind, server.name, rig, fader)
    await engine.start()
    try:
        amp = catalog.lookup("gain")
        assert amp is not None
        delays = await _snapshots(engine, rig, amp, rounds)
        boards = [_board(catalog, "a", -6.0), _board(catalog, "b", 0.0)]
        await engine.switch_board(boards[1], 0.0, lambda: None)
        await asyncio.sleep(SPILLOVER)
        idle_load, idle_xruns = await _idle(engine, rounds * 1.5)
        times, silences, load, xruns, starting = await _switches(engine, rig, boards, rounds)
    finally:
        await engine.stop()
        await rig.close()
        await server.stop()
    print(f"{kind}:")
    print(_line("snapshot, to sound", [float(d) for d in delays], "ms", _ms))
    print(_line("7-plugin switch", [float(t) for t in times], "ms", _ms))
    print(_line("longest silence", [float(s) for s in silences], "frames"))
    for name, samples, count in (("no switching", idle_load, idle_xruns), ("switching", load, xruns)):
        mean = statistics.fmean(samples) if samples else 0.0
        peak = max(samples, default=0.0)
        print(f"  DSP load, {name:<13} mean {mean:5.1f} %   peak {peak:5.1f} %   xruns {count}")
    print(f"  xruns while the new plugins started (before the switch point): {starting}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_switch", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--engines", default="jalv,carla")
    args = parser.parse_args(argv)
    catalog = Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)
    fader = Catalog.build([], lilv.scan_plugins(uris={FADER_URI})).lookup(FADER_URI)
    if fader is None:
        print(f"{FADER_URI} is not installed (x42-plugins): switches would cut, nothing to measure")
        return 0
    print(f"switching at 48 kHz / {PERIOD} frames, realtime dummy server, {args.rounds} rounds per engine")
    for kind in args.engines.split(","):
        if kind == "carla":
            from appliance.engine import carla

            if (why := carla.unavailable(None)) is not None:
                print(f"{kind}: NOT AVAILABLE — {why}")
                continue
        await measure(kind, args.rounds, catalog, fader)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
