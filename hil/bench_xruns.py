"""Xruns per minute, idle and under a 20-client sweep, for each way of running a chain.

Run ``python -m hil.bench_xruns [--seconds 60] [--setups …] [--boards …] [--periods …]
[--transport-master]``.

Issue 18's table: for every **setup** × **board** × **period** (48 kHz), a
fresh realtime JACK dummy server (``JackServer``, ``-R -P 70``, falling back
to ``--no-realtime``, which the table then says), one at a time:

* **carla-rack**: the box (``python -m appliance run``, engine kind
  ``carla``) on that server: one Carla host per track in rack mode, what
  ships;
* **carla-multi**: yesterday's Carla engine, which no longer exists in the
  box: Carla driven directly in a child process of this module
  (``--carla-multi``, ``ENGINE_PROCESS_MODE_MULTIPLE_CLIENTS``), one JACK
  client per plugin, the board's plugins wired in series with JACK (no
  faders, meters or tuner, which the old engine had as further clients);
* **jalv**: the box with engine kind ``jalv``: a ``jalv`` process per plugin,
  with the box's faders and meters;
* **bare**: the floor: the server and one native pass-through client (``jalv``
  running ``eg-amp`` at 0 dB, ``system:capture_1`` → it → both playbacks).

The boards are the demo board (``config/virtual.yaml``'s ``demo``) and a
7-plugin guitar board (:data:`SEVEN`). The bare server has no board: it is
measured once per period and shown as the floor beside both boards.

For each cell:

1. **Board load**: the box starts with an empty board; the board is built
   over the protocol and saved as pedalboard A, as B (A 20 dB quieter: the
   reverb's output levels at a tenth) and as an empty one; then
   ``PEDALBOARD_LOAD`` A from the empty board, request to reply (``--loads``
   times, the empty board loaded in between). For carla-multi, the child's own
   load (add every plugin, wire them); n/a for bare.
2. **Idle**: ``--seconds`` with no client.
3. **Sweep**: ``--seconds`` with 20 WebSocket clients each dragging a different
   continuous control of the board at 60 Hz (``hil.bench_engines``' sweep:
   about 1,200 ``PLUGIN_PARAMETER``/s in, each broadcast to all 20). carla-multi
   and bare have no box to take the sweep: a *control box* (``--control-box``:
   the box's own ``Box`` with the in-memory ``FakeEngine``, so the same
   server, controller, library and broadcasts) holds the same board and takes
   the same 20 clients, so the machine carries the same control-plane load;
   the carla-multi child also sets the same 20 controls at 60 Hz in Carla.
4. **Switches** (``--switches`` each), with the box restarted on the rig
   (``tests/rig.py``: its player feeds the track, its recorder takes the
   track's output; its clients join the graph only now, after the xrun
   windows): cold, ``PEDALBOARD_LOAD`` A ↔ B with no setlist; warm,
   ``SETLIST_NEXT``/``SETLIST_PREVIOUS`` over a setlist [A, B] (the engine
   keeps the neighbour loaded and idle: warm standby). Each is timed from the
   request to the reply, and a switch to the louder board also from the
   request to the new board heard (a tone plays; the recording's level is
   past halfway to the new board's and stays there); the box's spillover
   rings out before the next. ``--no-sound`` times them on the first box,
   reply only. For carla-multi: the other board loaded beside, rewired, the
   old one removed (no fades); n/a for bare.

Counted by JACK itself: **xruns** are the notices of a JACK client's xrun
callback in a process of its own (``--monitor``: ``JACK-Client`` with no process
callback, so it is not in the graph and adds no wakeup), per minute; the
server's own log lines (``Process XRun``: a late wakeup; ``was not finished``: a
client late) are given beside them in the notes. **DSP load** is JACK's
``jack_cpu_load`` read by the same monitor every 0.25 s (mean and max).

A measurement, not a test: it prints the table and exits 0 whatever the
figures. One JACK server at a time, each stopped in ``finally`` (and every
child is started with ``setpriv --pdeathsig TERM`` in a session of its own, so
nothing outlives a crash of this process); Ctrl-C stops the run cleanly.
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
import queue
import secrets
import select
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appliance.engine.jack.server import CLIENT_LATE_LINE, LATE_WAKEUP
from hil.bench_control import table
from hil.bench_engines import (
    REPLY_MARK,
    BenchClient,
    Proc,
    Slider,
    drag,
    family,
    get_health,
    jackd_of,
    sliders,
    stop_family,
)
from hil.wsprobe import ERROR_MARK, ProbeClient

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TRACK = "track_001"
RATE = 48000
PERIODS = (128, 64)
SETUPS = ("carla-rack", "carla-multi", "jalv", "bare")
#: The setups that run the box itself, and its engine kind.
BOX_KINDS = {"carla-rack": "carla", "jalv": "jalv"}

#: The 7-plugin board: (catalog key, values in the protocol's units, bypassed), in chain order.
SEVEN: tuple[tuple[str, dict[str, float], bool], ...] = (
    ("gate", {"threshold": -60.0}, False),
    ("compressor", {"threshold": -20.0, "ratio": 4.0}, False),
    ("overdrive", {"drive": 0.5}, False),
    ("amp", {}, False),
    ("eq", {"mid_gain": 3.0}, False),
    ("delay", {"time": 350.0, "feedback": 0.3, "wet_dry": 0.25}, False),
    ("reverb", {"wet_dry": 0.3, "room_size": 0.5}, False),
)
BOARDS = ("demo", "seven")
#: Pedalboard B is A 20 dB quieter: the reverb, the last plugin heard on both boards, with its
#: dry, early and late levels at a tenth (it is linear there, so the whole board drops 20 dB).
B_LEVELS = ("dry_level", "early_level", "wet_dry")
B_FACTOR = 0.1
B_STEP_DB = 20 * math.log10(B_FACTOR)
PEDALBOARDS = {"A": "xruns A", "B": "xruns B", "empty": "xruns empty"}

#: Sweep: clients, and how often each moves its control (as hil.bench_engines).
CLIENTS = 20
SLIDER_RATE = 60.0
SWEEP_PERIOD = 2.0
#: The monitor reads JACK's DSP load this often.
DSP_INTERVAL = 0.25

#: Pause after a board is loaded before counting (plugins settle, pre-rolls end).
SETTLE = 3.0
#: Pause after the warm setlist is set, for the engine to load the neighbour.
WARM_WAIT = 5.0
#: Extra pause after the box's spillover before the next switch.
SWITCH_MARGIN = 1.5
#: carla-multi: pause between two loads or switches.
MULTI_GAP = 1.0
#: A switch heard by the rig: a tone this long, at this level, the request this far into it.
TONE_HZ = 1000.0
TONE_DB = -12.0
TAKE_SECONDS = 4.0
LEAD_SECONDS = 1.5
#: The level before the switch is read over this many frames before the request.
LEVEL_FRAMES = 4800
#: Level window, and how long the level must stay past halfway for the new board to be heard.
LEVEL_WINDOW = 240
HEARD_HOLD = 2400

#: How long a box (or control box) may take to serve /healthz.
BOX_START_TIMEOUT = 90.0
#: How long a child may take to end after it was asked to, and again after SIGTERM.
STOP_GRACE = 30.0
#: How long a structural request (add, load, switch) may take.
REQUEST_TIMEOUT = 60.0
#: How long the monitor or the Carla child may take to answer.
CHILD_TIMEOUT = 60.0
#: How long the bare client's ports may take to appear.
PORTS_TIMEOUT = 10.0
#: What the children write before each of their answers (Carla prints on stdout too).
MARK = "BXR "

log = logging.getLogger("hil.bench_xruns")


def server_prefix() -> str:
    """The start of every JACK server name this run gives out."""
    return f"bxr-{os.getpid()}-"


# ======================================================================================
# Boards
# ======================================================================================


@dataclass(frozen=True)
class Entry:
    """One plugin of a board: catalog key, values (protocol ids and units), bypassed."""

    key: str
    values: dict[str, float]
    bypass: bool = False


def board_entries(name: str) -> list[Entry]:
    """The board's plugins in chain order: ``demo`` from config/virtual.yaml, or :data:`SEVEN`."""
    if name == "seven":
        return [Entry(key, dict(values), bypass) for key, values, bypass in SEVEN]
    data = yaml.safe_load((ROOT / "config" / "virtual.yaml").read_text(encoding="utf-8"))
    return [
        Entry(
            str(d["plugin"]), {k: float(v) for k, v in (d.get("values") or {}).items()}, bool(d.get("bypass"))
        )
        for d in data.get("demo") or []
    ]


