"""Engine benchmark: the same board under JalvEngine and CarlaEngine, side by side.

Run ``python -m hil.bench_engines [--seconds 60] [--engines jalv,carla] [--bridges]``.
Each engine configuration (``jalv``, ``carla``, and with ``--bridges``
``carla+bridges``: Carla with ``engine.carla.bridges: true``, every plugin in
its own ``carla-bridge-native`` process) is measured the same way, one after
the other, on a private realtime JACK dummy server (48 kHz, 128 frames; the
box's :class:`appliance.engine.jack.server.JackServer` tries ``-R -P 70`` first
and the report says when it fell back).

The board is the box's demo-like chain on ``track_001``: gate, overdrive,
compressor, eq, delay, reverb (catalog keys in ``config/plugins.yaml``), then a
gain. For each configuration:

1. **Engine level** (``python -m hil.bench_engines --engine-level CONFIG``, a
   subprocess of this module): the engine that :func:`appliance.app.make_engine`
   builds from the same config. Times ``start()``, ``add_plugin`` per plugin
   type (p50 over ``--adds`` add/remove rounds), the 7 ``add_plugin`` calls of
   a saved board (as :meth:`appliance.app.Box._load_engine` makes them) and
   ``stop()``.
2. **Box, plugin adds**: ``python -m appliance run --config <tmp yaml>`` (as
   ``tests/boxproc.py`` runs it) with an empty board; one WebSocket client times
   ``PLUGIN_ADD`` → its ``PLUGIN_ADD`` echo per plugin type (then removes it).
3. **Box, board load**: the box restarted with a saved ``board.json`` of the
   7 plugins; time from process start until ``/healthz`` answers 200 with
   ``running`` and the engine reports the 7 plugins (``/healthz`` is served
   only once the board is loaded). The LV2 scan cache is pre-built, as on a
   box that has booted before, so phase 2's empty-board start is the baseline.
4. **Box, slider sweep** (same box): ``/healthz`` sampled every 0.5 s for
   ``--idle`` seconds with no client, then ``--seconds`` with 20 clients each
   dragging a different control at 60 Hz (``PLUGIN_PARAMETER``, about 1,200
   changes/s in all, each broadcast to all 20): DSP load (mean, max), xruns,
   changes delivered, echo latency, and the CPU of the box process, of its
   plugin processes (jalv, the Carla host process, Carla bridges) and of jackd
   (from ``/proc``).

A measurement, not a test: it prints the table and exits 0 whatever the
figures. Traffic goes to 127.0.0.1 only; every phase is bounded in time and
the whole run has a hard deadline. Every process it starts runs in a session
of its own; on the way out the box gets SIGTERM, then SIGKILL, and anything
left in its session (jackd, jalv, bridges) is killed by pid.

Everything in this process runs on its asyncio loop's thread (blocking
``/proc`` reads and file copies go through ``asyncio.to_thread``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hil.bench_control import drain, table
from hil.figures import percentile
from hil.wsprobe import ProbeClient, ProbeError

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TRACK = "track_001"
#: Marks the engine-level subprocess's result line among whatever else reaches its stdout.
RESULT_MARK = "BENCH-RESULT "

#: The board, in chain order (catalog keys), and the values given to some of it.
BOARD = ("gate", "overdrive", "compressor", "eq", "delay", "reverb", "gain")
BOARD_VALUES: dict[str, dict[str, float]] = {"reverb": {"wet_dry": 0.3, "room_size": 0.5}}
#: The JACK dummy server every engine runs on.
SAMPLE_RATE = 48000
PERIOD = 128

#: Clients in the sweep, and how often each one moves its slider.
CLIENTS = 20
SLIDER_RATE = 60.0
#: A slider goes from one end of its range to the other and back in this long.
SWEEP_PERIOD = 2.0
#: How often /healthz is sampled for DSP load and xruns.
SAMPLE_INTERVAL = 0.5

#: How long the box may take to answer /healthz after it was started.
BOX_START_TIMEOUT = 90.0
#: Pause between two /healthz polls while the box starts (the start time's resolution).
START_POLL = 0.02
#: How long the box may take to exit after SIGTERM (it stops every plugin and jackd).
BOX_STOP_TIMEOUT = 30.0
#: How long one /healthz request may take.
HTTP_TIMEOUT = 5.0
#: How long a PLUGIN_ADD or PLUGIN_REMOVE may take to come back (the engine's is 10 s).
STRUCTURE_TIMEOUT = 30.0
#: Pause after connecting, for the box's welcome replay to arrive.
SETTLE = 0.5
#: How long the engine-level subprocess may run, per add round, on top of a fixed part.
ENGINE_LEVEL_FIXED = 120.0
ENGINE_LEVEL_PER_ROUND = 40.0
#: After SIGKILL, how long a process may take to disappear from /proc.
REAP_TIMEOUT = 5.0

#: Linux scheduling policies (``/proc/PID/task/TID/stat`` field 41).
SCHED_FIFO, SCHED_RR = 1, 2

# ======================================================================================
# Engine configurations and the config file the box reads
# ======================================================================================


@dataclass(frozen=True)
class Variant:
    """One column of the report: an engine kind, with or without Carla's bridges."""

    label: str
    kind: str
    bridges: bool = False


VARIANTS = {
    "jalv": Variant("jalv", "jalv"),
    "carla": Variant("carla", "carla"),
    "carla+bridges": Variant("carla+bridges", "carla", bridges=True),
}


