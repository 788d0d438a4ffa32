"""Control-plane benchmark: the box's WebSocket server beside a bare websockets server.

Run ``python -m hil.bench_control [--engine fake|jalv|carla] [--seconds N]``. Each
server under test runs alone in a subprocess of this module (``--serve box``
or ``--serve bare``); the clients run in this process, pinned to another CPU
when there is one, so client work does not inflate the server's figures. Both
servers are driven by the same clients (:class:`hil.wsprobe.ProbeClient`) in
the same run, and the figures are printed beside each other with their ratio.

Measured, for each server:

1. Round trip of a ``PLUGIN_PARAMETER`` (the gain plugin's ``gain``, values
   varying) from send to its echo arriving back at the sender: p50 and p99
   with 1 connected client, then with 20 (the other 19 receive every echo).
   One request outstanding at a time.
2. Changes per second with 20 clients: paced at ``--rate`` (5,000/s) in
   10 ms slices for ``--seconds``, then unpaced (pipelined, a bounded number
   not yet echoed to the sender) for half as long. The sender counts every
   echo (lost = sent − echoed); the other 19 count the frames they get (the
   box sends them at most 30 changes a second, each control's latest value;
   the bare server relays every one) and must end on the last value sent.

A measurement, not a test: it prints PASS/FAIL against the targets and exits 0
whatever the figures. Traffic goes to 127.0.0.1 only; every phase is bounded in
count and time and the whole run has a hard deadline. A server subprocess
exits when its stdin closes (this process ended) or after ``--lifetime``.

Everything in the client process runs on its asyncio loop's thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.version import version as WEBSOCKETS_VERSION

from hil.figures import percentile
from hil.wsprobe import ProbeClient, ProbeError

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TRACK = "track_001"

#: Rate limit given to the box for the run (the shipped default, 2000/s with
#: bursts of 4000 per connection, would refuse a 5,000/s sender).
BENCH_RATE = 1_000_000.0
BENCH_BURST = 1_000_000
#: Same as the box's ServerConfig.max_message_bytes default.
MAX_MESSAGE_BYTES = 65536

#: Clients in the many-clients measurements (the sender included).
CLIENTS = 20
#: Target of the sustained-rate measurement, changes per second.
TARGET_RATE = 5000.0
#: Pacing slice of the sustained-rate measurement.
SLICE = 0.010
#: The paced run passes when it delivers at least this share of the target.
RATE_TOLERANCE = 0.99
#: Round-trip target: box p99 within this factor of the bare server's.
P99_FACTOR = 2.0
#: Unpaced run: most changes sent but not yet received by the slowest client.
WINDOW = 512
#: Unpaced run: changes written per burst.
BURST = 64

#: How long one echo may take before the latency phase is abandoned.
ECHO_TIMEOUT = 5.0
#: Draining: give up when nothing arrives for this long...
DRAIN_QUIET = 3.0
#: ...or after this long in all.
DRAIN_LIMIT = 30.0
#: Pause after connecting, for the box's welcome replay to arrive.
SETTLE = 0.2
#: How long a server subprocess may take to say it is ready (jalv starts JACK).
READY_TIMEOUT = 60.0
#: How long a server subprocess may take to exit after its stdin closes.
EXIT_TIMEOUT = 10.0

log = logging.getLogger("hil.bench_control")


# ======================================================================================
# The servers under test (run with --serve, each in its own process)
# ======================================================================================


class NotReady(Exception):
    """The box cannot be built this way here (for example, the jalv engine is unfinished)."""


def _pin(cpus: str | None) -> str:
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    chosen = {int(c) for c in cpus.split(",")}
    os.sched_setaffinity(0, chosen)
    return "CPU " + ",".join(str(c) for c in sorted(chosen))


async def _stdin_closed() -> None:
    """Returns when the parent closes our stdin (or dies)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


