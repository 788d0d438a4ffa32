"""The Carla host process: ``python -m appliance.engine.carla.host``, started by the box.

It owns one Carla engine in **rack mode** (``ENGINE_PROCESS_MODE_CONTINUOUS_RACK``):
one JACK client with a stereo in and out, and every plugin of one chain in
series inside its one process callback::

    box wiring ─▶ CLIENT:audio-in1/2 ─▶ [meter] [tuner] [head fader] plugins… [tail fader] [meter]
                                                                   ─▶ CLIENT:audio-out1/2 ─▶ box wiring

One JACK wakeup per period for the whole chain, whatever its length (each
client more in a serial chain is one more wakeup that can come late), and no
patchbay graph (the race that crashed Carla's patchbay mode does not exist
here). A native crash here, in Carla or a plugin, ends this process only; the
box starts a new one with the chain.

What Carla does with a rack, read in its source (``CarlaEngineGraph.cpp``
``RackGraph::process``, ``CarlaEngine.cpp``, ``CarlaEngineInternal.cpp``):

* Every plugin gets the previous one's two outputs; extra inputs (a
  side-chain) get silence; a mono plugin runs twice (forced stereo); a
  plugin Carla skips (disabled, or busy) passes the signal on untouched.
* ``remove_plugin`` and ``switch_plugins`` are posted to the audio thread and
  done between two cycles (``doNextPluginAction``); the call returns once
  done. A removed plugin is deleted later, off the audio thread.
* ``add_plugin`` instantiates off the audio thread and appends the plugin
  (the slot is filled before the count grows). It is then inactive until
  ``setActive`` a few microseconds later: a cycle that falls in between
  hears that plugin silent (never seen in 260 adds while playing, measured).
* ``set_active(False)`` mutes a plugin and runs none of its DSP (a warm
  standby host waits so); ``set_drywet(0)`` passes the input through and
  ``set_parameter_value`` lands at the next cycle: neither takes a lock.

Bypass is the plugin's own enable control, else Carla's dry/wet (the box
ramps it), else the plugin leaves the rack while bypassed (``absent``) and
comes back at its place. A plugin that moves is dry while it passes its
neighbours, so no order between the old and the new is ever heard.

Threads: the main thread is the owner (:class:`~.ownerloop.OwnerLoop`): it
makes every Carla call, serves the pipe and calls ``engine_idle()`` every
:data:`IDLE_INTERVAL`. Carla's engine callback runs on any thread and only
enqueues; the owner drains the queue after every message and every tick.

Plugins are named by *host ids* the box chooses (``p3``, ``head``...);
Carla's own ids are positions and shift on every add, remove and move.
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

from ...core.errors import EngineError, PluginLoadFailed, UnknownPlugin
from . import pipe
from .install import BRIDGE_BINARY, CarlaPaths, load_backend
from .ownerloop import OwnerLoop

log = logging.getLogger("appliance.engine.carla.host")

#: Pause between two ``engine_idle()`` calls.
IDLE_INTERVAL = 0.02
#: Seconds the host has, once told to end by SIGTERM, to close Carla before it dies anyway.
CLOSE_DEADLINE = 3
#: Carla's custom-data type for a plugin's file (CarlaBackend.h; not in carla_backend.py): its
#: key ``file`` sets the plugin's first ``atom:Path`` parameter.
CUSTOM_DATA_TYPE_PATH = "http://kxstudio.sf.net/ns/carla/path"
#: The rack client's audio ports (Carla's names), after ``CLIENT:``.
RACK_INPUTS = ("audio-in1", "audio-in2")
RACK_OUTPUTS = ("audio-out1", "audio-out2")


@dataclass(eq=False)
class Hosted:
    """One plugin of the chain, named by its host id.

    Attributes:
        params: LV2 symbol → Carla parameter index (input controls only).
        outputs: the same for its output controls (meters, a tuner's readings).
        enable: the enable control's index and its on/off values, if used.
        mode: how it is bypassed: ``enable-port``, ``drywet`` or ``absent``
            (out of the rack while bypassed).
        present: in Carla's rack now (an ``absent`` plugin that is bypassed is not).
        values: every value written, for a plugin that comes back.
        files: the file it loads (Carla sets one per plugin: its first
            ``atom:Path`` parameter), by parameter URI → path, likewise.
    """

    id: str
    uri: str
    params: dict[str, int]
    outputs: dict[str, int]
    enable: tuple[int, float, float] | None
    mode: str
    bypass: bool = False
    present: bool = True
    values: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    symbols: dict[int, str] = field(default_factory=dict)
    dead: bool = False


class HostStopped(Exception):
    """Carla's engine has stopped: the host process ends."""


class CarlaHost:
    """Carla's rack engine and the chain in it. Owner thread only (but for the callback).

    Args:
        paths: the Carla installation.
        client_name: the rack's JACK client name.
        bridges: run each plugin in a Carla bridge process.
        send: writes a message to the box.
        jack_transport: follow JACK's transport (the box's tempo, when it is the timebase
            master), else Carla's own (stopped, 120 BPM).
        stop: ends the owner loop (the box asked the host to quit).
    """

    def __init__(
        self,
        paths: CarlaPaths,
        client_name: str,
        bridges: bool,
        send: Callable[[dict[str, Any]], None],
        stop: Callable[[], None],
        jack_transport: bool = False,
    ) -> None:
        self.paths = paths
        self.client_name = client_name
        self.bridges = bridges
        self.jack_transport = jack_transport
        self.send = send
        self.stop = stop
        self._b: Any = None
        self._host: Any = None
        self._callbacks: queue.SimpleQueue[tuple[int, int, int, float, str]] = queue.SimpleQueue()
        self._plugins: dict[str, Hosted] = {}
        self._sequence: list[str] = []  # the chain the box wants, absent plugins included
        self._order: list[str] = []  # what is in Carla's rack, in Carla's positional order
        self._active = True  # False: a warm standby, no plugin runs its DSP
        self._open = False
        self._last_beat = 0.0
        self._ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "add": self._add,
            "remove": self._remove,
            "move": self._move,
            "set": self._set,
            "file": self._file,
            "bypass": self._bypass,
            "drywet": self._drywet,
            "activate": self._activate,
            "controls": self._controls,
            "values": self._values,
            "reset": self._reset,
            "readings": self._readings,
            "tempo": self._tempo,
            "ping": lambda message: {},
        }

    # -- engine ----------------------------------------------------------------------

    def open(self) -> dict[str, Any]:
        """Start Carla's JACK engine in rack mode.

        Returns:
            The rate, the period and the rack's JACK ports (full names).

        Raises:
            EngineError: Carla does not import or its engine does not start.
        """
        b = self._b = load_backend(self.paths)
        host = self._host = b.CarlaHostDLL(str(self.paths.library), False)
        host.set_engine_callback(self._on_callback)
        host.set_engine_option(b.ENGINE_OPTION_PROCESS_MODE, b.ENGINE_PROCESS_MODE_CONTINUOUS_RACK, "")
        # JACK's transport when the box is its timebase master (engine.jack.tempo): the box's
        # tempo reaches every plugin that follows it.
        mode = b.ENGINE_TRANSPORT_MODE_JACK if self.jack_transport else b.ENGINE_TRANSPORT_MODE_INTERNAL
        host.set_engine_option(b.ENGINE_OPTION_TRANSPORT_MODE, mode, "")
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
        return {
            "sample_rate": int(host.get_sample_rate()),
            "buffer_size": int(host.get_buffer_size()),
            "inputs": [f"{self.client_name}:{port}" for port in RACK_INPUTS],
            "outputs": [f"{self.client_name}:{port}" for port in RACK_OUTPUTS],
        }

    def close(self) -> None:
        """Remove every plugin and close the engine: the rack's client leaves JACK's graph."""
        host = self._host
        if host is None or not self._open:
            return
        self._open = False
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

    # -- the chain -------------------------------------------------------------------

    def _hosted(self, plugin_id: object) -> Hosted:
        if not isinstance(plugin_id, str) or plugin_id not in self._plugins:
            raise UnknownPlugin(f"no plugin {plugin_id!r}")
        return self._plugins[plugin_id]

    def _carla_id(self, hosted: Hosted) -> int:
        """The plugin's positional id in Carla now (it must be present)."""
        return self._order.index(hosted.id)

    def _slot_before(self, before: object) -> int:
        """Where in the sequence a plugin goes: before ``before`` (a host id), or at the end."""
        if before is None:
            return len(self._sequence)
        if not isinstance(before, str) or before not in self._sequence:
            raise UnknownPlugin(f"no plugin {before!r} to go before")
        return self._sequence.index(before)

    def _rack_position(self, plugin_id: str) -> int:
        """Where a plugin belongs in Carla's rack: after every present plugin before it."""
        index = self._sequence.index(plugin_id)
        return sum(1 for other in self._sequence[:index] if self._plugins[other].present)

    def _add(self, message: dict[str, Any]) -> dict[str, Any]:
        """Load an LV2 plugin into the chain before ``before`` (None: at the end).

        With ``preroll``, a plugin that can be dry enters dry and stays so
        until the box sends its bypass: it runs with its values meanwhile.
        """
        b, host = self._b, self._host
        plugin_id, uri = str(message["plugin"]), str(message["uri"])
        if plugin_id in self._plugins:
            raise PluginLoadFailed(f"plugin id {plugin_id!r} is already in use")
        slot = self._slot_before(message.get("before"))
        carla_id = self._load(plugin_id, uri)
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
        mode = "enable-port" if enable is not None else "drywet" if can_drywet else "absent"
        bypass = bool(message.get("bypass"))
        hosted = Hosted(plugin_id, uri, params, outputs, enable, mode, bypass=bypass)
        hosted.symbols = {i: s for s, i in params.items()}
        self._plugins[plugin_id] = hosted
        self._sequence.insert(slot, plugin_id)
        self._order.append(plugin_id)
        try:
            dry = bypass or (bool(message.get("preroll")) and mode != "absent")
            self._dry(hosted, dry)  # first: from now on a move or a pre-roll is never heard
            self._write(hosted, message.get("values") or {})
            self._load_files(hosted, message.get("files") or {})
            if not self._active:
                host.set_active(carla_id, False)
            if mode == "absent" and bypass:
                self._take_out(hosted)
            else:
                self._shift(hosted, self._rack_position(plugin_id))
        except Exception:
            self._forget(hosted)
            raise
        ports = host.get_audio_port_count_info(self._carla_id(hosted)) if hosted.present else None
        return {
            "bypass": mode,
            "inputs": int(ports["ins"]) if ports else 0,
            "outputs": int(ports["outs"]) if ports else 0,
        }

    def _load(self, name: str, uri: str) -> int:
        """``add_plugin`` at the end of the rack; Carla's id of the new plugin."""
        b, host = self._b, self._host
        carla_id = int(host.get_current_plugin_count())
        if not host.add_plugin(b.BINARY_NATIVE, b.PLUGIN_LV2, "", name, uri, 0, None, 0):
            raise PluginLoadFailed(f"{uri}: {host.get_last_error()}")
        if host.get_current_plugin_count() != carla_id + 1:
            raise PluginLoadFailed(f"{uri}: Carla reported success but holds no new plugin")
        return carla_id

    def _forget(self, hosted: Hosted) -> None:
        """Take a plugin out of Carla (if present) and out of the chain."""
        if hosted.present and hosted.id in self._order:
            self._unload(hosted)
        self._plugins.pop(hosted.id, None)
        if hosted.id in self._sequence:
            self._sequence.remove(hosted.id)

    def _unload(self, hosted: Hosted) -> None:
        """``remove_plugin``: done by the audio thread between two cycles."""
        carla_id = self._carla_id(hosted)
        if not self._host.remove_plugin(carla_id):
            raise EngineError(f"remove_plugin({carla_id}) failed: {self._host.get_last_error()}")
        self._order.pop(carla_id)

    def _remove(self, message: dict[str, Any]) -> dict[str, Any]:
        """Take the plugin out of the chain; the chain closes up around it at once."""
        self._forget(self._hosted(message.get("plugin")))
        return {}

    def _move(self, message: dict[str, Any]) -> dict[str, Any]:
        """Move a plugin before ``before`` (None: to the end), dry while it passes the others."""
        hosted = self._hosted(message.get("plugin"))
        self._sequence.remove(hosted.id)
        self._sequence.insert(self._slot_before(message.get("before")), hosted.id)
        if hosted.present:
            target = self._rack_position(hosted.id)
            if target != self._carla_id(hosted):
                wet = not hosted.bypass and hosted.mode != "absent"
                if wet:
                    self._dry(hosted, True)
                self._shift(hosted, target)
                if wet:
                    self._dry(hosted, False)
        return {}

    def _shift(self, hosted: Hosted, target: int) -> None:
        """Walk a present plugin to rack position ``target``, one neighbour at a time.

        Each ``switch_plugins`` is done by the audio thread between two cycles.
        """
        current = self._carla_id(hosted)
        step = 1 if target > current else -1
        while current != target:
            other = current + step
            if not self._host.switch_plugins(current, other):
                raise EngineError(f"switch_plugins({current}, {other}) failed: {self._host.get_last_error()}")
            self._order[current], self._order[other] = self._order[other], self._order[current]
            current = other

    def _take_out(self, hosted: Hosted) -> None:
        """An ``absent`` plugin bypassed: out of the rack (the chain closes up)."""
        if hosted.present:
            self._unload(hosted)
            hosted.present = False

    def _put_back(self, hosted: Hosted) -> None:
        """An ``absent`` plugin un-bypassed: loaded again at its place, with its values."""
        if hosted.present:
            return
        carla_id = self._load(hosted.id, hosted.uri)
        self._order.append(hosted.id)
        hosted.present = True
        for symbol, value in hosted.values.items():
            index = hosted.params.get(symbol)
            if index is not None:
                self._host.set_parameter_value(carla_id, index, float(value))
        self._load_files(hosted, dict(hosted.files))
        if not self._active:
            self._host.set_active(carla_id, False)
        self._shift(hosted, self._rack_position(hosted.id))

    def _set(self, message: dict[str, Any]) -> None:
        self._write(self._hosted(message.get("plugin")), message.get("values") or {})

    def _file(self, message: dict[str, Any]) -> None:
        self._load_files(self._hosted(message.get("plugin")), {str(message["uri"]): str(message["path"])})

    def _load_files(self, hosted: Hosted, files: dict[str, Any]) -> None:
        """Hand the plugin its file: Carla sends it a ``patch:Set`` of its path parameter
        in the next cycle, and the plugin loads it in its worker thread, playing on meanwhile."""
        for uri, path in files.items():
            hosted.files[str(uri)] = str(path)
            if hosted.present:
                self._host.set_custom_data(self._carla_id(hosted), CUSTOM_DATA_TYPE_PATH, "file", str(path))

    def _write(self, hosted: Hosted, values: dict[str, Any]) -> None:
        """``set_parameter_value`` by symbol; Carla clamps. Unknown symbols are skipped."""
        present = hosted.present
        carla_id = self._carla_id(hosted) if present else -1
        for symbol, value in values.items():
            index = hosted.params.get(symbol)
            if index is None or (hosted.enable is not None and index == hosted.enable[0]):
                continue
            hosted.values[symbol] = float(value)
            if present:
                self._host.set_parameter_value(carla_id, index, float(value))

    def _bypass(self, message: dict[str, Any]) -> None:
        """Bypass as the plugin allows (a dry/wet plugin is ramped by the box: ``drywet``)."""
        hosted = self._hosted(message.get("plugin"))
        hosted.bypass = bool(message.get("bypass"))
        if hosted.mode == "absent":
            if hosted.bypass:
                self._take_out(hosted)
            else:
                self._put_back(hosted)
        else:
            self._dry(hosted, hosted.bypass)

    def _drywet(self, message: dict[str, Any]) -> None:
        """One step of a bypass ramp (dry/wet plugins only)."""
        hosted = self._hosted(message.get("plugin"))
        if hosted.mode == "drywet" and hosted.present:
            self._host.set_drywet(self._carla_id(hosted), float(message.get("value", 1.0)))

    def _tempo(self, message: dict[str, Any]) -> None:
        """The box's tempo on Carla's own transport, which every plugin that follows its host's
        tempo reads each cycle (no JACK client more). Following JACK's transport, Carla takes
        the tempo from the box's timebase master instead: nothing to do."""
        if not self.jack_transport:
            self._host.transport_bpm(float(message["bpm"]))

    def _dry(self, hosted: Hosted, dry: bool) -> None:
        """Dry (passing its input) or wet, by its enable control or dry/wet; nothing for ``absent``."""
        if not hosted.present:
            return
        carla_id = self._carla_id(hosted)
        if hosted.enable is not None:
            index, on, off = hosted.enable
            self._host.set_parameter_value(carla_id, index, off if dry else on)
        elif hosted.mode == "drywet":
            self._host.set_drywet(carla_id, 0.0 if dry else 1.0)

    def _activate(self, message: dict[str, Any]) -> dict[str, Any]:
        """``active`` False: no plugin runs (a warm standby, no DSP); True: all run again."""
        self._active = bool(message.get("active"))
        for carla_id in range(len(self._order)):
            self._host.set_active(carla_id, self._active)
        return {}

    def _readings(self, message: dict[str, Any]) -> None:
        """Send the output controls of the plugins named (a ``readings`` event)."""
        readings: dict[str, dict[str, float]] = {}
        for plugin_id in message.get("plugins") or []:
            hosted = self._plugins.get(plugin_id) if isinstance(plugin_id, str) else None
            if hosted is None or not hosted.outputs or not hosted.present:
                continue
            carla_id = self._carla_id(hosted)
            readings[hosted.id] = {
                symbol: float(self._host.get_current_parameter_value(carla_id, index))
                for symbol, index in hosted.outputs.items()
            }
        if readings:
            self.send({"event": "readings", "values": readings})

    def _controls(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Carla's own description of every input control (for plugins without LV2 data)."""
        b, host = self._b, self._host
        hosted = self._present(message.get("plugin"))
        carla_id = self._carla_id(hosted)
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
        hosted = self._present(message.get("plugin"))
        carla_id = self._carla_id(hosted)
        read = self._host.get_current_parameter_value
        return {symbol: float(read(carla_id, index)) for symbol, index in hosted.params.items()}

    def _reset(self, message: dict[str, Any]) -> dict[str, Any]:
        """Carla resets the plugin's controls itself (its changes come back as events)."""
        self._host.reset_parameters(self._carla_id(self._present(message.get("plugin"))))
        return {}

    def _present(self, plugin_id: object) -> Hosted:
        hosted = self._hosted(plugin_id)
        if not hosted.present:
            raise EngineError(f"plugin {hosted.id} is bypassed out of the rack")
        return hosted

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
        dead: list[tuple[Hosted, str]] = []
        while True:
            try:
                action, carla_id, value1, valuef, text = self._callbacks.get_nowait()
            except queue.Empty:
                break
            hosted = self._at(carla_id)
            if action == b.ENGINE_CALLBACK_PARAMETER_VALUE_CHANGED and value1 >= 0:
                symbol = hosted.symbols.get(value1) if hosted else None
                if (
                    hosted is not None
                    and symbol is not None
                    and (hosted.enable is None or value1 != hosted.enable[0])
                ):
                    hosted.values[symbol] = float(valuef)
                    changed.setdefault(hosted.id, {})[symbol] = float(valuef)
            elif action == b.ENGINE_CALLBACK_PLUGIN_UNAVAILABLE and hosted is not None:
                dead.append((hosted, text or "unavailable"))
            elif action == b.ENGINE_CALLBACK_PARAMETER_VALUE_CHANGED and value1 == b.PARAMETER_ACTIVE:
                # Carla deactivates a bridged plugin whose process ended (a crash, a kill);
                # the box deactivates only a whole warm host, never one plugin of it.
                if self.bridges and valuef == 0.0 and self._active and hosted is not None:
                    dead.append((hosted, "its bridge process ended"))
            elif action == b.ENGINE_CALLBACK_ERROR:
                log.error("carla: %s", text)
            elif action in (b.ENGINE_CALLBACK_ENGINE_STOPPED, b.ENGINE_CALLBACK_QUIT) and self._open:
                raise HostStopped(text or "Carla's engine stopped")
        for plugin_id, values in changed.items():
            self.send({"event": "parameter", "plugin": plugin_id, "values": values})
        for hosted, why in dead:
            self._died(hosted, why)

    def _died(self, hosted: Hosted, why: str) -> None:
        """A plugin stopped working: out of the rack at once (its place passes dry), the box told
        once; the box loads it again if it wants it back."""
        if hosted.dead or hosted.id not in self._plugins:
            return
        hosted.dead = True
        try:
            self._forget(hosted)
        except EngineError as exc:
            log.error("removing dead plugin %s: %s", hosted.id, exc)
        self.send({"event": "plugin-died", "plugin": hosted.id, "message": why})

    def _at(self, carla_id: int) -> Hosted | None:
        if 0 <= carla_id < len(self._order):
            return self._plugins.get(self._order[carla_id])
        return None


def _end_soon(owner: OwnerLoop) -> None:
    """SIGTERM: the box has died (``setpriv --pdeathsig``) or gives up on us.

    The owner loop ends and Carla closes its engine, so that the rack's JACK
    client leaves the graph before the process exits. Dying at once would
    leave it in JACK's graph failing every cycle until the server notices;
    JACK 1.9.21 was seen to wedge for good under such a storm of xrun
    notices (its own notice socket overflows mid-message), and then no box
    could come back. SIGALRM's default action ends the process if the close
    itself hangs.
    """
    owner.stop()
    signal.alarm(CLOSE_DEADLINE)


def main(argv: list[str] | None = None) -> int:
    """Run the host until the box closes the pipe or Carla's engine stops."""
    parser = argparse.ArgumentParser(prog="appliance.engine.carla.host")
    parser.add_argument("--lib-dir", type=Path, required=True)
    parser.add_argument("--share-dir", type=Path, required=True)
    parser.add_argument("--client", required=True, help="the rack's JACK client name")
    parser.add_argument("--fd", type=int, required=True, help="this process's end of the box's socket")
    parser.add_argument("--bridges", action="store_true")
    parser.add_argument("--jack-transport", action="store_true", help="follow JACK's transport")
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

    paths = CarlaPaths(args.lib_dir, args.share_dir)
    host = CarlaHost(paths, args.client, args.bridges, send, stop, args.jack_transport)
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