def variant_b(catalog: Any, entries: list[Entry]) -> list[Entry]:
    """Pedalboard B: A with the reverb's :data:`B_LEVELS` times :data:`B_FACTOR`."""
    changed = []
    for entry in entries:
        if entry.key == "reverb":
            reverb = catalog.lookup("reverb")
            values = dict(entry.values)
            for parameter in B_LEVELS:
                values[parameter] = values.get(parameter, reverb.canonical(parameter).default) * B_FACTOR
            entry = Entry(entry.key, values, entry.bypass)
        changed.append(entry)
    return changed


def carla_spec(catalog: Any, entries: list[Entry]) -> list[dict[str, Any]]:
    """What the carla-multi child loads: per plugin its URI, port counts and LV2 values
    (the enable control included, as the box would set it)."""
    from appliance.core.board import conform_values

    spec = []
    for entry in entries:
        plugin_type = catalog.lookup(entry.key)
        values = {p.symbol: p.to_engine(p.default) for p in plugin_type.parameters}
        values.update(conform_values(plugin_type, entry.values)[1])
        enable = plugin_type.enable_value(entry.bypass)
        if enable is not None:
            values[plugin_type.enable_symbol] = enable
        spec.append(
            {
                "uri": plugin_type.uri,
                "inputs": len(plugin_type.audio_inputs),
                "outputs": len(plugin_type.audio_outputs),
                "values": values,
                # no enable control: a bypassed plugin passes its input dry (Carla's dry/wet)
                "dry": entry.bypass and enable is None,
            }
        )
    return spec


def carla_sweep(catalog: Any, entries: list[Entry], controls: list[Slider], chain: list[str]) -> list[Any]:
    """The sweep's controls as the carla-multi child sets them: position, symbol, LV2 range."""
    swept = []
    for slider in controls:
        position = chain.index(slider.plugin_id)
        parameter = catalog.lookup(entries[position].key).canonical(slider.parameter_id)
        low, high = sorted((parameter.to_engine(slider.minimum), parameter.to_engine(slider.maximum)))
        swept.append([position, parameter.symbol, low, high])
    return swept


# ======================================================================================
# Child processes
# ======================================================================================


class Child:
    """A process this run started: its own session, SIGTERM if this process dies
    (``setpriv --pdeathsig``), output to a log file; optionally a stdin/stdout pipe
    speaking JSON lines (answers start with :data:`MARK`).

    Loop thread only.
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str], talks: bool = False):
        self.name = name
        self.argv = ["setpriv", "--pdeathsig", "TERM", "--", *argv]
        self.log_path = log_path
        self.env = env
        self.talks = talks
        self.proc: asyncio.subprocess.Process | None = None
        self.known: dict[int, Proc] = {}
        #: The HTTP/WebSocket port of a box.
        self.port = 0

    async def start(self) -> None:
        log_file = await asyncio.to_thread(open, self.log_path, "ab")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE if self.talks else log_file,
                stderr=log_file,
                cwd=ROOT,
                env=self.env,
                start_new_session=True,
                limit=1 << 24,
            )
        finally:
            log_file.close()

    async def ask(self, message: dict[str, Any], timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
        """Send one JSON line and read the next answer line.

        Raises:
            RuntimeError: the child ended or answered an error.
            TimeoutError: no answer within ``timeout``.
        """
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        await self.proc.stdin.drain()

        async def answer() -> dict[str, Any]:
            assert self.proc is not None and self.proc.stdout is not None
            while line := await self.proc.stdout.readline():
                text = line.decode(errors="replace")
                if text.startswith(MARK):
                    return dict(json.loads(text[len(MARK) :]))
            raise RuntimeError(f"{self.name} ended: {await asyncio.to_thread(self.log_tail)}")

        reply = await asyncio.wait_for(answer(), timeout)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    async def stop(self) -> list[str]:
        """Close its stdin (a polite end), wait, then SIGTERM, SIGKILL and anything of its
        family left (hil.bench_engines.stop_family). Notes on what had to be killed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return []
        if proc.returncode is None:
            self.known.update(await asyncio.to_thread(family, proc.pid))
            if proc.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    proc.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), STOP_GRACE if self.talks else 0.5)
        notes = await stop_family(proc, STOP_GRACE, self.known)
        return [f"{self.name}: {note}" for note in notes]


class RigChild:
    """The rig (tests/rig.py's ``Rig``, its clients in a child process of its own) among a
    cell's children, so that it is closed in turn: after the box that plays into it."""

    def __init__(self, rig: Any) -> None:
        self.rig = rig

    async def stop(self) -> list[str]:
        try:
            await self.rig.close()
        except Exception as exc:  # a rig that hung closing was killed: said, not raised
            return [f"rig: {exc}"]
        return []


def child_env(server: str) -> dict[str, str]:
    """Environment for a child on ``server`` (never starts a server of its own)."""
    from appliance.engine.jack.server import jack_environment

    return jack_environment(server)


def module_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "hil.bench_xruns", *args]


# ======================================================================================
# The monitor (--monitor): xruns and DSP load, from a JACK client not in the graph
# ======================================================================================


def monitor_main(server: str) -> int:
    """Count JACK's xrun notices and sample its DSP load until stdin closes.

    Each stdin line is answered with what happened since the previous one:
    ``{"xruns": [monotonic times], "dsp": [samples]}``. The client has no
    process callback, so JACK does not wake it in the cycle. Main thread:
    stdin and the samples; JACK's notification thread: the xrun callback.
    """
    import jack  # type: ignore[import-untyped]

    client = jack.Client(f"bxr-monitor-{secrets.token_hex(2)}", servername=server, no_start_server=True)
    lock = threading.Lock()
    xruns: list[float] = []
    loads: list[float] = []

    def on_xrun(delay: float) -> None:
        with lock:
            xruns.append(time.monotonic())

    client.set_xrun_callback(on_xrun)
    client.activate()
    signal.signal(signal.SIGTERM, lambda *_: _quit(client))
    _say({"ready": True, "rate": client.samplerate, "period": client.blocksize})
    next_sample = time.monotonic()
    while True:
        wait = max(0.0, next_sample - time.monotonic())
        readable, _, _ = select.select([sys.stdin], [], [], wait)
        if readable:
            if not sys.stdin.readline():
                break
            with lock:
                answer = {"xruns": list(xruns), "dsp": list(loads)}
                xruns.clear()
                loads.clear()
            _say(answer)
        if time.monotonic() >= next_sample:
            load = float(client.cpu_load())
            with lock:
                loads.append(load)
            next_sample += DSP_INTERVAL
    _quit(client)
    return 0