def _announce(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _serve_bare() -> tuple[Any, dict[str, Any]]:
    connections: set[ServerConnection] = set()

    async def relay(connection: ServerConnection) -> None:
        connections.add(connection)
        try:
            async for message in connection:
                broadcast(connections, message)
        except ConnectionClosed:
            pass
        finally:
            connections.discard(connection)

    server = await serve(relay, HOST, 0, compression=None, max_size=MAX_MESSAGE_BYTES)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    port = int(server.sockets[0].getsockname()[1])
    return stop, {
        "port": port,
        "path": "/ws",
        "track_id": TRACK,
        "plugin_id": "plugin_1",
        "description": (
            f"bare: websockets {WEBSOCKETS_VERSION} serve(compression=None, "
            f"max_size={MAX_MESSAGE_BYTES}); its handler broadcast()s every message it "
            "receives to every connection, the sender's included"
        ),
    }


def _real_engine(kind: str, tracks: Sequence[Any]) -> tuple[Any, str]:
    """A real engine on a private JACK dummy server (48 kHz, 128 frames, realtime if allowed).

    Raises:
        NotReady: the engine cannot run here (Carla not installed, say).
    """
    from appliance.config import CarlaConfig, DummyServer, JackConfig
    from appliance.engine.jack.server import DummySettings

    if kind == "jalv":
        from appliance.engine.jalv.engine import JalvEngine

        return JalvEngine(tracks, dummy_server=DummySettings(48000, 128, realtime=True)), (
            "JalvEngine on a private dummy JACK server (48000 Hz, 128 frames, realtime if allowed)"
        )
    from appliance.engine import carla

    if (why := carla.unavailable(None)) is not None:
        raise NotReady(why)
    from appliance.engine.carla.engine import CarlaEngine

    jack = JackConfig(dummy=DummyServer(48000, 128, realtime=True))
    return CarlaEngine(tracks, CarlaConfig(), jack), (
        "CarlaEngine (its host process, JACK multiple clients) on a private dummy JACK server "
        "(48000 Hz, 128 frames, realtime if allowed)"
    )


async def _serve_box(engine_kind: str) -> tuple[Any, dict[str, Any]]:
    from appliance.config import RateLimit, ServerConfig
    from appliance.control.controller import Controller
    from appliance.core.board import Board
    from appliance.engine import TrackPorts
    from appliance.frontends.net import ControlServer

    catalog: Any
    engine: Any
    if engine_kind == "fake":
        from tests.fakes import FakeCatalog, FakeEngine

        engine = FakeEngine([TrackPorts(TRACK, ("a:in",), ("a:out",))])  # type: ignore[no-untyped-call]
        catalog = FakeCatalog()
        engine_note = "FakeEngine (tests/fakes.py, in memory: measures the control plane alone)"
    else:
        from appliance.plugins.catalog import Catalog

        catalog = await asyncio.to_thread(Catalog.load, ROOT / "config" / "plugins.yaml", False)
        if catalog.lookup("gain") is None:
            raise NotReady("the catalog has no 'gain' plugin (eg-amp not installed, or no liblilv)")
        tracks = [TrackPorts(TRACK, ("system:capture_1",), ("system:playback_1",))]
        engine, engine_note = _real_engine(engine_kind, tracks)
        engine_note += " (jackd and the plugin hosts inherit the server process's CPU)"
    try:
        await engine.start()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await engine.stop()
        raise NotReady(f"{engine_note}: start failed: {exc!r}") from exc
    try:
        controller = Controller(Board([TRACK]), catalog, engine)
        gain = catalog.lookup("gain")
        outcome = await controller.add(TRACK, gain, "Gain")
        plugin_id = str(outcome.broadcast[0][1]["plugin_id"])
        rate_limit = RateLimit(rate=BENCH_RATE, burst=BENCH_BURST)
        # every client of the benchmark comes from one address: let them all in
        config = ServerConfig(host=HOST, port=0, rate_limit=rate_limit, max_per_address=CLIENTS)

        def health() -> tuple[bool, dict[str, Any]]:
            info = engine.info()
            return bool(info.running), dict(info.as_dict())

        net = ControlServer(config, controller, health, token=None)
        await net.start()
    except BaseException:
        await engine.stop()
        raise

    async def stop() -> None:
        await net.stop()
        await engine.stop()

    return stop, {
        "port": net.port,
        "path": "/ws",
        "track_id": TRACK,
        "plugin_id": plugin_id,
        "description": (
            f"box: appliance ControlServer + Controller + Board; engine {engine_note}; "
            f"gain plugin {plugin_id} on {TRACK}; ServerConfig(host={HOST}, port=0, "
            f"rate_limit=RateLimit(rate={BENCH_RATE:.0f}, burst={BENCH_BURST})) — the shipped "
            f"default {RateLimit().rate:.0f}/s, burst {RateLimit().burst}, per connection would "
            f"refuse a {TARGET_RATE:,.0f}/s sender; no board saving (on_change is a no-op); "
            f"send_buffer {config.send_buffer} bytes"
        ),
    }


async def serve_main(kind: str, engine_kind: str, cpus: str | None, lifetime: float) -> int:
    """Run one server under test until stdin closes or ``lifetime`` passes."""
    pinned = _pin(cpus)
    try:
        stop, ready = await (_serve_bare() if kind == "bare" else _serve_box(engine_kind))
    except NotReady as exc:
        _announce({"error": str(exc)})
        return 0
    except Exception as exc:
        log.exception("server under test did not start")
        _announce({"error": f"{kind} server did not start: {exc!r}"})
        return 0
    ready["pid"] = os.getpid()
    ready["pinned"] = pinned
    _announce(ready)
    try:
        await asyncio.wait_for(_stdin_closed(), lifetime)
    except TimeoutError:
        log.warning("lifetime of %.0f s is over; stopping", lifetime)
    finally:
        await stop()
    return 0


# ======================================================================================
# The client side: one server subprocess at a time, clients in this process
# ======================================================================================


@dataclass(frozen=True)
class Ready:
    """What a server subprocess reports once it listens."""

    port: int
    path: str
    track_id: str
    plugin_id: str
    description: str
    pinned: str


class ServerProcess:
    """One server under test in its own Python process (this module with --serve)."""

    def __init__(self, kind: str, engine_kind: str, cpus: str | None, lifetime: float) -> None:
        self.kind = kind
        self.argv = [
            sys.executable, "-m", "hil.bench_control", "--serve", kind,
            "--engine", engine_kind, "--lifetime", str(int(lifetime)),
        ]  # fmt: skip
        if cpus:
            self.argv += ["--cpus", cpus]
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Ready:
        """Start it and wait for its ready line.

        Raises:
            NotReady: the server said it cannot be built here.
        """
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), READY_TIMEOUT)
        if not line:
            raise NotReady(f"{self.kind} server exited before it was ready")
        message = json.loads(line)
        if "error" in message:
            raise NotReady(str(message["error"]))
        return Ready(
            int(message["port"]),
            str(message["path"]),
            str(message["track_id"]),
            str(message["plugin_id"]),
            str(message["description"]),
            str(message["pinned"]),
        )

    async def stop(self) -> None:
        """Close its stdin, wait for it to exit, kill it if it does not."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), EXIT_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux), else None."""
        if self.process is None:
            return None
        return await asyncio.to_thread(_cpu_seconds, self.process.pid)