def write_config(folder: Path, variant: Variant, port: int) -> Path:
    """The box's config for one run: config/virtual.yaml with the bench's changes.

    A private realtime dummy JACK server (48 kHz, 128 frames), the engine
    kind, Carla's bridges, ``demo: []``, ``data_dir`` under ``folder``.
    """
    data = yaml.safe_load((ROOT / "config" / "virtual.yaml").read_text(encoding="utf-8"))
    data["server"].update({"host": HOST, "port": port, "auth": "none"})
    data["catalog"] = str(ROOT / "config" / "plugins.yaml")
    data["data_dir"] = str(folder / "data")
    data["engine"] = {
        "kind": variant.kind,
        "jack": {
            "server": server_prefix() + secrets.token_hex(3),
            "dummy": {"rate": SAMPLE_RATE, "period": PERIOD, "realtime": True},
        },
        "carla": {"bridges": variant.bridges},
    }
    data["demo"] = []
    path = folder / "box.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def board_document(catalog: Any) -> dict[str, Any]:
    """``board.json`` for :data:`BOARD` (ids plugin_1..plugin_7), as BoardStore writes it."""
    from appliance.core.board import Board, conform_values

    board = Board([TRACK])
    for key in BOARD:
        plugin_type = catalog.lookup(key)
        if plugin_type is None:
            raise RuntimeError(f"catalog entry {key!r} is not installed")
        instance = board.new_instance(plugin_type, plugin_type.name)
        instance.values.update(conform_values(plugin_type, BOARD_VALUES.get(key, {}))[0])
        board.insert(TRACK, instance)
    return board.to_dict()


@dataclass(frozen=True)
class Slider:
    """One control a sweep client drags back and forth."""

    plugin_id: str
    plugin: str
    parameter_id: str
    minimum: float
    maximum: float

    def value(self, t: float, phase: float) -> float:
        """The slider's position at time ``t`` (a triangle wave over the range)."""
        where = (t / SWEEP_PERIOD + phase) % 1.0
        share = 1.0 - abs(2.0 * where - 1.0)
        return float(f"{self.minimum + share * (self.maximum - self.minimum):.6g}")


def sliders(catalog: Any, board: dict[str, Any], count: int) -> list[Slider]:
    """``count`` distinct continuous controls, taken round-robin over the board's plugins."""
    per_plugin: list[list[Slider]] = []
    for saved in board["tracks"][0]["chain"]:
        plugin_type = catalog.lookup(saved["plugin"])
        per_plugin.append(
            [
                Slider(saved["id"], saved["plugin"], p.id, p.minimum, p.maximum)
                for p in plugin_type.parameters
                if p.control.kind == "float" and p.maximum > p.minimum
            ]
        )
    chosen: list[Slider] = []
    while len(chosen) < count and any(per_plugin):
        for controls in per_plugin:
            if controls and len(chosen) < count:
                chosen.append(controls.pop(0))
    return chosen


# ======================================================================================
# Processes: /proc readings and the box subprocess
# ======================================================================================


def _stat_fields(path: Path) -> list[str] | None:
    """The fields of a ``stat`` file after the command name (field 3 first), or None."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


@dataclass(frozen=True)
class Proc:
    """One process as /proc showed it.

    Attributes:
        comm: its command name.
        started: its start time (clock ticks after boot), which tells a reused pid apart.
        cpu: user + system CPU seconds so far.
    """

    comm: str
    started: int
    cpu: float


def family(root: int) -> dict[int, Proc]:
    """``root`` and every process below it, plus anything left in its session (blocking: /proc).

    Both, because jackd puts itself in a session of its own (so the session
    alone misses it) and an orphan leaves the tree (so the tree alone misses it).
    """
    tick = os.sysconf("SC_CLK_TCK")
    table: dict[int, tuple[int, int, Proc]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry / "stat")
        if fields is None or fields[0] in ("Z", "X"):
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        proc = Proc(comm, int(fields[19]), (int(fields[11]) + int(fields[12])) / tick)
        table[int(entry.name)] = (int(fields[1]), int(fields[3]), proc)
    chosen = {pid for pid, (_, session, _) in table.items() if session == root or pid == root}
    frontier = list(chosen)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, _) in table.items():
            if ppid == parent and pid not in chosen:
                chosen.add(pid)
                frontier.append(pid)
    return {pid: table[pid][2] for pid in chosen}


def is_alive(pid: int, proc: Proc) -> bool:
    """Whether ``pid`` is still the process :func:`family` saw (blocking: /proc)."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == proc.started