def _quit(client: Any) -> None:
    """Leave JACK (on a thread, so a hanging deactivate cannot hold the exit) and exit."""
    closer = threading.Thread(target=lambda: (client.deactivate(), client.close()), daemon=True)
    closer.start()
    closer.join(3.0)
    os._exit(0)


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(MARK + json.dumps(message) + "\n")
    sys.stdout.flush()


@dataclass
class Window:
    """What the monitor and jackd's log saw over one measured stretch.

    Attributes:
        xruns: JACK's xrun notices to a client (what the box's /healthz counts).
        cycles: bad cycles: notices less than two periods apart are one (JACK sends
            one per client that did not finish, and one for a late wakeup).
        late_wakeups: jackd's "Process XRun" lines (the server woke late).
        late_clients: jackd's "was not finished" lines, per client name.
        dsp: JACK's DSP load samples, %.
    """

    seconds: float
    xruns: int = 0
    cycles: int = 0
    late_wakeups: int = 0
    late_clients: dict[str, int] = field(default_factory=dict)
    dsp: list[float] = field(default_factory=list)

    def per_minute(self) -> float:
        return 60.0 * self.xruns / self.seconds if self.seconds else 0.0


class Monitor:
    """The monitor child and jackd's xrun lines, read as windows. Loop thread only."""

    def __init__(self, child: Child, server_log: JackLogCounter, period: int) -> None:
        self.child = child
        self.server_log = server_log
        self.period = period
        self._began = 0.0
        self._late = 0
        self._clients: dict[str, int] = {}

    async def begin(self) -> None:
        await self.child.ask({})
        self._began = time.monotonic()
        self._late, self._clients = self.server_log.late_wakeups, dict(self.server_log.late_clients)

    async def end(self) -> Window:
        seen = await self.child.ask({})
        window = Window(time.monotonic() - self._began)
        times = sorted(seen["xruns"])
        window.xruns = len(times)
        apart = 2 * self.period / RATE
        window.cycles = sum(1 for i, t in enumerate(times) if i == 0 or t - times[i - 1] > apart)
        window.dsp = [float(v) for v in seen["dsp"]]
        window.late_wakeups = self.server_log.late_wakeups - self._late
        for name, count in self.server_log.late_clients.items():
            if count > self._clients.get(name, 0):
                window.late_clients[name] = count - self._clients.get(name, 0)
        return window


class JackLogCounter(logging.Handler):
    """Counts jackd's xrun lines, which ``JackServer`` logs at DEBUG (``jackd NAME: LINE``).

    Lines of other levels go on to stderr as usual. Any thread (logging's lock).
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.late_wakeups = 0
        self.late_clients: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno > logging.DEBUG:
            sys.stderr.write(f"{record.name}: {text}\n")
        elif LATE_WAKEUP in text:
            self.late_wakeups += 1
        elif found := CLIENT_LATE_LINE.search(text):
            name = found.group(1) or found.group(2)
            self.late_clients[name] = self.late_clients.get(name, 0) + 1


# ======================================================================================
# The control box (--control-box): the box with an in-memory engine
# ======================================================================================


async def control_box_main(config_path: Path, port: int) -> int:
    """Run the box's ``Box`` with ``FakeEngine`` until SIGTERM: the control plane alone."""
    import dataclasses

    from appliance import config as config_module
    from appliance.app import Box
    from appliance.engine import TrackPorts
    from tests.fakes import FakeEngine

    config = config_module.load(config_path)
    config = dataclasses.replace(config, server=dataclasses.replace(config.server, port=port))

    def fake(config: Any, on_event: Any, own: Any) -> Any:
        tracks = [TrackPorts(t.id, t.inputs, t.outputs) for t in config.tracks]
        return FakeEngine(tracks, on_event)  # type: ignore[no-untyped-call]

    box = Box(config, engine_maker=fake)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await box.start()
        await stop.wait()
    finally:
        await box.stop()
    return 0


# ======================================================================================
# Yesterday's Carla (--carla-multi): one JACK client per plugin, wired with JACK
# ======================================================================================