def _cpu_seconds(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Latency:
    p50_us: float
    p99_us: float
    samples: int


@dataclass(frozen=True)
class Throughput:
    sent: int
    rate: float
    lost: int
    wrong_last: int
    observer_rate: float
    refused: int
    cpu_percent: float | None
    cpu_us_per_change: float | None
    client_cpu_percent: float


@dataclass
class Figures:
    ready: Ready
    rtt_one: Latency | None = None
    rtt_many: Latency | None = None
    paced: Throughput | None = None
    unpaced: Throughput | None = None
    problems: list[str] = field(default_factory=list)


class ParameterRequests:
    """PLUGIN_PARAMETER requests for the gain plugin with varying values and unique ids."""

    def __init__(self, track_id: str, plugin_id: str) -> None:
        self.track_id = track_id
        self.plugin_id = plugin_id
        self.numbers = itertools.count(1)
        self.last_value = math.nan

    def next(self) -> tuple[bytes, bytes]:
        """One request and the quoted id its echo carries (``reply_to`` or ``id``)."""
        number = next(self.numbers)
        value = round(-60.0 + (number % 6000) / 100.0, 2)  # inside gain's -90..24 dB: never clamped
        self.last_value = value
        request = {
            "id": f"r{number}",
            "type": "PLUGIN_PARAMETER",
            "data": {
                "track_id": self.track_id,
                "plugin_id": self.plugin_id,
                "parameter_id": "gain",
                "parameter_value": value,
            },
            "user_id": "bench",
            "session_id": "bench",
        }
        return json.dumps(request, separators=(",", ":")).encode(), f'"r{number}"'.encode()

    def batch(self, count: int) -> list[bytes]:
        return [self.next()[0] for _ in range(count)]


async def round_trips(sender: ProbeClient, requests: ParameterRequests, count: int, warmup: int) -> Latency:
    """Send one request at a time; time each from the write to its echo's arrival at the sender.

    Raises:
        ProbeError: the server refused a request or the connection ended.
        TimeoutError: an echo took longer than :data:`ECHO_TIMEOUT`.
    """
    samples: list[int] = []
    for index in range(warmup + count):
        request, marker = requests.next()
        echo = sender.expect(marker)
        start = time.perf_counter_ns()
        sender.send_texts((request,))
        arrival = await asyncio.wait_for(echo, ECHO_TIMEOUT)
        if index >= warmup:
            samples.append(arrival - start)
    samples.sort()
    return Latency(percentile(samples, 0.50) / 1000, percentile(samples, 0.99) / 1000, len(samples))


def _last_value(client: ProbeClient) -> object:
    try:
        return json.loads(client.last_parameter)["data"]["parameter_value"]
    except (ValueError, KeyError, TypeError):
        return None


async def drain(
    clients: Sequence[ProbeClient], expected: int, progress: asyncio.Event, last: object = None
) -> None:
    """Wait until the sender (the first client) has ``expected`` echoes and every other client
    the last value sent (the box coalesces what others are sent), or nothing arrives for a while."""
    deadline = time.monotonic() + DRAIN_LIMIT

    def done() -> bool:
        others = clients[1:]
        return clients[0].parameters >= expected and all(_last_value(c) == last for c in others)

    while not done() and time.monotonic() < deadline:
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), DRAIN_QUIET)
        except TimeoutError:
            return


