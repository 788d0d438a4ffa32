"""A crowd of phones: 50 clients for a minute, 10 of them sweeping knobs at 30 Hz.

Run ``python -m hil.bench_crowd [--seconds 60] [--clients 50] [--sweepers 10]``.

A virtual box (jalv, its own realtime JACK dummy server at 128 frames, two
gain plugins) runs as a user runs it. Two phases of ``--seconds`` each:

1. **quiet**: no client at all (the baseline);
2. **crowd**: ``--clients`` connections; ``--sweepers`` of them each sweep one
   plugin's gain at 30 Hz, waiting for the box's echo of each change; the
   others only listen, reading everything as it comes (well-behaved phones).

Printed per phase: the box's RSS (start, max, end, sampled each second), the
event loop's lag as the box itself measures it (``/healthz`` ``loop_lag_ms``
over the last minute), and the JACK server's xruns during the phase. For the
crowd: the echo round trip of the sweepers (p50/p99/max), echoes that never
came, and, once the sweeping stops, whether every listener's last value of
each knob is the board's (the box coalesces changes to the others at 30 a
second per control, but the last value always arrives). Targets: no echo
lost, every listener up to date, RSS flat, xruns no higher than in the quiet
phase.

A measurement, not a test: it exits 0 whatever the figures. Loopback only;
every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from hil.figures import spread
from hil.wsprobe import PARAMETER_MARK, ProbeClient, ProbeError
from tests.boxproc import BoxProcess, virtual_config

TRACK = "track_001"
HOST = "127.0.0.1"
SWEEP_HZ = 30.0
#: How long a sweeper waits for the echo of one change before counting it lost.
ECHO_TIMEOUT = 2.0
#: After the sweeping stops: time for the last coalesced values to reach everyone.
SETTLE = 1.0


class Listener(ProbeClient):
    """A phone that only listens: keeps the newest value of each plugin's gain it was sent."""

    def __init__(self, key: bytes, on_progress: Any = None) -> None:
        super().__init__(key, on_progress)
        self.latest: dict[str, float] = {}

    def _on_text(self, payload: bytes, now: int) -> bool:
        if PARAMETER_MARK in payload:
            data = json.loads(payload)["data"]
            self.latest[data["plugin_id"]] = float(data["parameter_value"])
        return super()._on_text(payload, now)


@dataclass
class Phase:
    name: str
    rss_mib: list[float] = field(default_factory=list)
    xruns: int = 0
    lag: dict[str, float] = field(default_factory=dict)
    echo_ms: list[float] = field(default_factory=list)
    lost: int = 0
    sent: int = 0
    stale: int = 0
    listeners: int = 0
    dropped: int = 0