class MultiClientCarla:
    """Carla in ``ENGINE_PROCESS_MODE_MULTIPLE_CLIENTS`` and one board in it, wired in series
    from ``system:capture_1`` to both playbacks with a JACK client of its own (no process
    callback). Main thread only (Carla's owner), but for the stdin reader."""

    def __init__(self, server: str) -> None:
        import jack

        from appliance.engine.carla.install import find_carla, load_backend

        self.paths = find_carla(None)
        self.b = load_backend(self.paths)
        self.host: Any = None
        self.jack = jack.Client(f"bxr-wire-{secrets.token_hex(2)}", servername=server, no_start_server=True)
        self.names: list[str] = []  # Carla's plugins in Carla's (positional) order
        self.board: list[tuple[str, dict[str, int]]] = []  # the board playing: name, symbol → index
        self.connections: list[tuple[str, str]] = []
        self.numbers = itertools.count(1)
        self.sweep: list[list[Any]] = []
        self.sweep_next: list[float] = []
        self.sweep_began = 0.0
        self.swept = 0
        self.running = True

    def open(self) -> dict[str, Any]:
        b = self.b
        host = self.host = b.CarlaHostDLL(str(self.paths.library), False)
        host.set_engine_option(b.ENGINE_OPTION_PROCESS_MODE, b.ENGINE_PROCESS_MODE_MULTIPLE_CLIENTS, "")
        host.set_engine_option(b.ENGINE_OPTION_TRANSPORT_MODE, b.ENGINE_TRANSPORT_MODE_INTERNAL, "")
        host.set_engine_option(b.ENGINE_OPTION_PATH_BINARIES, 0, str(self.paths.lib_dir))
        host.set_engine_option(b.ENGINE_OPTION_PREFER_UI_BRIDGES, 0, "")
        host.set_engine_option(b.ENGINE_OPTION_OSC_ENABLED, 0, "")
        host.set_engine_option(b.ENGINE_OPTION_OSC_PORT_TCP, -1, "")
        host.set_engine_option(b.ENGINE_OPTION_OSC_PORT_UDP, -1, "")
        if not host.engine_init("JACK", f"bxr-carla-{secrets.token_hex(2)}"):
            raise RuntimeError(f"Carla's JACK engine did not start: {host.get_last_error()}")
        return {"rate": int(host.get_sample_rate()), "period": int(host.get_buffer_size())}

    def close(self) -> None:
        host = self.host
        if host is None:
            return
        self.host = None
        host.set_engine_about_to_close()
        if host.is_engine_running():
            host.remove_all_plugins()
        host.engine_close()

    def load(self, spec: list[dict[str, Any]]) -> dict[str, Any]:
        """Load a board beside the playing one (if any), wire it in, take the old one out.

        Returns:
            ``ms``: until the new board is wired in; ``total_ms``: the old one removed too.
        """
        from appliance.engine.chain import Stage, chain_connections

        b, host = self.b, self.host
        began = time.monotonic()
        board: list[tuple[str, dict[str, int]]] = []
        stages = []
        for plugin in spec:
            name = f"bxr{next(self.numbers)}"
            if not host.add_plugin(b.BINARY_NATIVE, b.PLUGIN_LV2, "", name, plugin["uri"], 0, None, 0):
                raise RuntimeError(f"{plugin['uri']}: {host.get_last_error()}")
            carla_id = len(self.names)
            self.names.append(name)
            params = {}
            for index in range(host.get_parameter_count(carla_id)):
                if host.get_parameter_data(carla_id, index)["type"] == b.PARAMETER_INPUT:
                    params[host.get_parameter_info(carla_id, index)["symbol"]] = index
            for symbol, value in plugin["values"].items():
                if symbol in params:
                    host.set_parameter_value(carla_id, params[symbol], float(value))
            if plugin["dry"]:
                host.set_drywet(carla_id, 0.0)
            host.set_active(carla_id, True)
            board.append((name, params))
            # the plugin's main audio ports, in port order (a side-chain input comes last)
            ins = [p.name for p in self.jack.get_ports(f"^{name}:", is_audio=True, is_input=True)]
            outs = [p.name for p in self.jack.get_ports(f"^{name}:", is_audio=True, is_output=True)]
            stages.append(Stage(ins[: plugin["inputs"]], outs[: plugin["outputs"]]))
        wanted = chain_connections(["system:capture_1"], stages, ["system:playback_1", "system:playback_2"])
        for source, destination in sorted(wanted):
            self.jack.connect(source, destination)
        for source, destination in self.connections:
            if source == "system:capture_1" or destination.startswith("system:"):
                with contextlib.suppress(Exception):
                    self.jack.disconnect(source, destination)
        wired = time.monotonic()
        old, self.board, self.connections = self.board, board, sorted(wanted)
        for name, _ in old:
            host.remove_plugin(self.names.index(name))
            self.names.remove(name)
        return {"ms": (wired - began) * 1000, "total_ms": (time.monotonic() - began) * 1000}

    def unload(self) -> dict[str, Any]:
        for source, destination in self.connections:
            with contextlib.suppress(Exception):
                self.jack.disconnect(source, destination)
        for name, _ in self.board:
            self.host.remove_plugin(self.names.index(name))
            self.names.remove(name)
        self.board, self.connections = [], []
        return {}

    def set_sweep(self, controls: list[list[Any]]) -> dict[str, Any]:
        """Move these controls (position, symbol, low, high) at 60 Hz each, staggered."""
        now = time.monotonic()
        if controls:
            self.swept = 0
        self.sweep = controls
        self.sweep_began = now
        self.sweep_next = [now + i / SLIDER_RATE / max(1, len(controls)) for i in range(len(controls))]
        return {"swept": self.swept}

    def tick(self) -> float:
        """Set the sweep's due values; when the next one is due."""
        if not self.sweep:
            return math.inf
        now = time.monotonic()
        for i, (position, symbol, low, high) in enumerate(self.sweep):
            if self.sweep_next[i] > now or position >= len(self.board):
                continue
            name, params = self.board[position]
            where = ((now - self.sweep_began) / SWEEP_PERIOD + i / len(self.sweep)) % 1.0
            value = low + (1.0 - abs(2.0 * where - 1.0)) * (high - low)
            if symbol in params:
                self.host.set_parameter_value(self.names.index(name), params[symbol], value)
                self.swept += 1
            self.sweep_next[i] = max(self.sweep_next[i] + 1.0 / SLIDER_RATE, now)
        return min(self.sweep_next)

    def info(self) -> dict[str, Any]:
        runtime = self.host.get_runtime_engine_info()
        return {"load": float(runtime["load"]), "xruns": int(runtime["xruns"]), "swept": self.swept}


def carla_multi_main(server: str) -> int:
    """Serve :class:`MultiClientCarla` over stdin/stdout until stdin closes or SIGTERM."""
    carla = MultiClientCarla(server)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()

    def read() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put("")

    def on_term(*_: Any) -> None:
        carla.running = False
        signal.alarm(5)  # SIGALRM's default ends the process if closing Carla hangs

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=read, daemon=True).start()
    try:
        opened = carla.open()
        _say({"ready": True, **opened})
        ops = {
            "load": lambda m: carla.load(m["board"]),
            "unload": lambda m: carla.unload(),
            "sweep": lambda m: carla.set_sweep(m["controls"]),
            "info": lambda m: carla.info(),
        }
        next_idle = time.monotonic()
        while carla.running:
            wait = max(0.0, min(next_idle, carla.tick()) - time.monotonic())
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                line = None
            if line == "":
                break
            if line:
                message = json.loads(line)
                try:
                    _say(ops[message["op"]](message))
                except Exception as exc:
                    _say({"error": f"{type(exc).__name__}: {exc}"})
            if time.monotonic() >= next_idle:
                carla.host.engine_idle()
                next_idle = time.monotonic() + 0.02
    finally:
        carla.close()
        with contextlib.suppress(Exception):
            carla.jack.close()
    return 0


# ======================================================================================
# Talking to a box over the protocol
# ======================================================================================


class Remote(BenchClient):
    """A :class:`BenchClient` whose :meth:`until` waits for a reply of given types only
    (a ``PEDALBOARD_LOAD``'s events carry its id before its ``PEDALBOARD_STATE`` does)."""

    def __init__(self, key: bytes, on_progress: Any = None) -> None:
        super().__init__(key, on_progress)
        self.numbers = itertools.count(1)
        self.wanted: dict[bytes, tuple[bytes, ...]] = {}

    def _on_text(self, payload: bytes, now: int) -> bool:
        start = payload.find(REPLY_MARK)
        if start >= 0 and self.wanted:
            start += len(REPLY_MARK)
            wanted = self.wanted.get(payload[start : payload.find(b'"', start)])
            if wanted is not None and ERROR_MARK not in payload and not any(t in payload for t in wanted):
                return ProbeClient._on_text(self, payload, now)
        return super()._on_text(payload, now)

    async def send(self, kind: str, final: tuple[str, ...] = (), **data: Any) -> tuple[float, dict[str, Any]]:
        """One request; (seconds to the reply, the reply). ``final``: reply types to wait for."""
        request_id = f"x{next(self.numbers)}"
        if final:
            self.wanted[request_id.encode()] = tuple(f'"type":"{t}"'.encode() for t in final)
        try:
            return await self.request({"id": request_id, "type": kind, "data": data}, REQUEST_TIMEOUT)
        finally:
            self.wanted.pop(request_id.encode(), None)


async def open_remote(port: int) -> Remote:
    client = await Remote.open(HOST, port, "/ws")
    assert isinstance(client, Remote)
    return client


async def wait_healthy(child: Child, port: int) -> float:
    """Poll /healthz until it answers 200 with ``running``; seconds it took."""
    began = time.monotonic()
    while time.monotonic() - began < BOX_START_TIMEOUT:
        if child.proc is None or child.proc.returncode is not None:
            raise RuntimeError(f"{child.name} exited: {await asyncio.to_thread(child.log_tail)}")
        with contextlib.suppress(OSError, TimeoutError, ValueError):
            status, report = await get_health(port)
            if status == 200 and report.get("running"):
                return time.monotonic() - began
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{child.name} did not serve within {BOX_START_TIMEOUT:.0f} s")


async def build(remote: Remote, entries: list[Entry]) -> list[str]:
    """Add the board's plugins to the (empty) board, with their values and bypass; their ids."""
    ids = []
    for entry in entries:
        _, reply = await remote.send("PLUGIN_ADD", track_id=TRACK, name=entry.key)
        plugin_id = str(reply["data"]["plugin_id"])
        ids.append(plugin_id)
        for parameter, value in entry.values.items():
            await remote.send(
                "PLUGIN_PARAMETER", track_id=TRACK, plugin_id=plugin_id, parameter_id=parameter,
                parameter_value=value,
            )  # fmt: skip
        if entry.bypass:
            await remote.send("PLUGIN_BYPASS", track_id=TRACK, plugin_id=plugin_id, bypass=True)
    return ids