def _tally(
    clients: Sequence[ProbeClient],
    sender: ProbeClient,
    requests: ParameterRequests,
    sent: int,
    start_ns: int,
    cpu: float | None,
    client_cpu: float,
) -> Throughput:
    last_ns = max(c.last_arrival_ns for c in clients)
    elapsed = max(1e-9, (last_ns - start_ns) / 1e9)
    others = [c.parameters for c in clients if c is not sender]
    return Throughput(
        sent=sent,
        rate=sender.parameters / elapsed,
        lost=max(0, sent - sender.parameters),
        wrong_last=sum(_last_value(c) != requests.last_value for c in clients),
        observer_rate=sum(others) / max(1, len(others)) / elapsed,
        refused=sender.errors,
        cpu_percent=None if cpu is None else 100.0 * cpu / elapsed,
        cpu_us_per_change=None if cpu is None or not sent else 1e6 * cpu / sent,
        client_cpu_percent=100.0 * client_cpu / elapsed,
    )


async def paced_run(
    server: ServerProcess,
    sender: ProbeClient,
    clients: Sequence[ProbeClient],
    requests: ParameterRequests,
    progress: asyncio.Event,
    rate: float,
    seconds: float,
) -> Throughput:
    """Send ``rate`` changes/s in :data:`SLICE` slices for ``seconds``; count what every client got."""
    loop = asyncio.get_running_loop()
    for client in clients:
        client.reset()
    total = round(rate * seconds)
    per_slice = rate * SLICE
    cpu_before = await server.cpu_seconds()
    client_before = time.process_time()
    start = loop.time()
    start_ns = time.perf_counter_ns()
    sent = 0
    while sent < total:
        slot = math.floor((loop.time() - start) / SLICE) + 1
        due = min(total, round(slot * per_slice))
        if due > sent:
            sender.send_texts(requests.batch(due - sent))
            sent = due
        await asyncio.sleep(max(0.0, start + slot * SLICE - loop.time()))
    await drain(clients, sent, progress, requests.last_value)
    client_cpu = time.process_time() - client_before
    cpu_after = await server.cpu_seconds()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return _tally(clients, sender, requests, sent, start_ns, cpu, client_cpu)