def _health(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _sample_rss(pid: int, into: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        into.append(_rss_mib(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    into.append(_rss_mib(pid))


async def _board_values(url: str) -> dict[str, float]:
    """The gain of each plugin as the board has it (the replay a new phone gets)."""
    values: dict[str, float] = {}
    async with connect(url, open_timeout=10) as ws:
        await ws.send(json.dumps({"id": "sync", "type": "PING"}))
        while (message := json.loads(await ws.recv())).get("reply_to") != "sync":
            if message["type"] == "PLUGIN_ADD":
                values[message["data"]["plugin_id"]] = float(message["data"]["parameters"]["gain"])
    return values


async def _add_gains(url: str, count: int) -> list[str]:
    ids = []
    async with connect(url, open_timeout=10) as ws:
        for n in range(count):
            request = {"id": f"add_{n}", "type": "PLUGIN_ADD", "data": {"track_id": TRACK, "name": "gain"}}
            await ws.send(json.dumps(request))
            while (message := json.loads(await ws.recv())).get("reply_to") != f"add_{n}":
                pass
            if message["type"] != "PLUGIN_ADD":
                raise RuntimeError(f"the box refused a gain plugin: {message}")
            ids.append(str(message["data"]["plugin_id"]))
    return ids


async def _sweep(client: ProbeClient, number: int, plugin_id: str, until: float, phase: Phase) -> None:
    """Sweep one gain from −20 to 0 dB and back at 30 Hz, each change waited for."""
    loop = asyncio.get_running_loop()
    step = 0
    tick = loop.time()
    while loop.time() < until:
        value = -20.0 + abs((step % 40) - 20)
        marker = f"sw{number}_{step}"
        data = {"track_id": TRACK, "plugin_id": plugin_id, "parameter_id": "gain", "parameter_value": value}
        request = {"id": marker, "type": "PLUGIN_PARAMETER", "data": data}
        echo = client.expect(f'"{marker}"'.encode())
        sent = time.perf_counter_ns()
        client.send_texts([json.dumps(request, separators=(",", ":")).encode()])
        phase.sent += 1
        try:
            arrived = await asyncio.wait_for(echo, ECHO_TIMEOUT)
            phase.echo_ms.append((arrived - sent) / 1e6)
        except (TimeoutError, ProbeError):
            phase.lost += 1
        step += 1
        tick += 1.0 / SWEEP_HZ
        await asyncio.sleep(max(0.0, tick - loop.time()))


async def _quiet(box: BoxProcess, pid: int, seconds: float) -> Phase:
    phase = Phase("quiet")
    before = await asyncio.to_thread(_health, box.base)
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(pid, phase.rss_mib, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await sampler
    after = await asyncio.to_thread(_health, box.base)
    phase.xruns = int(after["xruns"]) - int(before["xruns"])
    phase.lag = after["loop_lag_ms"]
    return phase


async def _crowd(
    box: BoxProcess, pid: int, seconds: float, clients: int, sweepers: int, ids: list[str]
) -> Phase:
    phase = Phase("crowd")
    opened: list[ProbeClient] = []
    try:
        for n in range(clients):
            kind = ProbeClient if n < sweepers else Listener
            opened.append(await kind.open(HOST, box.port))
        phase.listeners = clients - sweepers
        before = await asyncio.to_thread(_health, box.base)
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample_rss(pid, phase.rss_mib, stop))
        until = asyncio.get_running_loop().time() + seconds
        await asyncio.gather(
            *(_sweep(opened[n], n, ids[n % len(ids)], until, phase) for n in range(sweepers))
        )
        after = await asyncio.to_thread(_health, box.base)
        await asyncio.sleep(SETTLE)
        stop.set()
        await sampler
        phase.xruns = int(after["xruns"]) - int(before["xruns"])
        phase.lag = after["loop_lag_ms"]
        board = await _board_values(box.ws_url)
        for client in opened[sweepers:]:
            assert isinstance(client, Listener)
            if client.is_closed:
                phase.dropped += 1
            elif client.latest != board:
                phase.stale += 1
    finally:
        for client in opened:
            await client.close()
    return phase


def _report(phase: Phase) -> None:
    rss = phase.rss_mib
    print(f"{phase.name}:")
    print(f"  box RSS        start {rss[0]:.1f} MiB, max {max(rss):.1f} MiB, end {rss[-1]:.1f} MiB")
    lag = phase.lag
    print(f"  loop lag       p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms, max {lag['max']:.2f} ms")
    print(f"  xruns          {phase.xruns}")
    if phase.name == "crowd":
        print(f"  echo           {spread(phase.echo_ms, digits=2)}")
        verdict = "PASS" if not phase.lost else "FAIL"
        print(f"  changes sent   {phase.sent}, echoes lost {phase.lost}  target 0  {verdict}")
        ok = not phase.stale and not phase.dropped
        print(
            f"  listeners      {phase.listeners}: {phase.stale} not up to date, {phase.dropped} dropped"
            f"  target 0  {'PASS' if ok else 'FAIL'}"
        )


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_crowd", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--sweepers", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-crowd-") as folder:
        config = virtual_config(Path(folder), engine="jalv", demo=[])
        box = BoxProcess(config)
        await asyncio.to_thread(box.start)
        try:
            assert box.proc is not None
            pid = box.proc.pid
            ids = await _add_gains(box.ws_url, 2)
            print(
                f"virtual box (jalv, realtime dummy JACK 48 kHz/128), gain plugins {', '.join(ids)}; "
                f"{args.seconds:.0f} s per phase; {args.clients} clients, {args.sweepers} sweeping at "
                f"{SWEEP_HZ:.0f} Hz"
            )
            quiet = await _quiet(box, pid, args.seconds)
            crowd = await _crowd(box, pid, args.seconds, args.clients, args.sweepers, ids)
        finally:
            await asyncio.to_thread(box.stop)
    _report(quiet)
    _report(crowd)
    growth = crowd.rss_mib[-1] - quiet.rss_mib[0]
    print(f"RSS growth over both phases: {growth:+.1f} MiB; xruns crowd/quiet: {crowd.xruns}/{quiet.xruns}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
