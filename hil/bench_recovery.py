"""How long a crashed plugin host takes to sound again, on the recording's own frame clock.

Run ``python -m hil.bench_recovery [--rounds 20] [--engines jalv,carla,carla-bridges] [--signal KILL]``.

For each engine, on a private realtime dummy JACK server (48 kHz, 128
frames) with the virtual rig: a track with two eg-amp plugins (−6 dB and
0 dB) plays a 1 kHz tone; one second into a 5 s recording the plugin host is
killed (jalv: the first plugin's process; Carla: the host process that holds
both; Carla with bridges: the first plugin's bridge process). Per 10 ms window of the recording:

* **silent**: windows under −40 dB (JACK waiting for a client that died
  mid-cycle; nothing the box can hurry);
* **dry after**: from the kill to the first window at 0 dB (the box routed
  the track around the dead host);
* **back after**: from the kill to the first window back at −6 dB that stays
  there to the end of the recording (the host restarted, every plugin
  reloaded with its values, pre-rolled and rewired).

The box gives a host up after 5 deaths within a minute; the benchmark lifts
that limit so that every round measures a restart.

A measurement, not a test: it prints p50/p99/max per engine and exits 0.
Traffic stays on this machine; every round is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import CarlaConfig, JackConfig
from appliance.engine import Engine, EngineEvent, TrackPorts
from appliance.engine.jack.server import DummySettings, JackServer
from appliance.engine.respawn import RespawnSettings
from appliance.plugins.catalog import Catalog
from hil.figures import spread
from tests.rig import Rig, sine, window_gains

ROOT = Path(__file__).resolve().parent.parent

TRACK = "t"
RATE = 48000
WINDOW = 480  # 10 ms: ten periods of the 1 kHz tone
RECORDING = sine(1000.0, RATE * 5, RATE, -12.0)
KILL_AT = RATE  # frames into the recording
SILENT_DB = -40.0
TOLERANCE_DB = 0.5
#: Pause between rounds, so that the next one starts from a settled engine.
SETTLE = 1.0


@dataclass
class Figures:
    silent_ms: list[float] = field(default_factory=list)
    dry_ms: list[float] = field(default_factory=list)
    back_ms: list[float] = field(default_factory=list)
    never_back: int = 0


def _engine(kind: str, server: str, rig: Rig, events: list[EngineEvent], rounds: int) -> Engine:
    # The box gives a host up after 5 deaths a minute; here it must come back every round.
    respawn = RespawnSettings(limit=rounds + 1)
    tracks = [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)]
    if kind == "jalv":
        from appliance.engine.jalv.engine import JalvEngine

        return JalvEngine(tracks, server_name=server, on_event=events.append, respawn=respawn)
    from appliance.engine.carla.engine import CarlaEngine

    jack = JackConfig(server=server)
    carla = CarlaConfig(bridges=kind == "carla-bridges")
    return CarlaEngine(tracks, carla, jack, on_event=events.append, respawn=respawn)


def _kill(kind: str, engine: Any, sig: signal.Signals, others: set[int]) -> None:
    """jalv: plugin a's process; carla: the host; carla-bridges: plugin a's bridge."""
    if kind == "jalv":
        pid = engine.plugin_pid("a")
    elif kind == "carla":
        pid = engine.host_pid
    else:
        pid = min(engine.bridge_pids() - others, default=None)
    if pid is not None:
        os.kill(pid, sig)


def _read(gains: np.ndarray, start: int) -> tuple[float, float | None, float | None]:
    """(silent ms, dry after ms, back after ms) from window ``start`` on."""
    after = gains[start:]
    silent = float((after < SILENT_DB).sum()) * WINDOW / RATE * 1000
    dry = next((i for i, g in enumerate(after) if abs(g) <= TOLERANCE_DB), None)
    near = np.abs(after + 6.0) <= TOLERANCE_DB
    back = None
    for i in range(len(after)):
        if near[i:].all():
            back = i
            break
    to_ms = WINDOW / RATE * 1000
    return silent, None if dry is None else dry * to_ms, None if back is None else back * to_ms


async def measure(kind: str, rounds: int, sig: signal.Signals, amp: object) -> Figures:
    figures = Figures()
    server = JackServer(f"recovery-{secrets.token_hex(3)}", DummySettings(RATE, 128, realtime=True))
    await server.start()
    rig = Rig(server.name)
    await rig.open()
    events: list[EngineEvent] = []
    engine = _engine(kind, server.name, rig, events, rounds)
    await engine.start()
    try:
        await engine.add_plugin(TRACK, "a", amp, 0, {"gain": -6.0})  # type: ignore[arg-type]
        before = engine.bridge_pids() if kind == "carla-bridges" else set()  # type: ignore[attr-defined]
        await engine.add_plugin(TRACK, "b", amp, 1, {"gain": 0.0})  # type: ignore[arg-type]
        # b's bridge: the one that was not there before b
        others = engine.bridge_pids() - before if kind == "carla-bridges" else set()  # type: ignore[attr-defined]
        for _ in range(rounds):
            await rig.gain_until(lambda g: abs(g + 6.0) <= 0.1)

            async def crash() -> None:
                _kill(kind, engine, sig, others)

            reference, recorded, _ = await rig.record_during(RECORDING, crash, lead_frames=KILL_AT)
            gains = window_gains(recorded[:, 0], reference, WINDOW)
            silent, dry, back = _read(gains, rig.last_action_frame // WINDOW)
            figures.silent_ms.append(silent)
            if dry is not None:
                figures.dry_ms.append(dry)
            if back is None:
                figures.never_back += 1
            else:
                figures.back_ms.append(back)
            await asyncio.sleep(SETTLE)
    finally:
        await engine.stop()
        await rig.close()
        await server.stop()
    return figures


def _line(name: str, values: list[float]) -> str:
    return f"  {name:<12} {spread(values)}"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_recovery", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--engines", default="jalv,carla,carla-bridges")
    parser.add_argument("--signal", default="KILL", help="KILL, SEGV or ABRT")
    args = parser.parse_args(argv)
    sig = signal.Signals[f"SIG{args.signal.upper()}"]
    catalog = Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)
    amp = catalog.lookup("gain")
    print(f"recovery from SIG{args.signal.upper()} to the plugin host, {args.rounds} rounds per engine")
    for kind in args.engines.split(","):
        if kind.startswith("carla"):
            from appliance.engine import carla

            if (why := carla.unavailable(None)) is not None:
                print(f"{kind}: NOT AVAILABLE — {why}")
                continue
        figures = await measure(kind, args.rounds, sig, amp)
        print(f"{kind}:")
        print(_line("silent", figures.silent_ms))
        print(_line("dry after", figures.dry_ms))
        print(_line("back after", figures.back_ms))
        print(f"  never back   {figures.never_back} of {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