async def unpaced_run(
    server: ServerProcess,
    sender: ProbeClient,
    clients: Sequence[ProbeClient],
    requests: ParameterRequests,
    progress: asyncio.Event,
    seconds: float,
) -> Throughput:
    """Pipeline as fast as the slowest client receives (at most :data:`WINDOW` ahead) for ``seconds``."""
    for client in clients:
        client.reset()
    cpu_before = await server.cpu_seconds()
    client_before = time.process_time()
    start_ns = time.perf_counter_ns()
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        room = WINDOW - (sent - sender.parameters)
        if room >= BURST:
            sender.send_texts(requests.batch(BURST))
            sent += BURST
            await asyncio.sleep(0)
            continue
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), DRAIN_QUIET)
        except TimeoutError:
            break  # stalled: the tally shows what was lost
    await drain(clients, sent, progress, requests.last_value)
    client_cpu = time.process_time() - client_before
    cpu_after = await server.cpu_seconds()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return _tally(clients, sender, requests, sent, start_ns, cpu, client_cpu)


async def measure(server: ServerProcess, ready: Ready, args: argparse.Namespace) -> Figures:
    """Every measurement against one running server."""
    figures = Figures(ready)
    progress = asyncio.Event()
    requests = ParameterRequests(ready.track_id, ready.plugin_id)
    clients: list[ProbeClient] = []
    try:
        sender = await ProbeClient.open(HOST, ready.port, ready.path, progress.set)
        clients.append(sender)
        await asyncio.sleep(SETTLE)
        figures.rtt_one = await round_trips(sender, requests, args.samples, args.warmup)
        for _ in range(CLIENTS - 1):
            clients.append(await ProbeClient.open(HOST, ready.port, ready.path, progress.set))
        await asyncio.sleep(SETTLE)
        for client in clients:
            client.reset()
        figures.rtt_many = await round_trips(sender, requests, args.samples, args.warmup)
        await drain(clients, args.samples + args.warmup, progress, requests.last_value)
        behind = args.samples + args.warmup - sender.parameters
        if behind:
            figures.problems.append(f"{behind} echoes lost during the 20-client round trips")
        figures.paced = await paced_run(server, sender, clients, requests, progress, args.rate, args.seconds)
        figures.unpaced = await unpaced_run(
            server, sender, clients, requests, progress, max(1.0, args.seconds / 2)
        )
    except (ProbeError, TimeoutError, OSError) as exc:
        figures.problems.append(f"stopped early: {exc!r}")
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return figures


# ======================================================================================
# The report
# ======================================================================================