def jackd_of(server_prefix: str) -> dict[int, str]:
    """pid → command line of every jackd serving a server whose name starts with the prefix."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"jackd"):
            continue
        names = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in (b"-n", b"--name")]
        if any(n.decode(errors="replace").startswith(server_prefix) for n in names):
            found[int(entry.name)] = b" ".join(argv).decode(errors="replace").strip()
    return found


def realtime_threads(pid: int) -> tuple[int, int]:
    """(threads with SCHED_FIFO/SCHED_RR, all threads) of a process (blocking: /proc)."""
    realtime = total = 0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = _stat_fields(task / "stat")
            if fields is None:
                continue
            total += 1
            realtime += int(fields[38]) in (SCHED_FIFO, SCHED_RR)
    return realtime, total


#: The Carla host process's command line says this (its comm is just "python").
CARLA_HOST_MODULE = b"appliance.engine.carla.host"


def process_class(pid: int, comm: str, box_pid: int) -> str:
    """Which CPU row a process counts in: box, plugins, jackd or other (blocking: /proc)."""
    if pid == box_pid:
        return "box"
    if comm == "jalv" or comm.startswith("carla-bridge"):
        return "plugins"
    with contextlib.suppress(OSError):
        if CARLA_HOST_MODULE in Path(f"/proc/{pid}/cmdline").read_bytes():
            return "plugins"
    if comm.startswith("jackd"):
        return "jackd"
    return "other"


def cpu_split(before: dict[int, Proc], after: dict[int, Proc], box_pid: int) -> dict[str, float]:
    """CPU seconds spent between two :func:`family` snapshots, per :func:`process_class`."""
    spent: dict[str, float] = {"box": 0.0, "plugins": 0.0, "jackd": 0.0, "other": 0.0}
    for pid, proc in after.items():
        earlier = before.get(pid)
        start = earlier.cpu if earlier is not None and earlier.started == proc.started else 0.0
        spent[process_class(pid, proc.comm, box_pid)] += max(0.0, proc.cpu - start)
    return spent


async def stop_family(proc: asyncio.subprocess.Process, grace: float, known: dict[int, Proc]) -> list[str]:
    """Stop a subprocess and every process it started.

    SIGTERM to it, wait up to ``grace`` s, SIGKILL; then SIGKILL, by pid, to
    anything of its family still alive: what :func:`family` finds now (its
    session) and what it found earlier (``known``, e.g. a jackd in a session
    of its own), each checked against its start time first.

    Returns:
        Notes on what had to be killed (empty when it all stopped by itself).
    """
    notes: list[str] = []
    if proc.returncode is None:
        known.update(await asyncio.to_thread(family, proc.pid))
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            notes.append(f"pid {proc.pid} ignored SIGTERM for {grace:.0f} s; killed")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), REAP_TIMEOUT)
    deadline = time.monotonic() + REAP_TIMEOUT
    while True:
        candidates = {**known, **await asyncio.to_thread(family, proc.pid)}
        candidates.pop(proc.pid, None)
        left = {pid: p for pid, p in candidates.items() if await asyncio.to_thread(is_alive, pid, p)}
        if not left:
            return notes
        if time.monotonic() > deadline:
            notes.append(f"still alive after SIGKILL: {sorted(left)}")
            return notes
        for pid, p in left.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                notes.append(f"killed leftover {p.comm} (pid {pid})")
        await asyncio.sleep(0.1)


async def get_health(port: int, timeout: float = HTTP_TIMEOUT) -> tuple[int, dict[str, Any]]:
    """``GET /healthz``: (status, JSON body).

    Raises:
        OSError: no connection (the box is not listening yet).
        TimeoutError: no answer within ``timeout``.
        ValueError: the answer is not HTTP with a JSON body.
    """

    async def fetch() -> tuple[int, dict[str, Any]]:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (HOST.encode(), port))
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status = int(head.split(" ", 2)[1])
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError) as exc:
            raise ValueError(f"bad /healthz answer: {exc!r}") from exc
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not isinstance(body, dict):
            raise ValueError("/healthz did not answer a JSON object")
        return status, body

    return await asyncio.wait_for(fetch(), timeout)


def engine_plugins(report: dict[str, Any]) -> int:
    """Plugins the engine itself runs, from a /healthz report (jalv and Carla name it differently)."""
    if "plugins_running" in report:
        return int(report["plugins_running"])
    return int(report.get("plugins", report.get("board_plugins", 0)))


class BoxProcess:
    """``python -m appliance run --config CONFIG --port PORT`` in a session of its own.

    Its output goes to ``box.log`` beside the config.
    """

    def __init__(self, config: Path, port: int) -> None:
        self.config = config
        self.port = port
        self.log_path = config.parent / "box.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0
        #: Every process of its family seen so far (see :func:`stop_family`).
        self.known: dict[int, Proc] = {}

    async def start(self) -> None:
        """Start the box (does not wait for it)."""
        log_file = await asyncio.to_thread(open, self.log_path, "ab")
        try:
            self.started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "appliance", "run", "--config", str(self.config),
                "--port", str(self.port),
                stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                cwd=ROOT, env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}, start_new_session=True,
            )  # fmt: skip
        finally:
            log_file.close()

    async def wait_ready(self, plugins: int) -> tuple[float, dict[str, Any]]:
        """Poll /healthz until it answers 200, running, with ``plugins`` in the engine.

        Returns:
            (seconds since the process was started, the /healthz report).

        Raises:
            RuntimeError: the box exited or was not ready within :data:`BOX_START_TIMEOUT`.
        """
        assert self.proc is not None
        deadline = self.started + BOX_START_TIMEOUT
        report: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                tail = await asyncio.to_thread(self.log_tail)
                raise RuntimeError(f"the box exited ({self.proc.returncode}): {tail}")
            try:
                status, report = await get_health(self.port)
            except (OSError, TimeoutError, ValueError):
                status = 0
            if status == 200 and report.get("running") and engine_plugins(report) >= plugins:
                return time.monotonic() - self.started, report
            await asyncio.sleep(START_POLL)
        tail = await asyncio.to_thread(self.log_tail)
        raise RuntimeError(f"the box was not ready within {BOX_START_TIMEOUT:.0f} s ({report}): {tail}")

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def realtime(self) -> str:
        """Whether its JACK server got realtime scheduling: the box's log, checked in /proc."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        said = None
        for line in text.splitlines():
            if "jack server" in line and " up (" in line:
                said = "no realtime" not in line
        if said is None:
            return "unknown (no 'jack server ... up' line in the box's log)"
        return "yes (-R -P 70)" if said else "NO: fell back to --no-realtime"

    async def survey(self) -> dict[int, Proc]:
        """The box and its processes now (remembered for :meth:`stop`)."""
        if self.proc is None:
            return {}
        found = await asyncio.to_thread(family, self.proc.pid)
        self.known.update(found)
        return found

    async def jackd_threads(self) -> str:
        """``rt/total`` threads of the box's jackd with a realtime policy, from /proc."""
        return await jackd_threads(await self.survey())

    async def stop(self) -> list[str]:
        """SIGTERM, then SIGKILL, then anything of its family left. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None:
            return []
        return await stop_family(proc, BOX_STOP_TIMEOUT, self.known)


async def jackd_threads(processes: dict[int, Proc]) -> str:
    """``rt/total`` threads with a realtime policy, for each jackd among ``processes``."""
    counts = [
        await asyncio.to_thread(realtime_threads, pid) for pid, p in processes.items() if p.comm == "jackd"
    ]
    return ", ".join(f"{rt}/{total}" for rt, total in counts) or "no jackd"


# ======================================================================================
# The WebSocket client
# ======================================================================================


REPLY_MARK = b'"reply_to":"'


class BenchClient(ProbeClient):
    """A :class:`ProbeClient` that also matches replies by id, for any message type.

    Attributes:
        sent_at: request id → ``perf_counter_ns`` of its send, for requests whose
            echo has not come back yet.
        latencies_ns: send → echo times of this client's own requests.
        replies: request id → future of (arrival ns, payload), for awaited replies.
    """

    def __init__(self, key: bytes, on_progress: Any = None) -> None:
        super().__init__(key, on_progress)
        self.sent_at: dict[bytes, int] = {}
        self.latencies_ns: list[int] = []
        self.replies: dict[bytes, asyncio.Future[tuple[int, bytes]]] = {}

    def _on_text(self, payload: bytes, now: int) -> bool:
        start = payload.find(REPLY_MARK)
        if start >= 0 and (self.sent_at or self.replies):
            start += len(REPLY_MARK)
            request_id = payload[start : payload.find(b'"', start)]
            sent = self.sent_at.pop(request_id, None)
            if sent is not None:
                self.latencies_ns.append(now - sent)
            waiter = self.replies.pop(request_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result((now, payload))
        return super()._on_text(payload, now)

    async def request(
        self, message: dict[str, Any], timeout: float = STRUCTURE_TIMEOUT
    ) -> tuple[float, dict[str, Any]]:
        """Send one request and wait for the reply carrying its id.

        Returns:
            (seconds from the send to the reply's arrival, the reply).

        Raises:
            ProbeError: the reply is an ERROR, or the connection ended.
            TimeoutError: no reply within ``timeout``.
        """
        request_id = str(message["id"]).encode()
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.replies[request_id] = waiter
        start = time.perf_counter_ns()
        self.send_texts((json.dumps(message, separators=(",", ":")).encode(),))
        try:
            arrival, payload = await asyncio.wait_for(waiter, timeout)
        finally:
            self.replies.pop(request_id, None)
        reply: dict[str, Any] = json.loads(payload)
        if reply.get("type") == "ERROR":
            raise ProbeError(f"the box refused {message['type']}: {reply.get('data')}")
        return (arrival - start) / 1e9, reply

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        gone = ProbeError("connection lost")
        for waiter in self.replies.values():
            if not waiter.done():
                waiter.set_exception(gone)


async def open_client(port: int, on_progress: Any = None) -> BenchClient:
    client = await BenchClient.open(HOST, port, "/ws", on_progress)
    assert isinstance(client, BenchClient)
    return client


# ======================================================================================
# Figures
# ======================================================================================


@dataclass
class Sweep:
    """What the slider sweep produced."""

    seconds: float = 0.0
    sent: int = 0
    delivered_rate: float = 0.0
    lost: int = 0
    errors: int = 0
    echo_p50_ms: float | None = None
    echo_p99_ms: float | None = None
    dsp_mean: float | None = None
    dsp_max: float | None = None
    samples: int = 0
    xruns: int | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    client_cpu: float | None = None


@dataclass
class Column:
    """Every figure for one engine configuration."""

    variant: Variant
    engine_level: dict[str, Any] = field(default_factory=dict)
    ws_add_ms: dict[str, float] = field(default_factory=dict)
    start_empty_s: float | None = None
    start_board_s: float | None = None
    realtime: str = "n/a"
    jackd_rt: str = "n/a"
    idle_dsp_mean: float | None = None
    idle_dsp_max: float | None = None
    idle_xruns: int | None = None
    xruns_total: int | None = None
    sweep: Sweep | None = None
    controls: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# ======================================================================================
# Phases against the box
# ======================================================================================


async def add_times(port: int, adds: int) -> dict[str, float]:
    """p50 of ``PLUGIN_ADD`` → echo, in ms, per plugin type; each add is removed again."""
    client = await open_client(port)
    numbers = iter(range(1, 1_000_000))
    times: dict[str, list[float]] = {key: [] for key in BOARD}
    try:
        await asyncio.sleep(SETTLE)
        for _ in range(adds):
            for key in BOARD:
                took, reply = await client.request(
                    {
                        "id": f"a{next(numbers)}",
                        "type": "PLUGIN_ADD",
                        "data": {"track_id": TRACK, "name": key},
                    }
                )
                if reply.get("type") != "PLUGIN_ADD":
                    raise ProbeError(f"PLUGIN_ADD {key} answered {reply.get('type')}")
                times[key].append(took * 1000)
                plugin_id = reply["data"]["plugin_id"]
                await client.request(
                    {
                        "id": f"d{next(numbers)}",
                        "type": "PLUGIN_REMOVE",
                        "data": {"track_id": TRACK, "plugin_id": plugin_id},
                    }
                )
    finally:
        await client.close()
    return {key: float(statistics.median(values)) for key, values in times.items() if values}


async def sample_health(port: int, seconds: float) -> tuple[list[float], list[int]]:
    """/healthz every :data:`SAMPLE_INTERVAL` for ``seconds``: (DSP loads, xrun counts)."""
    loop = asyncio.get_running_loop()
    loads: list[float] = []
    xruns: list[int] = []
    start = loop.time()
    tick = 0
    while True:
        due = start + tick * SAMPLE_INTERVAL
        if due > start + seconds:
            break
        await asyncio.sleep(max(0.0, due - loop.time()))
        with contextlib.suppress(OSError, TimeoutError, ValueError):
            _, report = await get_health(port)
            loads.append(float(report.get("dsp_load", 0.0)))
            xruns.append(int(report.get("xruns", 0)))
        tick += 1
    return loads, xruns


async def drag(client: BenchClient, slider: Slider, index: int, start: float, seconds: float) -> int:
    """Move one slider at :data:`SLIDER_RATE` until ``start + seconds``; returns changes sent.

    Each client's ticks are offset by ``index / CLIENTS`` of a period, so the
    20 sliders do not all move in the same instant. A late tick is dropped
    (a slider sends where it is now, it does not catch up).
    """
    loop = asyncio.get_running_loop()
    period = 1.0 / SLIDER_RATE
    first = start + index * period / CLIENTS
    end = start + seconds
    phase = index / CLIENTS
    tick = sent = 0
    while True:
        due = first + tick * period
        if due >= end:
            return sent
        await asyncio.sleep(max(0.0, due - loop.time()))
        request_id = f"s{index}-{tick}"
        message = {
            "id": request_id,
            "type": "PLUGIN_PARAMETER",
            "data": {
                "track_id": TRACK,
                "plugin_id": slider.plugin_id,
                "parameter_id": slider.parameter_id,
                "parameter_value": slider.value(loop.time() - start, phase),
            },
        }
        client.sent_at[request_id.encode()] = time.perf_counter_ns()
        client.send_texts((json.dumps(message, separators=(",", ":")).encode(),))
        sent += 1
        tick = max(tick + 1, math.floor((loop.time() - first) / period))


def _pin_clients() -> tuple[set[int] | None, str]:
    """Pin this process to the first CPU (the box keeps every CPU); returns the old set."""
    if not hasattr(os, "sched_getaffinity"):
        return None, "not pinned"
    available = os.sched_getaffinity(0)
    if len(available) < 2:
        return None, "not pinned (1 CPU)"
    first = min(available)
    os.sched_setaffinity(0, {first})
    return available, f"CPU {first}"


async def sweep(box: BoxProcess, controls: list[Slider], seconds: float) -> Sweep:
    """20 clients drag 20 controls at 60 Hz for ``seconds`` while /healthz is sampled."""
    assert box.proc is not None
    figures = Sweep()
    progress = asyncio.Event()
    clients: list[BenchClient] = []
    old_cpus, _ = _pin_clients()
    try:
        for _ in controls:
            clients.append(await open_client(box.port, progress.set))
        await asyncio.sleep(SETTLE)
        for client in clients:
            client.reset()
        _, before_xruns = await sample_health(box.port, 0)
        cpu_before = await box.survey()
        client_before = time.process_time()
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        wall = time.monotonic()
        async with asyncio.TaskGroup() as group:  # one failing client stops them all
            sampler = group.create_task(sample_health(box.port, seconds))
            drags = [
                group.create_task(drag(c, s, i, start, seconds))
                for i, (c, s) in enumerate(zip(clients, controls, strict=True))
            ]
        sent = sum(task.result() for task in drags)
        loads, xruns = sampler.result()
        cpu_after = await box.survey()
        elapsed = time.monotonic() - wall
        client_cpu = time.process_time() - client_before
        await drain(clients, sent, progress)
        figures.seconds = seconds
        figures.sent = sent
        received = [c.parameters for c in clients]
        figures.delivered_rate = min(received) / seconds
        figures.lost = sum(max(0, sent - r) for r in received)
        figures.errors = sum(c.errors for c in clients)
        latencies = sorted(ns / 1e6 for c in clients for ns in c.latencies_ns)
        if latencies:
            figures.echo_p50_ms = percentile(latencies, 0.50)
            figures.echo_p99_ms = percentile(latencies, 0.99)
        if loads:
            figures.dsp_mean = statistics.fmean(loads)
            figures.dsp_max = max(loads)
            figures.samples = len(loads)
        if xruns and before_xruns:
            figures.xruns = xruns[-1] - before_xruns[0]
        spent = cpu_split(cpu_before, cpu_after, box.proc.pid)
        figures.cpu = {name: 100.0 * value / elapsed for name, value in spent.items()}
        figures.client_cpu = 100.0 * client_cpu / elapsed
    finally:
        if old_cpus is not None:
            os.sched_setaffinity(0, old_cpus)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return figures


async def measure_box(variant: Variant, folder: Path, args: argparse.Namespace, column: Column) -> None:
    """Phases 2-4 for one configuration: adds over WebSocket, board load, idle, sweep."""
    data = folder / "data"
    port = free_port()
    config = await asyncio.to_thread(write_config, folder, variant, port)
    # Phase 2: empty board, adds over WebSocket.
    box = BoxProcess(config, port)
    try:
        print(f"  [{variant.label}] box, empty board: PLUGIN_ADD x{args.adds} per type ...", file=sys.stderr)
        await box.start()
        column.start_empty_s, _ = await box.wait_ready(0)
        column.ws_add_ms = await add_times(box.port, args.adds)
    except (RuntimeError, ProbeError, OSError, TimeoutError) as exc:
        column.problems.append(f"box, plugin adds: {exc}")
    finally:
        column.problems.extend(await box.stop())
    # Phase 3: the saved board of 7 plugins.
    board = json.loads(args.board_json)
    await asyncio.to_thread((data / "board.json").write_text, json.dumps(board, indent=1))
    with contextlib.suppress(FileNotFoundError):
        await asyncio.to_thread((data / "board.json.bak").unlink)
    box = BoxProcess(config, free_port())
    try:
        print(f"  [{variant.label}] box, {len(BOARD)}-plugin board: start, idle, sweep ...", file=sys.stderr)
        await box.start()
        column.start_board_s, report = await box.wait_ready(len(BOARD))
        column.realtime = await asyncio.to_thread(box.realtime)
        column.jackd_rt = await box.jackd_threads()
        if int(report.get("board_plugins", 0)) != len(BOARD):
            column.problems.append(
                f"board loaded with {report.get('board_plugins')} plugins, not {len(BOARD)}"
            )
        # Phase 4: idle, then the sweep.
        loads, xruns = await sample_health(box.port, args.idle)
        if loads:
            column.idle_dsp_mean, column.idle_dsp_max = statistics.fmean(loads), max(loads)
        if xruns:
            column.idle_xruns = xruns[-1] - xruns[0]
        controls = args.controls
        column.sweep = await sweep(box, controls, args.seconds)
        _, report = await get_health(box.port)
        column.xruns_total = int(report.get("xruns", 0))
        if engine_plugins(report) != len(BOARD):
            column.problems.append(f"after the sweep the engine runs {engine_plugins(report)} plugins")
    except (RuntimeError, ProbeError, OSError, TimeoutError, ValueError, ExceptionGroup) as exc:
        column.problems.append(f"box, board and sweep: {exc!r}")
    finally:
        column.problems.extend(await box.stop())


async def measure_engine_level(
    variant: Variant, folder: Path, args: argparse.Namespace, column: Column
) -> None:
    """Phase 1: the engine alone, in a subprocess (``--engine-level``)."""
    config = await asyncio.to_thread(write_config, folder, variant, free_port())
    board_path = folder / "engine-board.json"
    await asyncio.to_thread(board_path.write_text, args.board_json)
    budget = ENGINE_LEVEL_FIXED + ENGINE_LEVEL_PER_ROUND * args.adds
    print(
        f"  [{variant.label}] engine level: start, add_plugin x{args.adds} per type, board ...",
        file=sys.stderr,
    )
    errors = await asyncio.to_thread(open, folder / "engine-level.log", "ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hil.bench_engines", "--engine-level", str(config),
            "--board-file", str(board_path), "--adds", str(args.adds),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=errors,
            cwd=ROOT, env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}, start_new_session=True,
        )  # fmt: skip
    finally:
        errors.close()
    try:
        assert proc.stdout is not None
        out = await asyncio.wait_for(proc.stdout.read(), budget)
        # Carla's bridges write to the same stdout: take the marked line.
        marked = [line for line in out.decode(errors="replace").splitlines() if line.startswith(RESULT_MARK)]
        result = json.loads(marked[-1][len(RESULT_MARK) :]) if marked else {}
        if "error" in result:
            column.problems.append(f"engine level: {result['error']}")
        column.engine_level = result
    except TimeoutError:
        column.problems.append(f"engine level: no result within {budget:.0f} s; stopped")
    except ValueError as exc:
        column.problems.append(f"engine level: unreadable result ({exc})")
    finally:
        with contextlib.suppress(TimeoutError):  # it stops its engine and exits by itself
            await asyncio.wait_for(proc.wait(), BOX_STOP_TIMEOUT)
        column.problems.extend(await stop_family(proc, BOX_STOP_TIMEOUT, {}))
    if not column.engine_level:
        text = await asyncio.to_thread((folder / "engine-level.log").read_text, errors="replace")
        tail = text.strip().splitlines()[-5:]
        column.problems.append("engine level log: " + " | ".join(tail))


# ======================================================================================
# The engine-level subprocess (--engine-level CONFIG)
# ======================================================================================


async def engine_level_main(config_path: Path, board_path: Path, adds: int) -> dict[str, Any]:
    """Time the engine that make_engine builds from the box's config; returns the figures."""
    from appliance import config as config_module
    from appliance.app import make_engine
    from appliance.core.board import Board
    from appliance.engine import SavedPlugin
    from appliance.plugins.catalog import Catalog

    config = config_module.load(config_path)
    catalog = await asyncio.to_thread(Catalog.load, config.catalog, cache=config.data_dir / "lv2-scan.json")
    engine = make_engine(config, lambda event: None)
    result: dict[str, Any] = {"engine": engine.name}
    started = time.monotonic()
    try:
        await engine.start()
        result["start_s"] = time.monotonic() - started
        result["jackd_rt"] = await jackd_threads(await asyncio.to_thread(family, os.getpid()))
        scratch = Board([TRACK])
        add_ms: dict[str, list[float]] = {key: [] for key in BOARD}
        for _ in range(adds):
            for key in BOARD:
                plugin_type = catalog.lookup(key)
                if plugin_type is None:
                    raise RuntimeError(f"catalog entry {key!r} is not installed")
                instance = scratch.new_instance(plugin_type, plugin_type.name)
                began = time.monotonic()
                await engine.add_plugin(TRACK, instance.id, plugin_type, 0, instance.engine_values())
                add_ms[key].append((time.monotonic() - began) * 1000)
                await engine.remove_plugin(instance.id)
        result["add_ms"] = {key: statistics.median(v) for key, v in add_ms.items() if v}
        board = Board([TRACK])
        saved = json.loads(board_path.read_text(encoding="utf-8"))
        problems = board.restore(saved, catalog)
        if problems:
            result["error"] = "; ".join(problems)
        began = time.monotonic()  # as Box._load_engine does it
        failed = await engine.load_board(
            [SavedPlugin(t.id, p.id, p.type, p.engine_values(), p.bypass) for t, p in board.instances()]
        )
        result["board_s"] = time.monotonic() - began
        if failed:
            result["error"] = "; ".join(f"{pid}: {why}" for pid, why in failed.items())
        result["board_plugins"] = len(engine.chain(TRACK))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        began = time.monotonic()
        await engine.stop()
        result["stop_s"] = time.monotonic() - began
    return result


# ======================================================================================
# The report
# ======================================================================================


def _number(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _rows(columns: list[Column], args: argparse.Namespace) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(label: str, values: list[str]) -> None:
        rows.append([label, *values])

    def level(name: str) -> list[Any]:
        return [c.engine_level.get(name) for c in columns]

    add("JACK server realtime (box's log)", [c.realtime for c in columns])
    add("box's jackd: threads SCHED_FIFO/all (/proc)", [c.jackd_rt for c in columns])
    add("engine level's jackd: SCHED_FIFO/all", [str(c.engine_level.get("jackd_rt", "n/a")) for c in columns])
    add("engine: start() (ms)", [_number(v and v * 1000) for v in level("start_s")])
    for key in BOARD:
        add(
            f"add {key}: engine add_plugin p50 (ms)",
            [_number(c.engine_level.get("add_ms", {}).get(key)) for c in columns],
        )
    for key in BOARD:
        add(f"add {key}: WS PLUGIN_ADD -> echo p50 (ms)", [_number(c.ws_add_ms.get(key)) for c in columns])
    add(
        f"engine: load_board of the saved {len(BOARD)}-plugin board (s)",
        [_number(v, 2) for v in level("board_s")],
    )
    add("engine: stop() with the board (s)", [_number(v, 2) for v in level("stop_s")])
    add("box start -> /healthz 200, empty board (s)", [_number(c.start_empty_s, 2) for c in columns])
    add(
        f"box start -> /healthz 200, {len(BOARD)}-plugin board (s)",
        [_number(c.start_board_s, 2) for c in columns],
    )
    add(
        "board-load cost (board start - empty start) (s)",
        [
            _number(c.start_board_s - c.start_empty_s if c.start_board_s and c.start_empty_s else None, 2)
            for c in columns
        ],
    )
    add(f"idle {args.idle:g} s: DSP load mean / max (%)", [
        f"{_number(c.idle_dsp_mean, 2)} / {_number(c.idle_dsp_max, 2)}" for c in columns
    ])  # fmt: skip
    add(f"idle {args.idle:g} s: xruns", [_number(c.idle_xruns) for c in columns])
    sweeps = [c.sweep for c in columns]
    label = f"sweep {args.seconds:g} s"

    def sweep_row(name: str, getter: Any) -> None:
        add(f"{label}: {name}", [getter(s) if s is not None else "n/a" for s in sweeps])

    sweep_row("DSP load mean (%)", lambda s: _number(s.dsp_mean, 2))
    sweep_row("DSP load max (%)", lambda s: _number(s.dsp_max, 2))
    sweep_row("/healthz samples", lambda s: _number(s.samples))
    sweep_row("xruns during the sweep", lambda s: _number(s.xruns))
    sweep_row("changes sent", lambda s: _number(s.sent))
    sweep_row("changes/s sent", lambda s: _number(s.sent / s.seconds if s.seconds else None))
    sweep_row(f"changes/s delivered to all {CLIENTS}", lambda s: _number(s.delivered_rate))
    sweep_row("echoes lost (sum over clients)", lambda s: _number(s.lost))
    sweep_row("ERROR replies", lambda s: _number(s.errors))
    sweep_row("own echo p50 (ms)", lambda s: _number(s.echo_p50_ms, 2))
    sweep_row("own echo p99 (ms)", lambda s: _number(s.echo_p99_ms, 2))
    sweep_row("CPU box process (% of a core)", lambda s: _number(s.cpu.get("box"), 1))
    sweep_row("CPU plugin processes (jalv / Carla host)", lambda s: _number(s.cpu.get("plugins"), 1))
    sweep_row("CPU jackd", lambda s: _number(s.cpu.get("jackd"), 1))
    sweep_row("CPU total box+plugins+jackd", lambda s: _number(
        sum(s.cpu.get(k, 0.0) for k in ("box", "plugins", "jackd")) if s.cpu else None, 1
    ))  # fmt: skip
    sweep_row("CPU bench clients (this process)", lambda s: _number(s.client_cpu, 1))
    add("xruns since the box started (after sweep)", [_number(c.xruns_total) for c in columns])
    return rows


def _header(args: argparse.Namespace, columns: list[Column]) -> str:
    slider_names = ", ".join(f"{s.plugin}.{s.parameter_id}" for s in args.controls)
    from appliance.engine.carla.engine import PLUGIN_PREROLL

    preroll = f"{PLUGIN_PREROLL * 1000:.0f} ms"
    return "\n".join(
        [
            "hil.bench_engines — the same board under each engine (same run, one after the other)",
            f"  host: Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; "
            f"all traffic on {HOST}",
            f"  JACK: a private dummy server per run, {SAMPLE_RATE} Hz, {PERIOD} frames "
            f"({PERIOD / SAMPLE_RATE * 1000:.2f} ms), started by the engine with realtime: true "
            "(JackServer tries -R -P 70, falls back to --no-realtime)",
            f"  board on {TRACK}: {' -> '.join(BOARD)} (reverb wet_dry 0.3, room_size 0.5; none bypassed)",
            "  box: python -m appliance run --config <tmp yaml> (config/virtual.yaml + engine.kind, "
            "jack.dummy, carla {bridges}, demo: []); shipped rate limit",
            f"  adds: p50 over {args.adds} add+remove rounds per type on an otherwise empty track; "
            f"Carla's add_plugin includes its {preroll} unconnected pre-roll (PLUGIN_PREROLL)",
            "  box start: process start -> /healthz 200 with running and the engine's plugin count "
            f"(polled every {START_POLL * 1000:.0f} ms; /healthz is served only after the board is "
            "loaded); LV2 scan cache pre-built",
            f"  sweep: {CLIENTS} clients (hil.wsprobe.ProbeClient) each drag one control at "
            f"{SLIDER_RATE:g} Hz (triangle over its range every {SWEEP_PERIOD:g} s, ticks staggered); "
            f"every change is broadcast to all {CLIENTS}; /healthz sampled every {SAMPLE_INTERVAL:g} s",
            f"  controls: {slider_names}",
            "  CPU: /proc utime+stime over the sweep, % of one core; plugin processes = jalv (jalv), "
            "the Carla host process and carla-bridge-native (bridges); "
            "the clients are pinned to the first CPU during the sweep, the box and its children are not",
            f"  columns: {', '.join(c.variant.label for c in columns)}",
        ]
    )


# ======================================================================================
# Entry point
# ======================================================================================


async def prepare(args: argparse.Namespace, shared: Path) -> str | None:
    """Build the LV2 scan cache, the board and the sweep's controls; None or why not."""
    from appliance.plugins.catalog import Catalog

    cache = shared / "lv2-scan.json"
    catalog = await asyncio.to_thread(Catalog.load, ROOT / "config" / "plugins.yaml", cache=cache)
    missing = [key for key in BOARD if catalog.lookup(key) is None]
    if missing:
        return f"catalog entries not installed here: {', '.join(missing)}"
    board = board_document(catalog)
    args.board_json = json.dumps(board)
    args.controls = sliders(catalog, board, CLIENTS)
    args.cache = cache
    if len(args.controls) < CLIENTS:
        return f"the board has only {len(args.controls)} continuous controls, {CLIENTS} needed"
    return None


def unavailable(variant: Variant) -> str | None:
    """Why a configuration cannot run here, or None."""
    if variant.kind == "jalv":
        if shutil.which("jalv") is None or shutil.which("jackd") is None:
            return "jalv or jackd is not installed"
        return None
    from appliance.engine.carla import install

    reason = install.unavailable(None)
    if reason is None and variant.bridges:
        paths = install.find_carla(None)
        if not (paths.lib_dir / install.BRIDGE_BINARY).is_file():
            reason = f"no {install.BRIDGE_BINARY} in {paths.lib_dir}"
    return reason


async def bench_main(args: argparse.Namespace) -> int:
    columns = [Column(VARIANTS[label]) for label in args.variants]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
            shared = Path(tmp)
            why = await prepare(args, shared)
            if why is not None:
                print(f"NOT AVAILABLE — {why}; no figures (exit 0).")
                return 0
            for column in columns:
                variant = column.variant
                reason = unavailable(variant)
                if reason is not None:
                    column.problems.append(f"NOT AVAILABLE: {reason}")
                    continue
                print(f"measuring {variant.label} ...", file=sys.stderr, flush=True)
                folder = shared / variant.label.replace("+", "-")
                await asyncio.to_thread((folder / "data").mkdir, parents=True)
                await asyncio.to_thread(shutil.copy, args.cache, folder / "data" / "lv2-scan.json")
                await measure_engine_level(variant, folder, args, column)
                await measure_box(variant, folder, args, column)
    finally:
        leftovers = await reap_servers()
    print(_header(args, columns))
    print()
    print(table(["metric", *(c.variant.label for c in columns)], _rows(columns, args)))
    notes = [f"  {c.variant.label}: {p}" for c in columns for p in c.problems]
    notes.append(
        "  jackd left behind, killed by pid: " + "; ".join(leftovers)
        if leftovers
        else f"  no jackd left behind (checked /proc for servers named {server_prefix()}*)"
    )
    print()
    print("notes")
    print("\n".join(notes))
    return 0


def server_prefix() -> str:
    """The start of every JACK server name this run gives out (see :func:`write_config`)."""
    return f"bench-{os.getpid()}-"


async def reap_servers() -> list[str]:
    """SIGKILL, by pid, any jackd still serving one of this run's servers; what was killed."""
    found = await asyncio.to_thread(jackd_of, server_prefix())
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return [f"pid {pid}: {argv}" for pid, argv in sorted(found.items())]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_engines", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the slider sweep")
    parser.add_argument("--engines", default="jalv,carla", help="comma list of jalv, carla")
    parser.add_argument("--bridges", action="store_true", help="also Carla with engine.carla.bridges: true")
    parser.add_argument("--adds", type=int, default=3, help="add rounds per plugin type (p50 over them)")
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds of /healthz samples before the sweep"
    )
    parser.add_argument("--engine-level", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--board-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if (not engines and not args.bridges) or any(e not in ("jalv", "carla") for e in engines):
        parser.error("--engines takes a comma list of jalv and carla")
    if not 0 < args.seconds <= 600 or not 1 <= args.adds <= 20 or not 0 <= args.idle <= 60:
        parser.error("--seconds must be in (0, 600], --adds in [1, 20], --idle in [0, 60]")
    args.variants = [*dict.fromkeys(engines)] + (["carla+bridges"] if args.bridges else [])
    per_variant = ENGINE_LEVEL_FIXED + ENGINE_LEVEL_PER_ROUND * args.adds + 3 * BOX_START_TIMEOUT
    per_variant += 2 * BOX_STOP_TIMEOUT + args.seconds + args.idle + 60
    args.budget = 60 + len(args.variants) * per_variant
    return args


def _stop_on_signals() -> None:
    """SIGINT and SIGTERM cancel the running task, so every ``finally`` stops its processes."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, task.cancel)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    if args.engine_level is not None:
        budget = ENGINE_LEVEL_FIXED + ENGINE_LEVEL_PER_ROUND * args.adds - 10

        async def level() -> dict[str, Any]:
            _stop_on_signals()
            try:
                return await asyncio.wait_for(
                    engine_level_main(args.engine_level, args.board_file, args.adds), budget
                )
            except TimeoutError:
                return {"error": f"engine level did not finish within {budget:.0f} s"}
            except asyncio.CancelledError:
                return {"error": "stopped by a signal"}

        print(RESULT_MARK + json.dumps(asyncio.run(level())), flush=True)
        return 0

    async def bounded() -> int:
        _stop_on_signals()
        try:
            return await asyncio.wait_for(bench_main(args), args.budget)
        except TimeoutError:
            print(f"benchmark did not finish within {args.budget:.0f} s; stopped")
            return 0
        except asyncio.CancelledError:
            print("benchmark stopped by a signal; the processes it started are stopped")
            return 1

    return asyncio.run(bounded())


if __name__ == "__main__":
    sys.exit(main())