async def chain_of(port: int) -> list[tuple[str, str]]:
    """(plugin id, catalog key) of the board playing, in chain order: a new client's replay."""
    from websockets.asyncio.client import connect

    seen: list[tuple[str, str]] = []
    async with connect(f"ws://{HOST}:{port}/ws", open_timeout=10) as ws:
        await ws.send(json.dumps({"id": "sync", "type": "PING"}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), REQUEST_TIMEOUT))
            if message.get("reply_to") == "sync":
                break
            if message["type"] == "PLUGIN_ADD" and message["data"]["track_id"] == TRACK:
                seen.append((str(message["data"]["plugin_id"]), str(message["data"]["plugin"])))
    return seen


# ======================================================================================
# One cell: a server, a setup, a board, a period
# ======================================================================================


@dataclass
class Cell:
    """Every figure of one row of the table."""

    setup: str
    board: str
    period: int
    realtime: bool | None = None
    load_avg: tuple[float, float] = (0.0, 0.0)
    idle: Window | None = None
    sweep: Window | None = None
    changes_sent: int = 0
    swept_in_carla: int = 0
    load_ms: list[float] = field(default_factory=list)
    cold_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)
    cold_heard_ms: list[float] = field(default_factory=list)
    warm_heard_ms: list[float] = field(default_factory=list)
    spoiled_takes: int = 0
    problems: list[str] = field(default_factory=list)