def _number(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(box: float | None, bare: float | None) -> str:
    if box is None or bare is None:
        return "n/a"
    if bare == 0:
        return "-" if box == 0 else "inf"
    return f"{box / bare:.2f}"


def _rows(box: Figures, bare: Figures) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, a: float | None, b: float | None, digits: int = 0) -> None:
        rows.append((label, _number(a, digits), _number(b, digits), _ratio(a, b)))

    latencies = (
        (" 1 client", box.rtt_one, bare.rtt_one),
        (f"{CLIENTS} clients", box.rtt_many, bare.rtt_many),
    )
    for label, x, y in latencies:
        add(f"round trip p50, {label} (µs)", x.p50_us if x else None, y.p50_us if y else None)
        add(f"round trip p99, {label} (µs)", x.p99_us if x else None, y.p99_us if y else None)
    runs = ((f"paced {TARGET_RATE:,.0f}/s", box.paced, bare.paced), ("unpaced", box.unpaced, bare.unpaced))
    for label, p, q in runs:
        add(f"{label}: changes/s echoed to the sender", p.rate if p else None, q.rate if q else None)
        add(f"{label}: changes sent", p.sent if p else None, q.sent if q else None)
        add(f"{label}: echoes lost", p.lost if p else None, q.lost if q else None)
        add(
            f"{label}: frames/s to each other client",
            p.observer_rate if p else None,
            q.observer_rate if q else None,
        )
        add(
            f"{label}: clients with wrong last value",
            p.wrong_last if p else None,
            q.wrong_last if q else None,
        )
        add(
            f"{label}: server CPU (% of one core)", p.cpu_percent if p else None, q.cpu_percent if q else None
        )
        add(
            f"{label}: server CPU per change (µs)",
            p.cpu_us_per_change if p else None,
            q.cpu_us_per_change if q else None,
            1,
        )
        add(
            f"{label}: client process CPU (% of one core)",
            p.client_cpu_percent if p else None,
            q.client_cpu_percent if q else None,
        )
    return rows


def table(heading: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under a heading: the first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [heading, *rows]) for i in range(len(heading))]
    lines = []
    for index, row in enumerate([heading, *rows]):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(widths[i]) for i, cell in enumerate(row) if i]
        lines.append(" | ".join(cells))
        if index == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _verdicts(box: Figures, bare: Figures, rate: float) -> list[str]:
    lines = []
    for label, attr in (("1 client", "rtt_one"), (f"{CLIENTS} clients", "rtt_many")):
        x: Latency | None = getattr(box, attr)
        y: Latency | None = getattr(bare, attr)
        if x is None or y is None:
            lines.append(f"  FAIL  p99 round trip, {label}: not measured")
            continue
        limit = P99_FACTOR * y.p99_us
        verdict = "PASS" if x.p99_us <= limit else "FAIL"
        lines.append(
            f"  {verdict}  p99 round trip, {label}, within {P99_FACTOR:g}x bare: "
            f"box {x.p99_us:,.0f} µs vs limit {limit:,.0f} µs ({x.p99_us / y.p99_us:.2f}x)"
        )
    paced, base = box.paced, bare.paced
    if paced is None:
        lines.append(f"  FAIL  {rate:,.0f} changes/s sustained, {CLIENTS} clients, none lost: not measured")
    else:
        ok = (
            paced.rate >= RATE_TOLERANCE * rate
            and paced.lost == 0
            and paced.wrong_last == 0
            and paced.refused == 0
        )
        bare_note = "" if base is None else f"; bare {base.rate:,.0f}/s, {base.lost} lost"
        lines.append(
            f"  {'PASS' if ok else 'FAIL'}  {rate:,.0f} changes/s sustained to {CLIENTS} clients, none lost "
            f"(>= {RATE_TOLERANCE:.0%} of target): box {paced.rate:,.0f}/s, {paced.lost} lost, "
            f"{paced.wrong_last} wrong last values, {paced.refused} refused{bare_note}"
        )
    return lines


