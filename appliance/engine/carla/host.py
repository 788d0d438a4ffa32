"""The Carla host process: ``python -m appliance.engine.carla.host``, started by the box.

It owns one Carla engine in JACK's *multiple clients* mode: every plugin is a
JACK client of its own, chained by JACK connections that the box plans
(:mod:`appliance.engine.wiring`) exactly as for jalv plugins. Carla's own
patchbay graph is never built, so the audio thread never reads a graph that
Carla's background thread is rebuilding (the crash found in patchbay mode:
``CarlaEngineGraph.cpp`` frees the old render sequence under a lock the JACK
process callback does not take). A native crash here, in Carla or in a
plugin, ends this process only; the box restarts it with the board.

Two rules keep Carla's JACK engine from deadlocking with the JACK server
(:meth:`CarlaHost._settle` tells the story): the connections are made here,
on the owner thread, never while a Carla call runs (``wire``); and after a
plugin is added, nothing touches Carla until JACK has taken the change in.

Threads: the main thread is the owner (:class:`~.ownerloop.OwnerLoop`): it
makes every Carla call, serves the pipe and calls ``engine_idle()`` every
:data:`IDLE_INTERVAL`. Carla's engine callback runs on any thread and only
enqueues; the owner drains the queue after every message and every tick.

Carla facts this relies on (measured, see the design field notes): plugin ids
are positions and shift down on removal; in multiple-clients mode a plugin's
JACK client is named as the plugin and is closed at the next ``engine_idle()``
after ``remove_plugin``; ``set_active(False)`` mutes, so bypass is the
plugin's own enable control, else ``set_drywet(0)``, else the box reroutes;
``set_parameter_value`` clamps and sends no callback; after JACK has gone,
``is_engine_running()`` is False and ``engine_idle()`` must not be called.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jack  # type: ignore[import-untyped]

from ...errors import EngineError, PluginLoadFailed, UnknownPlugin
from ..wiring import change_graph
from . import pipe
from .install import BRIDGE_BINARY, CarlaPaths, load_backend
from .ownerloop import OwnerLoop

log = logging.getLogger("appliance.engine.carla.host")

#: Pause between two ``engine_idle()`` calls.
IDLE_INTERVAL = 0.02
#: JACK cycles to let pass before each round trip of :meth:`CarlaHost._settle`.
SETTLE_CYCLES = 2
#: Round trips :meth:`CarlaHost._settle` makes (JACK serves requests and its own
#: notifications in no set order, so one may come before the reorder it waits for).
SETTLE_ROUNDS = 2
#: Longest :meth:`CarlaHost._settle` waits for JACK's cycles to move on.
SETTLE_TIMEOUT = 1.0
#: Seconds the host has, once told to end by SIGTERM, to close Carla before it dies anyway.
CLOSE_DEADLINE = 3


@dataclass(eq=False)
class Hosted:
    """One plugin inside Carla, named by the box's plugin id.

    Attributes:
        params: LV2 symbol → Carla parameter index (input controls only).
        outputs: the same for its output controls (meters, a tuner's readings).
        enable: the enable control's index and its on/off values, if used.
        mode: how it is bypassed: ``enable-port``, ``drywet`` or ``reroute``
            (the box routes around it).
    """

    id: str
    carla_name: str
    params: dict[str, int]
    enable: tuple[int, float, float] | None
    mode: str
    symbols: dict[int, str] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)  # output controls (meters)
    dead: bool = False  # its bridge process ended: told once, removed by the box


class HostStopped(Exception):
    """Carla's engine has stopped: the host process ends."""


class CarlaHost:
    """Carla's engine and the plugins in it. Owner thread only (but for the callback).

    Args:
        paths: the Carla installation.
        client_name: the engine's own JACK client name.
        bridges: run each plugin in a Carla bridge process.
        send: writes a message to the box.
        stop: ends the owner loop (the box asked the host to quit).
    """

    def __init__(
        self,
        paths: CarlaPaths,
        client_name: str,
        bridges: bool,
        send: Callable[[dict[str, Any]], None],
        stop: Callable[[], None],
    ) -> None:
        self.paths = paths
        self.client_name = client_name
        self.bridges = bridges
        self.send = send
        self.stop = stop
        self._b: Any = None
        self._host: Any = None
        self._callbacks: queue.SimpleQueue[tuple[int, int, int, float, str]] = queue.SimpleQueue()
        self._plugins: dict[str, Hosted] = {}
        self._order: list[str] = []  # box plugin ids in Carla's positional order
        self._open = False
        self._last_beat = 0.0
        self._ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "add": self._add,
            "remove": self._remove,
            "set": self._set,
            "bypass": self._bypass,
            "controls": self._controls,
            "values": self._values,
            "reset": self._reset,
            "wire": self._wire,
            "readings": self._readings,
            "ping": lambda message: {},
        }
        self._wiring: Any = None  # a jack.Client that only connects and disconnects

    # -- engine ----------------------------------------------------------------------

    def open(self) -> dict[str, Any]:
        """Start Carla's JACK engine in multiple-clients mode.

        Raises:
            EngineError: Carla does not import or its engine does not start.
        """
        b = self._b = load_backend(self.paths)
        host = self._host = b.CarlaHostDLL(str(self.paths.library), False)
        host.set_engine_callback(self._on_callback)
        host.set_engine_option(b.ENGINE_OPTION_PROCESS_MODE, b.ENGINE_PROCESS_MODE_MULTIPLE_CLIENTS, "")
        host.set_engine_option(b.ENGINE_OPTION_TRANSPORT_MODE, b.ENGINE_TRANSPORT_MODE_INTERNAL, "")
        host.set_engine_option(b.ENGINE_OPTION_PATH_BINARIES, 0, str(self.paths.lib_dir))
        if self.paths.resources.is_dir():
            host.set_engine_option(b.ENGINE_OPTION_PATH_RESOURCES, 0, str(self.paths.resources))
        host.set_engine_option(b.ENGINE_OPTION_PREFER_PLUGIN_BRIDGES, int(self.bridges), "")
        host.set_engine_option(b.ENGINE_OPTION_PREFER_UI_BRIDGES, 0, "")
        # Carla's own OSC control listens on every interface with no authentication:
        # off, so that the box's token and origin checks are the only way in.
        host.set_engine_option(b.ENGINE_OPTION_OSC_ENABLED, 0, "")
        host.set_engine_option(b.ENGINE_OPTION_OSC_PORT_TCP, -1, "")
        host.set_engine_option(b.ENGINE_OPTION_OSC_PORT_UDP, -1, "")
        if self.bridges and not (self.paths.lib_dir / BRIDGE_BINARY).is_file():
            raise EngineError(f"bridges are on but there is no {BRIDGE_BINARY} in {self.paths.lib_dir}")
        if not host.engine_init("JACK", self.client_name):
            raise EngineError(f"Carla's JACK engine did not start: {host.get_last_error()}")
        self._open = True
        self._drain()
        self._wiring = jack.Client(f"{self.client_name}-wire", no_start_server=True)
        return {"sample_rate": int(host.get_sample_rate()), "buffer_size": int(host.get_buffer_size())}

    def close(self) -> None:
        """Remove every plugin and close the engine."""
        host = self._host
        if host is None or not self._open:
            return
        self._open = False
        if self._wiring is not None:
            self._wiring.close()
            self._wiring = None
        host.set_engine_about_to_close()
        if host.is_engine_running():
            host.remove_all_plugins()
        if not host.engine_close():
            log.warning("engine_close failed: %s", host.get_last_error())

    def handle(self, message: dict[str, Any]) -> None:
        """One message from the box; requests are answered."""
        op = message.get("op")
        request_id = message.get("id")
        if op == "quit":
            self.stop()
            return
        handler = self._ops.get(str(op))
        try:
            if handler is None:
                raise EngineError(f"unknown op {op!r}")
            result = handler(message)
        except Exception as exc:
            if request_id is not None:
                self.send(pipe.error_reply(request_id, exc))
            else:
                log.warning("%s failed: %s", op, exc)
        else:
            if request_id is not None:
                self.send({"id": request_id, "ok": result})
        self._drain()

    def idle(self) -> None:
        """One tick: callbacks, ``engine_idle()``, the heartbeat.

        Raises:
            HostStopped: Carla's engine is no longer running (JACK has gone).
        """
        host = self._host
        self._drain()
        if not host.is_engine_running():
            raise HostStopped("Carla's engine stopped (JACK has gone?)")
        host.engine_idle()
        self._drain()
        now = time.monotonic()
        if now - self._last_beat >= pipe.HEARTBEAT_INTERVAL:
            self._last_beat = now
            runtime = host.get_runtime_engine_info()
            self.send({"event": "info", "load": float(runtime["load"]), "xruns": int(runtime["xruns"])})

    # -- plugins ---------------------------------------------------------------------

    def _carla_id(self, plugin_id: object) -> int:
        """The plugin's positional id in Carla now."""
        if not isinstance(plugin_id, str) or plugin_id not in self._plugins:
            raise UnknownPlugin(f"no plugin {plugin_id!r}")
        return self._order.index(plugin_id)

    def _hosted(self, plugin_id: object) -> Hosted:
        self._carla_id(plugin_id)
        assert isinstance(plugin_id, str)
        return self._plugins[plugin_id]

    def _add(self, message: dict[str, Any]) -> dict[str, Any]:
        """Load an LV2 plugin as JACK client ``client`` with values and bypass."""
        b, host = self._b, self._host
        plugin_id, uri, client = str(message["plugin"]), str(message["uri"]), str(message["client"])
        if plugin_id in self._plugins:
            raise PluginLoadFailed(f"plugin id {plugin_id!r} is already in use")
        carla_id = host.get_current_plugin_count()
        if not host.add_plugin(b.BINARY_NATIVE, b.PLUGIN_LV2, "", client, uri, 0, None, 0):
            raise PluginLoadFailed(f"{uri}: {host.get_last_error()}")
        if host.get_current_plugin_count() != carla_id + 1:
            raise PluginLoadFailed(f"{uri}: Carla reported success but holds no new plugin")
        info = host.get_plugin_info(carla_id)
        params: dict[str, int] = {}
        outputs: dict[str, int] = {}
        for index in range(host.get_parameter_count(carla_id)):
            kind = host.get_parameter_data(carla_id, index)["type"]
            symbol = host.get_parameter_info(carla_id, index)["symbol"]
            if symbol and kind == b.PARAMETER_INPUT:
                params[symbol] = index
            elif symbol and kind == b.PARAMETER_OUTPUT:
                outputs[symbol] = index
        enable = None
        wanted = message.get("enable")
        if isinstance(wanted, dict) and wanted.get("symbol") in params:
            enable = (params[wanted["symbol"]], float(wanted["on"]), float(wanted["off"]))
        hints = int(info["hints"])
        can_drywet = bool(hints & b.PLUGIN_CAN_DRYWET) and not hints & b.PLUGIN_IS_BRIDGE
        mode = "enable-port" if enable is not None else "drywet" if can_drywet else "reroute"
        symbols = {i: s for s, i in params.items()}
        hosted = Hosted(plugin_id, str(info["name"]), params, enable, mode, symbols, outputs)
        self._plugins[plugin_id] = hosted
        self._order.append(plugin_id)
        try:
            self._write(hosted, carla_id, message.get("values") or {})
            self._apply_bypass(hosted, carla_id, bool(message.get("bypass")))
        except Exception:
            self._remove({"plugin": plugin_id})
            raise
        self._settle()
        ports = host.get_audio_port_count_info(carla_id)
        return {"client": hosted.carla_name, "bypass": mode, "inputs": ports["ins"], "outputs": ports["outs"]}

    def _remove(self, message: dict[str, Any]) -> dict[str, Any]:
        """Remove the plugin; its JACK client is closed when this returns."""
        plugin_id = message.get("plugin")
        carla_id = self._carla_id(plugin_id)
        if not self._host.remove_plugin(carla_id):
            raise EngineError(f"remove_plugin({carla_id}) failed: {self._host.get_last_error()}")
        assert isinstance(plugin_id, str)
        del self._plugins[plugin_id]
        self._order.pop(carla_id)
        self._host.engine_idle()  # closes the plugin's JACK client now, not at the next tick
        return {}

    def _set(self, message: dict[str, Any]) -> None:
        hosted = self._hosted(message.get("plugin"))
        self._write(hosted, self._carla_id(hosted.id), message.get("values") or {})

    def _readings(self, message: dict[str, Any]) -> None:
        """Send the output controls of the plugins named (a ``readings`` event)."""
        readings: dict[str, dict[str, float]] = {}
        for plugin_id in message.get("plugins") or []:
            hosted = self._plugins.get(plugin_id) if isinstance(plugin_id, str) else None
            if hosted is None or not hosted.outputs:
                continue
            carla_id = self._order.index(hosted.id)
            readings[hosted.id] = {
                symbol: float(self._host.get_current_parameter_value(carla_id, index))
                for symbol, index in hosted.outputs.items()
            }
        if readings:
            self.send({"event": "readings", "values": readings})

    def _bypass(self, message: dict[str, Any]) -> None:
        hosted = self._hosted(message.get("plugin"))
        self._apply_bypass(hosted, self._carla_id(hosted.id), bool(message.get("bypass")))

    def _write(self, hosted: Hosted, carla_id: int, values: dict[str, Any]) -> None:
        """``set_parameter_value`` by symbol; Carla clamps. Unknown symbols are skipped."""
        for symbol, value in values.items():
            index = hosted.params.get(symbol)
            if index is None or (hosted.enable is not None and index == hosted.enable[0]):
                continue
            self._host.set_parameter_value(carla_id, index, float(value))

    def _apply_bypass(self, hosted: Hosted, carla_id: int, bypass: bool) -> None:
        if hosted.enable is not None:
            index, on, off = hosted.enable
            self._host.set_parameter_value(carla_id, index, off if bypass else on)
        elif hosted.mode == "drywet":
            self._host.set_drywet(carla_id, 0.0 if bypass else 1.0)

    def _settle(self) -> None:
        """Wait, holding nothing of Carla's, until JACK has taken in the last graph change.

        Why: Carla holds ``fThreadSafeMetadataMutex`` during some of its JACK
        server requests (setting port metadata, and in ``engine_idle()`` when
        it handles new ports), and its main client's port-registration
        callback takes the same mutex on JACK's notification thread. JACK2
        tells every client of a graph change with a *synchronous* latency
        notification, some cycles after the change. If that notification
        reaches Carla's main client while its notification thread waits for
        the mutex, and the mutex holder waits for the server, all three wait
        for JACK's ~8 s timeout (measured: ~1 in 30 board loads; the audio
        plays on, but no message reaches a plugin meanwhile).

        A plugin's ports are registered, and its client activated, inside
        ``add_plugin``. Before the next Carla call, this lets JACK run its
        cycles and answers a round trip from our own client, which holds no
        Carla lock: the server has then sent, and Carla's main client
        answered, every notification the add caused.
        """
        client = self._wiring
        period = max(1, int(client.blocksize))
        for _ in range(SETTLE_ROUNDS):
            start = client.last_frame_time
            deadline = time.monotonic() + SETTLE_TIMEOUT
            while (client.last_frame_time - start) % (1 << 32) < SETTLE_CYCLES * period:
                if time.monotonic() > deadline:
                    break
                time.sleep(period / max(1, int(client.samplerate)) / 2)
            client.get_uuid_for_client_name(client.name)

    def _wire(self, message: dict[str, Any]) -> list[str]:
        """Make and undo JACK connections the box planned, here on the owner thread.

        Never from another thread while a Carla call may run: Carla holds its
        ``fThreadSafeMetadataMutex`` during some JACK server requests, and its
        main client's port-registration callback takes the same mutex on
        JACK's notification thread. A graph change made by anyone else at
        that moment has the server wait (every client gets a synchronous
        latency notification) for that blocked thread: the server, Carla and
        the box then all wait about 8 s for JACK's timeout (measured). Made
        from this thread, a connection never overlaps a Carla call.
        """
        connect = [(str(a), str(b)) for a, b in message.get("connect", [])]
        disconnect = [(str(a), str(b)) for a, b in message.get("disconnect", [])]
        return change_graph(self._wiring, connect, disconnect)

    def _controls(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Carla's own description of every input control (for plugins without LV2 data)."""
        b, host = self._b, self._host
        hosted = self._hosted(message.get("plugin"))
        carla_id = self._carla_id(hosted.id)
        controls = []
        for symbol, index in hosted.params.items():
            info = host.get_parameter_info(carla_id, index)
            hints = host.get_parameter_data(carla_id, index)["hints"]
            ranges = host.get_parameter_ranges(carla_id, index)
            points = (
                host.get_parameter_scalepoint_info(carla_id, index, i) for i in range(info["scalePointCount"])
            )
            labels = [[float(point["value"]), str(point["label"])] for point in points]
            kind = "float"
            if hints & b.PARAMETER_IS_BOOLEAN:
                kind = "toggle"
            elif hints & b.PARAMETER_USES_SCALEPOINTS and labels:
                kind = "enum"
            elif hints & b.PARAMETER_IS_INTEGER:
                kind = "integer"
            controls.append(
                {
                    "symbol": symbol,
                    "name": str(info["name"]),
                    "minimum": float(ranges["min"]),
                    "maximum": float(ranges["max"]),
                    "default": float(ranges["def"]),
                    "unit": str(info["unit"]).strip(),
                    "kind": kind,
                    "labels": labels if kind == "enum" else [],
                    "logarithmic": bool(hints & b.PARAMETER_IS_LOGARITHMIC),
                }
            )
        return controls

    def _values(self, message: dict[str, Any]) -> dict[str, float]:
        hosted = self._hosted(message.get("plugin"))
        carla_id = self._carla_id(hosted.id)
        read = self._host.get_current_parameter_value
        return {symbol: float(read(carla_id, index)) for symbol, index in hosted.params.items()}

    def _reset(self, message: dict[str, Any]) -> dict[str, Any]:
        """Carla resets the plugin's controls itself (its changes come back as events)."""
        hosted = self._hosted(message.get("plugin"))
        self._host.reset_parameters(self._carla_id(hosted.id))
        return {}

    # -- callbacks -------------------------------------------------------------------

    def _on_callback(
        self,
        handle: Any,
        action: int,
        plugin_id: int,
        value1: int,
        value2: int,
        value3: int,
        valuef: float,
        value_str: bytes | None,
    ) -> None:
        """Carla's engine callback: any thread; only enqueues."""
        text = value_str.decode("utf-8", "replace") if value_str else ""
        self._callbacks.put((action, plugin_id, value1, valuef, text))

    def _drain(self) -> None:
        """Act on every queued callback. Owner thread."""
        b = self._b
        changed: dict[str, dict[str, float]] = {}
        while True:
            try:
                action, carla_id, value1, valuef, text = self._callbacks.get_nowait()
            except queue.Empty:
                break
            if action == b.ENGINE_CALLBACK_PARAMETER_VALUE_CHANGED and value1 >= 0:
                hosted = self._at(carla_id)
                symbol = hosted.symbols.get(value1) if hosted else None
                if (
                    hosted is not None
                    and symbol is not None
                    and (hosted.enable is None or value1 != hosted.enable[0])
                ):
                    changed.setdefault(hosted.id, {})[symbol] = float(valuef)
            elif action == b.ENGINE_CALLBACK_PLUGIN_UNAVAILABLE:
                self._died(self._at(carla_id), text or "unavailable")
            elif action == b.ENGINE_CALLBACK_PARAMETER_VALUE_CHANGED and value1 == b.PARAMETER_ACTIVE:
                # Carla deactivates a bridged plugin whose process ended (a crash, a kill);
                # the box never deactivates one itself (set_active(False) mutes).
                if self.bridges and valuef == 0.0:
                    self._died(self._at(carla_id), "its bridge process ended")
            elif action == b.ENGINE_CALLBACK_ERROR:
                log.error("carla: %s", text)
            elif action in (b.ENGINE_CALLBACK_ENGINE_STOPPED, b.ENGINE_CALLBACK_QUIT) and self._open:
                raise HostStopped(text or "Carla's engine stopped")
        for plugin_id, values in changed.items():
            self.send({"event": "parameter", "plugin": plugin_id, "values": values})

    def _died(self, hosted: Hosted | None, why: str) -> None:
        """Tell the box once that a plugin stopped working; the box removes and reloads it."""
        if hosted is not None and not hosted.dead:
            hosted.dead = True
            self.send({"event": "plugin-died", "plugin": hosted.id, "message": why})

    def _at(self, carla_id: int) -> Hosted | None:
        if 0 <= carla_id < len(self._order):
            return self._plugins[self._order[carla_id]]
        return None


def _end_soon(owner: OwnerLoop) -> None:
    """SIGTERM: the box has died (``setpriv --pdeathsig``) or gives up on us.

    The owner loop ends and Carla closes its engine, so that every plugin's
    JACK client leaves the graph before the process exits. Dying at once
    would leave them all in JACK's graph, each failing every cycle until the
    server notices; JACK 1.9.21 was seen to wedge for good under that storm
    of xrun notices (its own notice socket overflows mid-message), and then
    no box could come back. SIGALRM's default action ends the process if
    the close itself hangs.
    """
    owner.stop()
    signal.alarm(CLOSE_DEADLINE)


def main(argv: list[str] | None = None) -> int:
    """Run the host until the box closes the pipe or Carla's engine stops."""
    parser = argparse.ArgumentParser(prog="appliance.engine.carla.host")
    parser.add_argument("--lib-dir", type=Path, required=True)
    parser.add_argument("--share-dir", type=Path, required=True)
    parser.add_argument("--client", required=True, help="the engine's JACK client name")
    parser.add_argument("--fd", type=int, required=True, help="this process's end of the box's socket")
    parser.add_argument("--bridges", action="store_true")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    sock = socket.socket(fileno=args.fd)
    owner: OwnerLoop | None = None

    def send(message: dict[str, Any]) -> None:
        assert owner is not None
        owner.send(message)

    def stop() -> None:
        assert owner is not None
        owner.stop()

    host = CarlaHost(CarlaPaths(args.lib_dir, args.share_dir), args.client, args.bridges, send, stop)
    owner = OwnerLoop(sock, host.handle, host.idle, IDLE_INTERVAL)
    signal.signal(signal.SIGTERM, lambda signum, frame: _end_soon(owner))
    try:
        ready = host.open()
    except EngineError as exc:
        owner.send({"event": "stopped", "message": str(exc)})
        return 1
    owner.send({"event": "ready", **ready})
    code = 0
    try:
        owner.run()
    except HostStopped as exc:
        log.error("%s", exc)
        owner.send({"event": "stopped", "message": str(exc)})
        code = 1
    finally:
        host.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