class Run:
    """What every cell shares: the catalog and the options. Loop thread only."""

    def __init__(self, args: argparse.Namespace, folder: Path, catalog: Any) -> None:
        self.args = args
        self.folder = folder
        self.catalog = catalog
        self.counter = JackLogCounter()
        self.spillover = 3.0

    async def cell(self, setup: str, board: str, period: int) -> Cell:
        from appliance.engine.jack.server import DummySettings, JackServer

        cell = Cell(setup, board, period, load_avg=(os.getloadavg()[0], 0.0))
        folder = self.folder / f"{setup}-{board}-{period}"
        await asyncio.to_thread((folder / "data").mkdir, parents=True)
        server = JackServer(
            server_prefix() + secrets.token_hex(3), DummySettings(RATE, period, realtime=True)
        )
        children: list[Child | RigChild] = []
        try:
            await server.start()
            cell.realtime = server.is_realtime
            env = child_env(server.name)
            monitor_child = Child(
                "monitor", module_argv("--monitor", server.name), folder / "monitor.log", env, True
            )
            children.append(monitor_child)
            await monitor_child.start()
            await self._ready(monitor_child)
            monitor = Monitor(monitor_child, self.counter, period)
            if setup in BOX_KINDS:
                await self._box_cell(cell, folder, server.name, env, monitor, children)
            else:
                await self._other_cell(cell, folder, server.name, env, monitor, children)
        except Exception as exc:  # a failed cell is reported; the others still run
            cell.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            for child in reversed(children):
                cell.problems.extend(await child.stop())
            await server.stop()
            cell.load_avg = (cell.load_avg[0], os.getloadavg()[0])
        return cell

    async def _ready(self, child: Child) -> None:
        """Wait for a talking child's first line (its ``ready``)."""
        assert child.proc is not None and child.proc.stdout is not None

        async def first() -> None:
            assert child.proc is not None and child.proc.stdout is not None
            while line := await child.proc.stdout.readline():
                text = line.decode(errors="replace")
                if text.startswith(MARK):
                    reply = json.loads(text[len(MARK) :])
                    if "error" in reply:
                        raise RuntimeError(f"{child.name}: {reply['error']}")
                    return
            raise RuntimeError(f"{child.name} ended: {await asyncio.to_thread(child.log_tail)}")

        await asyncio.wait_for(first(), CHILD_TIMEOUT)

    async def _start_box(
        self, folder: Path, server: str, env: dict[str, str], kind: str | None, tracks: Any = None
    ) -> Child:
        """The box (``kind``: its engine) or, with ``kind`` None, the control box; started.

        Its config is config/virtual.yaml on ``server`` (the box starts none), no demo
        board, ``tracks`` if given (tests/boxproc.py's ``virtual_config``).
        """
        from tests.boxproc import virtual_config

        extra: dict[str, Any] = {"tracks": tracks} if tracks is not None else {}
        if self.args.transport_master:
            extra["transport_master"] = True
        config = await asyncio.to_thread(
            virtual_config,
            folder,
            jack_server=server,
            dummy=False,
            engine=kind or "jalv",
            demo=[],
            **extra,
        )
        from tests.boxproc import free_port

        port = free_port()
        if kind is None:
            argv = module_argv("--control-box", str(config), "--port", str(port))
        else:
            argv = [sys.executable, "-m", "appliance", "run", "--config", str(config), "--port", str(port)]
        child = Child("box" if kind else "control box", argv, folder / "box.log", env)
        child.port = port
        await child.start()
        return child

    async def _box_cell(
        self,
        cell: Cell,
        folder: Path,
        server: str,
        env: dict[str, str],
        monitor: Monitor,
        children: list[Child | RigChild],
    ) -> None:
        """Load, idle and sweep on a box; then the switches, on a box wired to the rig
        (the rig's clients are not in the graph while xruns are counted) unless ``--no-sound``."""
        kind = BOX_KINDS[cell.setup]
        box = await self._start_box(folder, server, env, kind)
        children.append(box)
        port = box.port
        await wait_healthy(box, port)
        remote = await open_remote(port)
        try:
            entries = board_entries(cell.board)
            await self._pedalboards(remote, entries)
            for round_ in range(self.args.loads):
                if round_:
                    await remote.send("PEDALBOARD_LOAD", ("PEDALBOARD_STATE",), name=PEDALBOARDS["empty"])
                    await asyncio.sleep(self.gap)
                took, _ = await remote.send("PEDALBOARD_LOAD", ("PEDALBOARD_STATE",), name=PEDALBOARDS["A"])
                cell.load_ms.append(took * 1000)
                await asyncio.sleep(self.gap if round_ + 1 < self.args.loads else SETTLE + self.spillover)
            chain = await chain_of(port)
            if len(chain) != len(entries):
                cell.problems.append(f"board A plays {len(chain)} plugins, not {len(entries)}")
            await self._idle_and_sweep(cell, port, chain, monitor, None)
            if not self.args.switches or not self.args.sound:
                await self._switches(cell, remote, None)
                return
        finally:
            await remote.close()
        cell.problems.extend(await box.stop())
        children.remove(box)
        rig: Any = None
        tracks = None
        try:
            from tests.rig import Rig

            rig = Rig(server)
            children.append(RigChild(rig))
            await rig.open()
            tracks = [{"id": TRACK, "inputs": list(rig.play_ports), "outputs": list(rig.rec_ports)}]
        except Exception as exc:  # the rig is another engineer's, and may be mid-change
            cell.problems.append(f"no rig ({type(exc).__name__}: {exc}): switches timed to the reply only")
            rig = None
        box = await self._start_box(folder, server, env, kind, tracks)
        children.append(box)
        await wait_healthy(box, box.port)
        remote = await open_remote(box.port)
        try:
            await asyncio.sleep(SETTLE)
            await self._switches(cell, remote, rig)
        finally:
            await remote.close()

    @property
    def gap(self) -> float:
        """Between two switches: the old board rings out (spillover), and a margin."""
        return self.spillover + SWITCH_MARGIN

    async def _pedalboards(self, remote: Remote, entries: list[Entry]) -> None:
        """Build the board on the empty box; save it as A, 20 dB quieter as B, and an empty one."""
        ids = await build(remote, entries)
        await remote.send("PEDALBOARD_SAVE", name=PEDALBOARDS["A"], overwrite=True)
        for plugin_id, entry, quieter in zip(ids, entries, variant_b(self.catalog, entries), strict=True):
            for parameter in B_LEVELS if entry.key == "reverb" else ():
                await remote.send(
                    "PLUGIN_PARAMETER", track_id=TRACK, plugin_id=plugin_id, parameter_id=parameter,
                    parameter_value=quieter.values[parameter],
                )  # fmt: skip
        await remote.send("PEDALBOARD_SAVE", name=PEDALBOARDS["B"], overwrite=True)
        for plugin_id in ids:
            await remote.send("PLUGIN_REMOVE", track_id=TRACK, plugin_id=plugin_id)
        await remote.send("PEDALBOARD_SAVE", name=PEDALBOARDS["empty"], overwrite=True)

    async def _switches(self, cell: Cell, remote: Remote, rig: Any) -> None:
        """Cold (``PEDALBOARD_LOAD``, no setlist) then warm (setlist moves) switches between A
        and B, board A playing at the start; each a take of the rig when there is one."""
        to_b = {"name": PEDALBOARDS["B"]}, B_STEP_DB
        to_a = {"name": PEDALBOARDS["A"]}, -B_STEP_DB
        await remote.send("SETLIST_SET", ("PEDALBOARD_STATE",), entries=[])
        # A as saved (the sweep moved the board's values, and the box saved them)
        await remote.send("PEDALBOARD_LOAD", ("PEDALBOARD_STATE",), **to_a[0])
        for index in range(self.args.switches):
            await asyncio.sleep(self.gap)
            data, step = (to_b, to_a)[index % 2]
            took, heard = await self._switch(cell, remote, rig, "PEDALBOARD_LOAD", data, step)
            cell.cold_ms.append(took)
            if heard is not None:
                cell.cold_heard_ms.append(heard)
        if not self.args.switches:
            return
        await asyncio.sleep(self.gap)
        position = self.args.switches % 2  # the cold switches ended on B when odd
        setlist = [{"pedalboard": PEDALBOARDS["A"]}, {"pedalboard": PEDALBOARDS["B"]}]
        await remote.send("SETLIST_SET", ("PEDALBOARD_STATE",), entries=setlist, position=position)
        await asyncio.sleep(WARM_WAIT)
        for index in range(self.args.switches):
            if index:
                await asyncio.sleep(self.gap)
            on_b = (position + index) % 2 == 1
            move, step = ("SETLIST_PREVIOUS", -B_STEP_DB) if on_b else ("SETLIST_NEXT", B_STEP_DB)
            took, heard = await self._switch(cell, remote, rig, move, {}, step)
            cell.warm_ms.append(took)
            if heard is not None:
                cell.warm_heard_ms.append(heard)

    async def _switch(
        self, cell: Cell, remote: Remote, rig: Any, kind: str, data: dict[str, Any], step_db: float
    ) -> tuple[float, float | None]:
        """One switch: (ms request → reply, ms request → new sound or None).

        With the rig: a tone plays for :data:`TAKE_SECONDS`, the request goes
        :data:`LEAD_SECONDS` into it, and the new board is heard when the
        recording's level is past halfway (in dB) to the new board's, 20 dB
        louder, and stays so for :data:`HEARD_HOLD` frames
        (``hil.rig.analysis.frames_to_level``; the new board's delay and reverb
        filling up stay within that). Only a switch to the louder board is read
        so: on the way down the old board's echoes ring on over the new one
        (spillover), which is the old board heard, not the new one late.
        """
        if rig is None or step_db < 0:
            took, _ = await remote.send(kind, ("PEDALBOARD_STATE",), **data)
            return took * 1000, None
        from hil.rig.analysis import frames_to_level, rms_db
        from hil.rig.signals import sine

        tone = sine(TONE_HZ, round(TAKE_SECONDS * RATE), RATE, TONE_DB)
        marks: list[int] = []
        replied: list[float] = []

        async def action() -> None:
            marks.append(rig.position())
            seconds, _ = await remote.send(kind, ("PEDALBOARD_STATE",), **data)
            replied.append(seconds)

        _, recorded, outcome = await rig.record_during(tone, action, lead_frames=round(LEAD_SECONDS * RATE))
        if isinstance(outcome, BaseException):
            raise outcome
        cell.spoiled_takes += rig.last_take_xruns > 0
        heard_ms = None
        if marks:
            mark, channel = marks[0], recorded[:, 0]
            before = rms_db(channel[max(0, mark - LEVEL_FRAMES) : mark])
            frames = frames_to_level(
                channel, mark, before + step_db, window=LEVEL_WINDOW, tolerance_db=abs(step_db) / 2,
                hold=HEARD_HOLD,
            )  # fmt: skip
            if frames is None:
                cell.problems.append(f"{kind}: the new board was not heard within the take")
            else:
                heard_ms = 1000 * frames / RATE
        return replied[0] * 1000, heard_ms

    async def _other_cell(
        self,
        cell: Cell,
        folder: Path,
        server: str,
        env: dict[str, str],
        monitor: Monitor,
        children: list[Child | RigChild],
    ) -> None:
        entries = board_entries(cell.board if cell.setup != "bare" else "seven")
        if cell.setup == "bare":
            amp = Child(
                "bare jalv",
                ["jalv", "-x", "-n", "bxr-bare", "-c", "gain=0", "http://lv2plug.in/plugins/eg-amp"],
                folder / "jalv.log",
                env,
            )
            children.append(amp)
            await amp.start()
            await wire_bare(env)
            carla = None
        else:
            carla = Child(
                "carla-multi", module_argv("--carla-multi", server), folder / "carla.log", env, True
            )
            children.append(carla)
            await carla.start()
            await self._ready(carla)
            spec = carla_spec(self.catalog, entries)
            for round_ in range(self.args.loads):
                if round_:
                    await carla.ask({"op": "unload"})
                    await asyncio.sleep(MULTI_GAP)
                reply = await carla.ask({"op": "load", "board": spec})
                cell.load_ms.append(float(reply["ms"]))
        control = await self._start_box(folder, server, env, None)
        children.append(control)
        port = control.port
        await wait_healthy(control, port)
        remote = await open_remote(port)
        try:
            await build(remote, entries)
        finally:
            await remote.close()
        await asyncio.sleep(SETTLE)
        chain = await chain_of(port)
        await self._idle_and_sweep(cell, port, chain, monitor, carla, entries)
        if carla is not None:
            specs = [
                carla_spec(self.catalog, variant_b(self.catalog, entries)),
                carla_spec(self.catalog, entries),
            ]
            for index in range(self.args.switches):
                await asyncio.sleep(MULTI_GAP)
                reply = await carla.ask({"op": "load", "board": specs[index % 2]})
                cell.cold_ms.append(float(reply["ms"]))

    async def _idle_and_sweep(
        self,
        cell: Cell,
        port: int,
        chain: list[tuple[str, str]],
        monitor: Monitor,
        carla: Child | None,
        entries: list[Entry] | None = None,
    ) -> None:
        seconds = self.args.seconds
        print(f"    idle {seconds:g} s ...", file=sys.stderr, flush=True)
        await monitor.begin()
        await asyncio.sleep(seconds)
        cell.idle = await monitor.end()
        board = {"tracks": [{"chain": [{"id": pid, "plugin": key} for pid, key in chain]}]}
        controls = sliders(self.catalog, board, CLIENTS)
        if len(controls) < CLIENTS:
            cell.problems.append(f"the board has {len(controls)} continuous controls, not {CLIENTS}")
        print(f"    sweep {seconds:g} s, {len(controls)} clients ...", file=sys.stderr, flush=True)
        clients = [await open_remote(port) for _ in controls]
        try:
            await asyncio.sleep(1.0)  # the welcome replays
            if carla is not None and entries is not None:
                swept = carla_sweep(self.catalog, entries, controls, [pid for pid, _ in chain])
                await carla.ask({"op": "sweep", "controls": swept})
            await monitor.begin()
            start = asyncio.get_running_loop().time() + 0.05
            async with asyncio.TaskGroup() as group:
                drags = [
                    group.create_task(drag(c, s, i, start, seconds))
                    for i, (c, s) in enumerate(zip(clients, controls, strict=True))
                ]
            cell.sweep = await monitor.end()
            cell.changes_sent = sum(task.result() for task in drags)
            if carla is not None:
                cell.swept_in_carla = int((await carla.ask({"op": "sweep", "controls": []}))["swept"])
            errors = sum(c.errors for c in clients)
            if errors:
                cell.problems.append(f"{errors} ERROR replies during the sweep")
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def wire_bare(env: dict[str, str]) -> None:
    """Wait for the bare client's ports, then system:capture_1 → in, out → both playbacks."""
    deadline = time.monotonic() + PORTS_TIMEOUT
    while True:
        proc = await asyncio.create_subprocess_exec(
            "jack_lsp", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env
        )
        out, _ = await proc.communicate()
        ports = out.decode().split()
        if "bxr-bare:in" in ports and "bxr-bare:out" in ports:
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the bare jalv's ports did not appear")
        await asyncio.sleep(0.05)
    for source, destination in (
        ("system:capture_1", "bxr-bare:in"),
        ("bxr-bare:out", "system:playback_1"),
        ("bxr-bare:out", "system:playback_2"),
    ):
        proc = await asyncio.create_subprocess_exec(
            "jack_connect", source, destination, stderr=asyncio.subprocess.DEVNULL, env=env
        )
        if await proc.wait() != 0:
            raise RuntimeError(f"jack_connect {source} {destination} failed")