def _header(args: argparse.Namespace, client_cpus: str, box: Ready, bare: Ready) -> str:
    return "\n".join(
        [
            "hil.bench_control — the box's control plane beside a bare websockets server (same run)",
            f"  host: Python {platform.python_version()}, websockets {WEBSOCKETS_VERSION}, "
            f"{os.cpu_count()} CPUs, default asyncio loop; all traffic on {HOST}",
            f"  processes: each server runs alone in a subprocess ({box.pinned}); the clients run in "
            f"this process ({client_cpus}), so client work does not inflate the server's figures",
            "  clients: hil.wsprobe.ProbeClient (RFC 6455 framing by hand, no per-message task or "
            "queue), the same for both servers",
            f"  {box.description}",
            f"  {bare.description}",
            f"  round trip: {args.samples} samples after {args.warmup} warm-up, one request outstanding; "
            "send -> echo arriving at the sender (stamped in data_received)",
            f"  rate: paced {args.rate:,.0f}/s in {SLICE * 1000:.0f} ms slices for {args.seconds:g} s; "
            f"unpaced = pipelined, <= {WINDOW} not yet echoed, for "
            f"{max(1.0, args.seconds / 2):g} s; one sender and {CLIENTS - 1} other clients; "
            "changes/s = echoes to the sender / (last arrival - first send); the others count "
            "the frames they get (the box: each control's latest, <= 30/s) and their last value",
        ]
    )


# ======================================================================================
# Entry point
# ======================================================================================


def _cpu_split() -> tuple[str | None, str | None]:
    """(client CPUs, server CPUs): the first available CPU for the clients, the rest for the server."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return str(available[0]), ",".join(str(c) for c in available[1:])


async def bench_main(args: argparse.Namespace) -> int:
    client_cpus, server_cpus = _cpu_split()
    client_pinned = _pin(client_cpus)
    lifetime = args.budget + 60
    results: dict[str, Figures] = {}
    for kind in ("bare", "box"):
        server = ServerProcess(kind, args.engine, server_cpus, lifetime)
        try:
            ready = await server.start()
            print(f"measuring {kind} ...", file=sys.stderr, flush=True)
            results[kind] = await measure(server, ready, args)
        except NotReady as exc:
            print(f"\n{kind} server with --engine {args.engine}: NOT AVAILABLE — {exc}")
            print("no figures; the benchmark measures nothing without both servers (exit 0).")
            return 0
        finally:
            await server.stop()
    box, bare = results["box"], results["bare"]
    print(_header(args, client_pinned, box.ready, bare.ready))
    print()
    print(table(("metric", "box", "bare", "ratio (box/bare)"), _rows(box, bare)))
    print()
    print("targets")
    print("\n".join(_verdicts(box, bare, args.rate)))
    for name, figures in (("box", box), ("bare", bare)):
        for problem in figures.problems:
            print(f"  note ({name}): {problem}")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_control", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--engine", choices=("fake", "jalv", "carla"), default="fake", help="the box's engine"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="paced run length (unpaced: half)")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="paced run target, changes/s")
    parser.add_argument("--samples", type=int, default=3000, help="round trips per latency figure")
    parser.add_argument("--warmup", type=int, default=200, help="round trips discarded first")
    parser.add_argument("--serve", choices=("box", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--cpus", help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 120 or not 0 < args.rate <= 100_000 or not 0 < args.samples <= 100_000:
        parser.error("--seconds must be in (0, 120], --rate in (0, 100000], --samples in (0, 100000]")
    args.budget = 180 + 6 * args.seconds + 0.02 * (args.samples + args.warmup)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    if args.serve:
        return asyncio.run(serve_main(args.serve, args.engine, args.cpus, args.lifetime))

    async def bounded() -> int:
        try:
            return await asyncio.wait_for(bench_main(args), args.budget)
        except TimeoutError:
            print(f"benchmark did not finish within {args.budget:.0f} s; stopped")
            return 0

    return asyncio.run(bounded())


if __name__ == "__main__":
    sys.exit(main())