# ======================================================================================
# The report
# ======================================================================================


def _rate(window: Window | None) -> str:
    """Notices per minute, and bad cycles per minute in brackets."""
    if window is None:
        return "n/a"
    return f"{window.per_minute():,.1f} ({60.0 * window.cycles / window.seconds:,.1f})"


def _dsp(window: Window | None) -> str:
    if window is None or not window.dsp:
        return "n/a"
    return f"{statistics.fmean(window.dsp):.1f} / {max(window.dsp):.1f}"


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f}" if values else "n/a"


def _switch(replied: list[float], heard: list[float]) -> str:
    """``reply / heard`` medians in ms (heard: with the rig)."""
    if not replied:
        return "n/a"
    return _median(replied) + (f" / {_median(heard)}" if heard else "")


def rows(cells: list[Cell]) -> list[list[str]]:
    out = []
    for cell in cells:
        realtime = {True: "", False: " NRT", None: " ?"}[cell.realtime]
        out.append(
            [
                f"{cell.period}{realtime}",
                "—" if cell.setup == "bare" else cell.board,
                cell.setup,
                _rate(cell.idle),
                _rate(cell.sweep),
                _dsp(cell.idle),
                _dsp(cell.sweep),
                _median(cell.load_ms),
                _switch(cell.cold_ms, cell.cold_heard_ms),
                _switch(cell.warm_ms, cell.warm_heard_ms),
                f"{cell.load_avg[0]:.2f}→{cell.load_avg[1]:.2f}",
            ]
        )
    return out


HEADING = [
    "period",
    "board",
    "setup",
    "xruns/min idle (cycles)",
    "xruns/min sweep (cycles)",
    "DSP % idle mean/max",
    "DSP % sweep mean/max",
    "load ms",
    "switch ms reply/heard",
    "warm switch ms reply/heard",
    "load avg",
]


def verdicts(cells: list[Cell]) -> list[str]:
    """Issue 18's goals, for each board measured: rack within 2× bare at 128, 64 usable."""
    lines = []
    bare = {c.period: c for c in cells if c.setup == "bare"}
    for cell in cells:
        if cell.setup != "carla-rack":
            continue
        floor = bare.get(cell.period)
        if cell.period == 128 and floor is not None:
            for phase in ("idle", "sweep"):
                mine, theirs = getattr(cell, phase), getattr(floor, phase)
                if mine is None or theirs is None:
                    continue
                limit = 2 * theirs.per_minute()
                verdict = "PASS" if mine.per_minute() <= limit else "FAIL"
                lines.append(
                    f"  {verdict}  {cell.board}, 128 frames, {phase}: Carla rack {mine.per_minute():.1f}/min "
                    f"within 2× the bare server's {theirs.per_minute():.1f}/min"
                )
        if cell.period == 64 and cell.idle is not None:
            verdict = "PASS" if cell.idle.per_minute() <= 1.0 else "FAIL"
            lines.append(
                f"  {verdict}  {cell.board}, 64 frames usable: Carla rack idle "
                f"{cell.idle.per_minute():.1f}/min (≤ 1/min)"
            )
    return lines or ["  (no Carla rack cell beside a bare one: no verdict)"]


def details(cells: list[Cell]) -> list[str]:
    """Per cell: the xrun notices split as jackd saw them, the sweep, the rig's takes, problems."""
    lines = []
    for cell in cells:
        name = f"  {cell.setup}, {'—' if cell.setup == 'bare' else cell.board}, {cell.period}:"
        parts = []
        for phase in ("idle", "sweep"):
            window: Window | None = getattr(cell, phase)
            if window is None:
                continue
            late = sorted(window.late_clients.items(), key=lambda item: -item[1])
            named = ", ".join(f"{n} {c}" for n, c in late[:4]) + (", …" if len(late) > 4 else "")
            parts.append(
                f"{phase} {window.seconds:.0f} s: {window.xruns} xrun notices in {window.cycles} bad "
                f"cycle(s); jackd: {window.late_wakeups} late wakeup(s), "
                f"{sum(window.late_clients.values())} client(s) not finished"
                + (f" ({named})" if named else "")
            )
        if cell.changes_sent:
            swept = f"; Carla set {cell.swept_in_carla:,} values itself" if cell.swept_in_carla else ""
            parts.append(f"sweep sent {cell.changes_sent:,} changes{swept}")
        for label, replied, heard in (
            ("load", cell.load_ms, []),
            ("switch", cell.cold_ms, cell.cold_heard_ms),
            ("warm switch", cell.warm_ms, cell.warm_heard_ms),
        ):
            if replied:
                text = f"{label} ms, reply: {', '.join(f'{v:,.0f}' for v in replied)}"
                if heard:
                    text += f"; heard: {', '.join(f'{v:,.0f}' for v in heard)}"
                parts.append(text)
        if cell.spoiled_takes:
            parts.append(f"{cell.spoiled_takes} of the rig's takes had an xrun of the server")
        parts.extend(f"PROBLEM: {p}" for p in cell.problems)
        lines.append(name + ("\n      " + "\n      ".join(parts) if parts else " nothing"))
    return lines


def header(args: argparse.Namespace, before: tuple[float, float, float]) -> str:
    seven = " → ".join(key for key, _, _ in SEVEN)
    demo = " → ".join(e.key + (" (bypassed)" if e.bypass else "") for e in board_entries("demo"))
    sound = "with the rig (tests/rig.py) wired to the box" if args.sound else "without the rig"
    return "\n".join(
        [
            "hil.bench_xruns — xruns per minute by chain shape (issue 18), one JACK server at a time",
            f"  host: Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; "
            f"load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f} (1, 5, 15 min)",
            f"  JACK: dummy backend, {RATE} Hz, -R -P 70 (NRT after the period: it fell back to "
            "--no-realtime); nothing else of this run on the server",
            f"  boards: demo = {demo} (config/virtual.yaml); seven = {seven}; bare: one eg-amp at 0 dB",
            f"  windows {args.seconds:g} s idle, then {args.seconds:g} s with {CLIENTS} clients each "
            f"dragging one control at {SLIDER_RATE:g} Hz",
            "  xruns: JACK's xrun notices to a client of its own process, not in the graph (what /healthz "
            "counts; one per client late); (cycles): notices < 2 periods apart counted once",
            f"  DSP: jack_cpu_load every {DSP_INTERVAL:g} s; load: PEDALBOARD_LOAD from an empty board, "
            f"request → reply, median of {args.loads}",
            f"  switch: PEDALBOARD_LOAD between A and B (B 20 dB quieter), {args.switches} each, {sound}: "
            "median request → reply / request → new board heard (to the louder board only)",
            "  warm switch: SETLIST_NEXT/PREVIOUS over [A, B], the other board in warm standby",
            "  tempo: the box is JACK's timebase master (jack_transport, one more client each cycle)"
            if args.transport_master
            else "  tempo: no timebase master (transport_master: false)",
        ]
    )


# ======================================================================================
# Entry point
# ======================================================================================


async def bench_main(args: argparse.Namespace) -> int:
    from appliance.plugins.catalog import Catalog

    before = os.getloadavg()
    started = time.monotonic()
    cells: list[Cell] = []
    counter_logger = logging.getLogger("appliance.engine.jack.server")
    try:
        with contextlib.ExitStack() as stack:
            if args.logs is not None:
                folder = args.logs / time.strftime("bench-xruns-%Y%m%d-%H%M%S")
                await asyncio.to_thread(folder.mkdir, parents=True)
            else:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-xruns-")))
            from tests.boxproc import scan_cache

            cache = await asyncio.to_thread(scan_cache)  # each box's data folder gets a copy
            catalog = await asyncio.to_thread(Catalog.load, ROOT / "config" / "plugins.yaml", cache=cache)
            missing = {e.key for b in args.boards for e in board_entries(b) if catalog.lookup(e.key) is None}
            if missing:
                print(f"NOT AVAILABLE — catalog entries not installed here: {', '.join(sorted(missing))}")
                return 0
            run = Run(args, folder, catalog)
            counter_logger.setLevel(logging.DEBUG)
            counter_logger.propagate = False
            counter_logger.addHandler(run.counter)
            from appliance import config as config_module

            run.spillover = config_module.load(ROOT / "config" / "virtual.yaml").spillover
            plan = []
            for period in args.periods:
                if "bare" in args.setups:
                    plan.append(("bare", "seven", period))
                for board in args.boards:
                    for setup in args.setups:
                        if setup != "bare":
                            plan.append((setup, board, period))
            for number, (setup, board, period) in enumerate(plan, 1):
                why = unavailable(setup)
                if why is not None:
                    cells.append(Cell(setup, board, period, problems=[f"NOT AVAILABLE: {why}"]))
                    continue
                print(
                    f"[{number}/{len(plan)}] {setup}, {board if setup != 'bare' else '—'}, {period} frames "
                    f"(load avg {os.getloadavg()[0]:.2f}) ...",
                    file=sys.stderr,
                    flush=True,
                )
                cells.append(await run.cell(setup, board, period))
    finally:
        counter_logger.handlers = [h for h in counter_logger.handlers if not isinstance(h, JackLogCounter)]
        leftovers = await asyncio.to_thread(jackd_of, server_prefix())
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    after = os.getloadavg()
    print(header(args, before))
    print()
    print(table(HEADING, rows(cells)))
    print()
    print("goals (issue 18)")
    print("\n".join(verdicts(cells)))
    print()
    print("details")
    print("\n".join(details(cells)))
    print()
    print(
        f"load average after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}; run took "
        f"{(time.monotonic() - started) / 60:.1f} min; "
        + (f"jackd left behind, killed: {sorted(leftovers)}" if leftovers else "no jackd left behind")
    )
    return 0


def unavailable(setup: str) -> str | None:
    if shutil.which("jackd") is None or shutil.which("jalv") is None:
        return "jackd or jalv is not installed"
    if setup.startswith("carla"):
        from appliance.engine.carla import install

        return install.unavailable(None)
    return None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_xruns", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="length of the idle and of the sweep window"
    )
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma list of {', '.join(SETUPS)}")
    parser.add_argument("--boards", default=",".join(BOARDS), help="comma list of demo, seven")
    parser.add_argument("--periods", default=",".join(map(str, PERIODS)), help="comma list of frames")
    parser.add_argument("--loads", type=int, default=3, help="board loads per cell (median)")
    parser.add_argument("--switches", type=int, default=4, help="cold and warm switches per cell")
    parser.add_argument(
        "--no-sound", dest="sound", action="store_false", help="time switches without the rig (reply only)"
    )
    parser.add_argument(
        "--transport-master",
        action="store_true",
        help="the boxes put their tempo on JACK's transport (config transport_master: true)",
    )
    parser.add_argument("--logs", type=Path, help="keep every process's log in a new folder under this one")
    parser.add_argument("--monitor", metavar="SERVER", help=argparse.SUPPRESS)
    parser.add_argument("--carla-multi", metavar="SERVER", help=argparse.SUPPRESS)
    parser.add_argument("--control-box", type=Path, metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    args.boards = [b.strip() for b in args.boards.split(",") if b.strip()]
    try:
        args.periods = [int(p) for p in args.periods.split(",") if p.strip()]
    except ValueError:
        parser.error("--periods takes a comma list of frame counts")
    if not args.setups or any(s not in SETUPS for s in args.setups):
        parser.error(f"--setups takes a comma list of {', '.join(SETUPS)}")
    if not args.boards or any(b not in BOARDS for b in args.boards):
        parser.error("--boards takes a comma list of demo, seven")
    if not args.periods or any(p < 16 or p & (p - 1) for p in args.periods):
        parser.error("--periods takes powers of two from 16")
    if not 1 <= args.seconds <= 600 or not 1 <= args.loads <= 10 or not 0 <= args.switches <= 20:
        parser.error("--seconds must be in [1, 600], --loads in [1, 10], --switches in [0, 20]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    if args.monitor:
        return monitor_main(args.monitor)
    if args.carla_multi:
        return carla_multi_main(args.carla_multi)
    if args.control_box:
        return asyncio.run(control_box_main(args.control_box, args.port))

    async def stoppable() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await bench_main(args)
        except asyncio.CancelledError:
            print("benchmark stopped by a signal; every server and process it started is stopped")
            return 1

    return asyncio.run(stoppable())


if __name__ == "__main__":
    sys.exit(main())
