"""The Carla adapter: every plugin inside one Carla engine, in this process.

Carla (``libcarla_standalone2.so``) is driven through its own Python host
module (``carla_backend.CarlaHostDLL``), in *patchbay* mode: the engine is one
audio client (one JACK client ``NAME:audio-in1/2``, ``NAME:audio-out1/2``, or
the ALSA device itself), and inside it a graph of groups: "Audio Input"
(outputs), "Audio Output" (inputs) and one group per plugin. Each track owns
some of the engine's input and output channels; its chain is a set of
internal graph connections between those channels and its plugins.

Threads::

    asyncio loop ──submit(closure)──▶ command queue ──▶ carla-owner thread ──▶ Carla API
         ▲                                               │  engine_idle() every 20 ms
         └──── call_soon_threadsafe(on_event) ◀──────────┤  drains callback queue
                                                         │
    Carla / JACK threads ── engine callback / port registration ──▶ callback queue

* The loop's thread runs every public method. Each one submits a closure to
  the owner thread and awaits its future with a timeout (named constants).
  :meth:`CarlaEngine.info` only reads a snapshot and never waits.
* The ``carla-owner`` thread makes every Carla call and every JACK call and
  owns all adapter state (chains, id maps, connection ids). Carla's host API
  is not re-entrant and wants ``engine_idle()`` about every 20 ms.
* Carla's engine callback and JACK-Client's port-registration callback run on
  whatever thread fires them; they only put a record on a queue. Most Carla
  callbacks fire synchronously inside the call that caused them (on the owner
  thread), so the owner drains the queue right after every call.

* If anything on the owner thread fails unexpectedly (``engine_idle()``, the
  handling of a callback), the engine is reported dead (``engine-died``,
  ``info().running`` False) rather than the thread ending unnoticed; pending
  commands fail with :class:`EngineError`.
* A command the loop gave up on (timeout, cancellation) is skipped if the
  owner has not started it; one already running cannot be interrupted and
  completes, its effect kept (the owner's state always matches Carla's). A
  timed-out ``set_parameters`` or ``set_bypass`` may therefore still land.
  A timed-out plugin load is undone by a clean-up command queued behind it.

Wiring is declarative (as in :mod:`appliance.engine.jalv`): from the chains the
owner computes the internal connections it wants
(:func:`appliance.engine.chain.chain_connections`), connects what is missing,
then disconnects what is no longer wanted (patchbay connection ids come from
``PATCHBAY_CONNECTION_ADDED``). A change whose rewiring fails is rolled back,
state and graph.

Carla facts this relies on (Carla 2.5/2.6, see the design field notes):
plugin ids are positions in the engine and shift down on removal, while
patchbay group ids stay, so the adapter finds a plugin's id by the unique name
Carla gave it (``get_plugin_info()["name"]``) each time; ``set_active(False)``
mutes, so bypass is the plugin's own enable control, else ``set_drywet(0)``
(``PLUGIN_CAN_DRYWET``), else a reroute around the plugin;
``set_parameter_value`` sends no callback; ``get_last_error()`` is stale unless
the call just failed; after the JACK server dies every ``engine_idle()``
asserts, so the owner stops idling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from ..config import CarlaConfig, JackConfig
from ..controls import Control, Kind, PluginType
from ..errors import ApplianceError, EngineError, PluginLoadFailed, UnknownPlugin, UnknownTrack
from . import (
    ENGINE_START_TIMEOUT,
    PLUGIN_START_TIMEOUT,
    Engine,
    EngineEvent,
    EngineInfo,
    EventSink,
    SavedPlugin,
    TrackPorts,
    find_chain,
    find_plugin,
)
from .chain import Stage, chain_connections, connection_changes
from .jackserver import DummySettings, JackServer

log = logging.getLogger("appliance.engine.carla")

T = TypeVar("T")

#: Pause between two ``engine_idle()`` calls on the owner thread.
IDLE_INTERVAL = 0.02
#: How long a quick Carla call (parameters, bypass, rewiring) may take.
CARLA_CALL_TIMEOUT = 5.0
#: How long a new plugin runs unconnected before it joins its chain (control smoothing).
PLUGIN_PREROLL = 0.3
#: How long ``engine_close()`` and the owner thread's exit may take.
ENGINE_STOP_TIMEOUT = 10.0
#: The engine's own client name (JACK) unless the caller picks one.
DEFAULT_CLIENT_NAME = "appliance-carla"

#: Shared library, Python host module and its helper package a usable Carla has.
STANDALONE_LIBRARY = "libcarla_standalone2.so"
HOST_MODULE = "carla_backend.py"
HELPER_PACKAGE = "common/__init__.py"
BRIDGE_BINARY = "carla-bridge-native"

#: Set to a non-empty value, this environment variable hides every Carla installation:
#: the box and the suite then behave as on a machine without Carla (README "Carla").
HIDE_CARLA_ENV = "APPLIANCE_NO_CARLA"

#: Where Carla is looked for when no prefix is configured: (libraries, Python modules).
SEARCH_PATHS: tuple[tuple[Path, Path], ...] = (
    (Path("/usr/lib/carla"), Path("/usr/share/carla")),  # KXStudio / distribution packages
    (Path("/usr/local/lib/carla"), Path("/usr/local/share/carla")),  # make install
)

#: Names of the engine's own patchbay groups (Carla's ``CarlaEngineGraph``).
AUDIO_INPUT_GROUP = "Audio Input"
AUDIO_OUTPUT_GROUP = "Audio Output"
#: ``PATCHBAY_PORT_ADDED`` hints (``PATCHBAY_PORT_IS_INPUT``, ``PATCHBAY_PORT_TYPE_AUDIO``).
PORT_IS_INPUT = 0x1
PORT_IS_AUDIO = 0x2

_TRAILING_NUMBER = re.compile(r"(\d+)$")

Port = tuple[int, int]  # patchbay group, port
Edge = tuple[int, int, int, int]  # group A, port A (output) → group B, port B (input)


def _can_drywet(backend: Any, hints: int) -> bool:
    """Whether ``set_drywet(0)`` gives the dry signal.

    Not for bridged plugins: in patchbay mode the graph hands a 1-in/1-out
    node one buffer for both, the bridge's output overwrites the input
    before Carla mixes in the dry part, and "dry" stays wet (measured).
    """
    return bool(hints & backend.PLUGIN_CAN_DRYWET) and not hints & backend.PLUGIN_IS_BRIDGE


# -- finding Carla ---------------------------------------------------------------------


@dataclass(frozen=True)
class CarlaPaths:
    """Where one Carla installation keeps what this adapter loads.

    Attributes:
        lib_dir: the libraries and binaries (``libcarla_standalone2.so``,
            ``carla-bridge-native``); Carla's ``ENGINE_OPTION_PATH_BINARIES``.
        share_dir: the Python host modules (``carla_backend.py``, ``common/``).
    """

    lib_dir: Path
    share_dir: Path

    @property
    def library(self) -> Path:
        return self.lib_dir / STANDALONE_LIBRARY

    @property
    def resources(self) -> Path:
        return self.share_dir / "resources"

    def missing(self) -> str | None:
        """A sentence naming the first missing file, or None when complete."""
        if not self.library.is_file():
            return f"no {STANDALONE_LIBRARY} in {self.lib_dir}"
        if not (self.share_dir / HOST_MODULE).is_file():
            return (
                f"no {HOST_MODULE} in {self.share_dir}: a headless build installs no Python host "
                "modules; copy source/frontend/carla_backend.py, carla_utils.py and common/ there"
            )
        if not (self.share_dir / HELPER_PACKAGE).is_file():
            return (
                f"no {HELPER_PACKAGE} in {self.share_dir}: carla_backend.py imports it; "
                "copy source/frontend/common/ there"
            )
        return None


def candidates(prefix: Path | None) -> tuple[CarlaPaths, ...]:
    """The installations to try: only the prefix when one is configured.

    A configured prefix that is wrong is reported rather than papered over
    by whatever else happens to be installed.
    """
    if prefix is not None:
        return (CarlaPaths(prefix / "lib" / "carla", prefix / "share" / "carla"),)
    return tuple(CarlaPaths(lib, share) for lib, share in SEARCH_PATHS)


def find_carla(prefix: Path | None, environ: Mapping[str, str] = os.environ) -> CarlaPaths:
    """The first complete Carla installation (file checks only, no import).

    Args:
        prefix: the configured install prefix (``engine.carla.prefix``) or None.
        environ: where :data:`HIDE_CARLA_ENV` is looked up.

    Raises:
        EngineError: none is complete, or Carla is hidden; the message says which file
            is missing, or that it is hidden.
    """
    if environ.get(HIDE_CARLA_ENV):
        raise EngineError(f"Carla is hidden by {HIDE_CARLA_ENV}={environ[HIDE_CARLA_ENV]}")
    tried = candidates(prefix)
    for paths in tried:
        if paths.missing() is None:
            return paths
    # Report the installation that got furthest: one with the library first.
    for paths in tried:
        if paths.library.is_file():
            raise EngineError(str(paths.missing()))
    dirs = " or ".join(str(p.lib_dir) for p in tried)
    raise EngineError(f"Carla is not installed: no {STANDALONE_LIBRARY} in {dirs}")


def unavailable(prefix: Path | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """Why Carla cannot be used here, or None when it can.

    Cheap (a few ``stat`` calls); any thread may call it.

    Args:
        prefix: the configured install prefix (``engine.carla.prefix``) or None.
        environ: where :data:`HIDE_CARLA_ENV` is looked up.
    """
    try:
        find_carla(prefix, environ)
    except EngineError as exc:
        return str(exc)
    return None


def load_backend(paths: CarlaPaths) -> Any:
    """Import ``carla_backend`` from ``paths.share_dir``.

    The directory is on ``sys.path`` only for the import (Carla's helper
    package is called ``common``). Owner thread (or any thread, once).

    Raises:
        EngineError: the module does not import.
    """
    share = str(paths.share_dir)
    added = share not in sys.path
    if added:
        sys.path.insert(0, share)
    try:
        return importlib.import_module("carla_backend")
    except Exception as exc:  # a broken copy raises anything at import
        raise EngineError(f"cannot import carla_backend from {share}: {exc}") from exc
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(share)


#: Carla runs one engine per process (``carla_standalone_host_init`` is a singleton).
_ENGINE_SLOT = threading.Lock()
#: One ``CarlaHostDLL`` per library path, made on first use.
_HOSTS: dict[Path, Any] = {}


# -- owner-thread state ----------------------------------------------------------------


@dataclass(eq=False)
class _Plugin:
    """One plugin instance inside Carla. Owner thread only."""

    id: str
    track_id: str
    type: PluginType
    carla_name: str  # unique inside Carla: how its positional id is found
    group: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    params: dict[str, int]
    symbols: dict[int, str]
    can_drywet: bool
    bypass: bool = False

    @property
    def enable_index(self) -> int | None:
        symbol = self.type.enable_symbol
        return self.params.get(symbol) if symbol is not None else None

    @property
    def bypass_mode(self) -> str:
        """``enable-port``, ``drywet`` or ``reroute``."""
        if self.enable_index is not None:
            return "enable-port"
        if self.can_drywet:
            return "drywet"
        return "reroute"

    @property
    def stage(self) -> Stage[Port]:
        """The plugin as the chain walk sees it: skipped while reroute-bypassed."""
        return Stage(
            tuple((self.group, p) for p in self.inputs),
            tuple((self.group, p) for p in self.outputs),
            in_path=not (self.bypass and self.bypass_mode == "reroute"),
        )


@dataclass
class _Graph:
    """What the owner knows of Carla's internal patchbay (from callbacks)."""

    groups: dict[int, str] = field(default_factory=dict)
    ports: dict[int, dict[int, int]] = field(default_factory=dict)  # group → port id → hints
    connections: dict[Edge, int] = field(default_factory=dict)  # edge → connection id

    def group_named(self, name: str) -> int | None:
        return next((g for g, n in self.groups.items() if n == name), None)

    def audio_ports(self, group: int, is_input: bool) -> tuple[int, ...]:
        return tuple(
            sorted(
                port
                for port, hints in self.ports.get(group, {}).items()
                if hints & PORT_IS_AUDIO and bool(hints & PORT_IS_INPUT) == is_input
            )
        )


class CarlaEngine(Engine):
    """Hosts every track's chain inside one Carla engine (patchbay mode).

    All public methods are called from the asyncio loop's thread; every
    Carla call they cause runs on the ``carla-owner`` thread.

    Args:
        tracks: the tracks and their fixed endpoints. Under JACK these are
            JACK port names the engine connects to its ``audio-inN`` /
            ``audio-outN``; under ALSA their trailing numbers pick device
            channels (``system:capture_1`` → channel 1).
        carla: prefix, driver (``jack`` or ``alsa``), device settings, bridges.
        jack: the JACK server (``server``), or a dummy server to start
            (``dummy``, the virtual box). Used with the ``jack`` driver only.
        on_event: receives :class:`EngineEvent` on the loop's thread.
        client_name: the engine's JACK client name.
    """

    name = "carla"

    def __init__(
        self,
        tracks: Sequence[TrackPorts],
        carla: CarlaConfig,
        jack: JackConfig,
        on_event: EventSink | None = None,
        client_name: str = DEFAULT_CLIENT_NAME,
    ) -> None:
        super().__init__(tracks, on_event)
        self.carla = carla
        self.jack = jack
        self.client_name = client_name
        self.server_name: str | None = jack.server if carla.driver == "jack" else None
        self._server: JackServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None]
        self._commands = queue.SimpleQueue()
        self._callbacks: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._has_slot = False
        self._info = EngineInfo(self.name, False)
        # owner-thread state
        self._backend: Any = None
        self._host: Any = None
        self._jack_client: Any = None
        self._engine_open = False
        self._running = False
        self._closing = False
        self._graph = _Graph()
        self._plugins: dict[str, _Plugin] = {}
        self._chains: dict[str, list[str]] = {t: [] for t in self.tracks}
        self._in_ports: dict[str, tuple[int, ...]] = {}  # track → Audio Input ports
        self._out_ports: dict[str, tuple[int, ...]] = {}  # track → Audio Output ports
        self._external: set[tuple[str, str]] = set()  # JACK connections the tracks want
        self._pending_params: dict[str, dict[str, float]] = {}
        self._last_poll = 0.0
        self._died_reported = False

    # -- lifecycle (loop thread) -----------------------------------------------------

    async def start(self) -> None:
        """Start the owner thread, Carla's engine and the dry wiring of every track.

        With ``jack.dummy`` (and the jack driver) a private JACK server is
        started first and stopped again by :meth:`stop`. Loop thread only.

        Raises:
            EngineError: Carla is missing, another Carla engine runs in this
                process, the server cannot be reached, or the tracks need
                more channels than the engine has.
        """
        if self._thread is not None:
            return
        paths = find_carla(self.carla.prefix)
        if self.carla.driver == "jack" and self.jack.dummy is not None:
            dummy = self.jack.dummy
            self._server = JackServer(
                self.jack.server, DummySettings(dummy.rate, dummy.period, dummy.realtime)
            )
            await self._server.start()
            self.server_name = self._server.name
        if not _ENGINE_SLOT.acquire(blocking=False):
            await self._stop_server()
            raise EngineError("Carla runs one engine per process and another CarlaEngine is running")
        self._has_slot = True
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._own, name="carla-owner", daemon=True)
        self._thread.start()
        try:
            await self._call(lambda: self._open(paths), ENGINE_START_TIMEOUT)
        except BaseException:
            await self.stop()
            raise
        log.info(
            "carla engine up (%s, %d Hz, %d frames%s)",
            self.carla.driver,
            self._info.sample_rate,
            self._info.buffer_size,
            ", bridges" if self.carla.bridges else "",
        )

    async def stop(self) -> None:
        """Close everything this engine started. Safe to call twice. Loop thread only.

        Removes every plugin, closes Carla's engine (``engine_close()``),
        ends the owner thread and stops the private JACK server, if any.
        """
        thread = self._thread
        if thread is not None:
            if thread.is_alive():
                try:
                    await self._call(self._close, ENGINE_STOP_TIMEOUT)
                except EngineError as exc:
                    log.error("carla engine did not close cleanly: %s", exc)
                self._commands.put(None)
                await asyncio.to_thread(thread.join, ENGINE_STOP_TIMEOUT)
                if thread.is_alive():
                    log.error("carla owner thread did not end within %s s", ENGINE_STOP_TIMEOUT)
            self._thread = None
            log.info("carla engine stopped")
        if self._has_slot:
            self._has_slot = False
            _ENGINE_SLOT.release()
        self._info = EngineInfo(self.name, False, details=self._info.details)
        await self._stop_server()

    async def _stop_server(self) -> None:
        """Stop the private JACK server, if this engine started one. Loop thread."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    # -- the engine port (loop thread) -----------------------------------------------

    async def add_plugin(
        self,
        track_id: str,
        plugin_id: str,
        plugin_type: PluginType,
        position: int,
        values: Mapping[str, float],
        bypass: bool = False,
    ) -> None:
        """Instantiate the plugin in Carla and wire it in at ``position``. Loop thread.

        The plugin runs unconnected for :data:`PLUGIN_PREROLL` first, so that
        it enters the signal path with its values already in effect (many
        plugins smooth their controls from zero after activation).

        Raises:
            UnknownTrack: no such track.
            PluginLoadFailed: Carla could not load it (Carla's reason in the
                message); the chain is left as it was.
            EngineError: the engine is not running or did not answer within
                :data:`PLUGIN_START_TIMEOUT`.
        """
        await self._load_unwired(SavedPlugin(track_id, plugin_id, plugin_type, values, bypass))
        await self._wire_in(plugin_id, position, preroll=True)

    async def load_board(self, plugins: Sequence[SavedPlugin]) -> dict[str, ApplianceError]:
        """Load every plugin unwired, pre-roll them together once, then wire them in. Loop thread.

        One :data:`PLUGIN_PREROLL` for the whole board instead of one per plugin.
        """
        failed: dict[str, ApplianceError] = {}
        loaded: list[SavedPlugin] = []
        for saved in plugins:
            try:
                await self._load_unwired(saved)
                loaded.append(saved)
            except ApplianceError as exc:
                failed[saved.plugin_id] = exc
        if loaded:
            await asyncio.sleep(PLUGIN_PREROLL)
        for saved in loaded:
            try:
                await self._wire_in(saved.plugin_id, len(self.chain(saved.track_id)), preroll=False)
            except ApplianceError as exc:
                failed[saved.plugin_id] = exc
        return failed

    async def _load_unwired(self, saved: SavedPlugin) -> None:
        """Load a plugin with its values and bypass, not wired yet. Loop thread."""
        loaded: list[_Plugin] = []

        def unload() -> None:  # behind a load the loop gave up on: undo it
            for plugin in loaded:
                if self._plugins.get(plugin.id) is plugin:
                    self._remove(plugin.id)

        load = functools.partial(
            self._load, saved.track_id, saved.plugin_id, saved.type, dict(saved.values), saved.bypass, loaded
        )
        await self._call(load, PLUGIN_START_TIMEOUT, undo=unload)

    async def _wire_in(self, plugin_id: str, position: int, preroll: bool) -> None:
        """Wire a loaded plugin into its chain, after its pre-roll; unload it on failure. Loop thread."""
        try:
            if preroll:
                await asyncio.sleep(PLUGIN_PREROLL)
            await self._call(functools.partial(self._insert, plugin_id, position), CARLA_CALL_TIMEOUT)
        except BaseException:
            with contextlib.suppress(EngineError, UnknownPlugin):
                await self._call(functools.partial(self._remove, plugin_id), PLUGIN_START_TIMEOUT)
            raise

    async def remove_plugin(self, plugin_id: str) -> None:
        """Wire the chain around the plugin, then remove it from Carla. Loop thread.

        Raises:
            UnknownPlugin: no such plugin.
        """
        await self._call(lambda: self._remove(plugin_id), PLUGIN_START_TIMEOUT)

    async def move_plugin(self, plugin_id: str, position: int) -> None:
        """Move a plugin within its track's chain (a rewire only). Loop thread.

        Raises:
            UnknownPlugin: no such plugin.
        """
        await self._call(lambda: self._move(plugin_id, position), CARLA_CALL_TIMEOUT)

    async def set_parameters(self, plugin_id: str, values: Mapping[str, float]) -> None:
        """Set controls by LV2 symbol; unknown symbols are ignored. Loop thread.

        Raises:
            UnknownPlugin: no such plugin.
        """
        await self._call(lambda: self._set_values(plugin_id, dict(values)), CARLA_CALL_TIMEOUT)

    async def controls(self, plugin_id: str) -> tuple[Control, ...]:
        """The plugin's input controls as Carla itself describes them. Loop thread.

        Name, symbol, unit, ranges and default, kind from Carla's hints
        (boolean, integer, scale points) and the scale points' labels: what a
        plugin format without LV2 data (VST, CLAP) would be described by.

        Raises:
            UnknownPlugin: no such plugin.
        """
        result: tuple[Control, ...] = await self._call(lambda: self._controls(plugin_id), CARLA_CALL_TIMEOUT)
        return result

    async def values(self, plugin_id: str) -> dict[str, float]:
        """Every input control's current value, read back from Carla, by symbol. Loop thread.

        Raises:
            UnknownPlugin: no such plugin.
        """
        result: dict[str, float] = await self._call(lambda: self._read_values(plugin_id), CARLA_CALL_TIMEOUT)
        return result

    async def set_bypass(self, plugin_id: str, bypass: bool) -> None:
        """True bypass: the plugin's enable control, else dry/wet 0, else a reroute.

        Loop thread.

        Raises:
            UnknownPlugin: no such plugin.
        """
        await self._call(lambda: self._set_bypass(plugin_id, bypass), CARLA_CALL_TIMEOUT)

    def info(self) -> EngineInfo:
        """The snapshot the owner thread last made (rate, buffer, load, xruns).

        Not running once the owner thread has ended. Never blocks; any thread.
        """
        info, thread = self._info, self._thread
        if info.running and thread is not None and not thread.is_alive():
            return replace(info, running=False, dsp_load=0.0)
        return info

    def chain(self, track_id: str) -> list[str]:
        """Plugin ids of a track in chain order. Any thread (reads a copy).

        Raises:
            UnknownTrack: no such track.
        """
        return list(find_chain(self._chains, track_id))

    def bypass_mode(self, plugin_id: str) -> str:
        """How the plugin is bypassed: ``enable-port``, ``drywet`` or ``reroute``.

        Any thread (reads owner state that only changes on add/remove).

        Raises:
            UnknownPlugin: no such plugin.
        """
        return self._plugin(plugin_id).bypass_mode

    async def run_on_owner(self, call: Callable[[Any], T], timeout: float = CARLA_CALL_TIMEOUT) -> T:
        """Run ``call(host)`` on the owner thread, with Carla's id map current.

        For diagnostics and tests (``host.reset_parameters(...)``). Loop thread.
        """
        return await self._call(lambda: call(self._host), timeout)

    def carla_id(self, plugin_id: str) -> int:
        """The plugin's current positional id inside Carla. Owner thread."""
        return self._carla_id(self._plugin(plugin_id))

    # -- loop ↔ owner ----------------------------------------------------------------

    async def _call(self, work: Callable[[], T], timeout: float, undo: Callable[[], None] | None = None) -> T:
        """Run ``work`` on the owner thread and await it (loop thread).

        If the loop gives up (timeout, cancellation), ``work`` is skipped when
        the owner has not started it yet; once started it runs to the end,
        and then ``undo`` (if given) runs on the owner thread after it.

        Raises:
            EngineError: no owner thread, or no answer within ``timeout``.
        """
        if self._thread is None or not self._thread.is_alive():
            raise EngineError("the Carla engine is not running")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._commands.put((work, future))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            future.cancel()
            self._submit_undo(undo)
            raise EngineError(f"Carla did not answer within {timeout} s") from None
        except asyncio.CancelledError:
            future.cancel()
            self._submit_undo(undo)
            raise

    def _submit_undo(self, undo: Callable[[], None] | None) -> None:
        """Queue ``undo`` behind the abandoned command; nobody waits for it. Loop thread."""
        if undo is None:
            return

        def guarded() -> None:
            try:
                undo()
            except Exception:
                log.exception("carla: undoing an abandoned command failed")

        self._commands.put((guarded, concurrent.futures.Future()))

    def _emit(self, event: EngineEvent) -> None:
        """Hand an event to ``on_event`` on the loop's thread. Owner thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self.on_event, event)

    # -- the owner thread ------------------------------------------------------------

    def _own(self) -> None:
        """The owner thread: commands, callbacks and ``engine_idle()``.

        Ends on the ``None`` command. An unexpected failure of the idle tick
        or of the callback handling reports the engine dead and the thread
        keeps serving commands (they fail: not running), so :meth:`stop`
        can still close Carla. Commands left when it ends are failed.
        """
        try:
            self._serve()
        except BaseException as exc:  # not expected: _serve guards its steps
            self._failed("the owner thread", exc)
        finally:
            self._fail_pending()

    def _serve(self) -> None:
        next_idle = time.monotonic()
        while True:
            try:
                item = self._commands.get(timeout=max(0.0, next_idle - time.monotonic()))
            except queue.Empty:
                pass
            else:
                if item is None:
                    return
                self._run(*item)
            if time.monotonic() >= next_idle:
                try:
                    self._idle()
                except Exception as exc:
                    self._failed("the idle tick", exc)
                next_idle = time.monotonic() + IDLE_INTERVAL

    def _run(self, work: Callable[[], Any], future: concurrent.futures.Future[Any]) -> None:
        """Run one command and settle its future, whatever fails. Owner thread."""
        if not future.set_running_or_notify_cancel():
            return  # the loop gave up before it started
        result: Any = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:
            error = exc
        try:
            self._drain()
        except Exception as exc:
            self._failed("handling Carla's callbacks", exc)
            error = error or EngineError(f"the Carla engine failed: {exc}")
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Something on the owner thread failed unexpectedly: the engine is dead."""
        log.error("carla: %s failed", what, exc_info=exc)
        self._died(f"{what} failed: {exc!r}")

    def _fail_pending(self) -> None:
        """Fail every command still queued: the owner thread is ending. Owner thread."""
        while True:
            try:
                item = self._commands.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(EngineError("the Carla engine is not running"))

    def _idle(self) -> None:
        """One idle tick: callbacks, ``engine_idle()``, health and info snapshot.

        Callbacks first: after a queued JACK shutdown ``engine_idle()`` asserts.
        """
        if not self._running:
            return
        self._drain()
        if not self._running:
            return
        self._host.engine_idle()
        self._drain()
        if not self._running:
            return
        if not self._host.is_engine_running():
            self._died("Carla's engine stopped")
            return
        runtime = self._host.get_runtime_engine_info()
        self._info = EngineInfo(
            self.name,
            True,
            sample_rate=self._info.sample_rate,
            buffer_size=self._info.buffer_size,
            dsp_load=float(runtime["load"]),
            xruns=int(runtime["xruns"]),
            details=self._details(),
        )

    def _details(self) -> dict[str, object]:
        details: dict[str, object] = {
            "driver": self.carla.driver,
            "plugins": len(self._plugins),
            "bridges": self.carla.bridges,
        }
        if self.carla.driver == "jack":
            details["server"] = self.server_name or "default"
            details["client"] = self.client_name
        elif self.carla.device:
            details["device"] = self.carla.device
        return details

    def _died(self, why: str) -> None:
        """The engine is gone (server killed, device lost). Owner thread."""
        self._running = False
        self._info = EngineInfo(
            self.name,
            False,
            self._info.sample_rate,
            self._info.buffer_size,
            0.0,
            self._info.xruns,
            self._details(),
        )
        if not self._died_reported:
            self._died_reported = True
            log.error("carla engine died: %s", why)
            self._emit(EngineEvent("engine-died", None, why))

    def _on_engine_callback(
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
        self._callbacks.put(("carla", action, plugin_id, value1, value2, valuef, value_str))

    def _on_port_registration(self, port: Any, register: bool) -> None:
        """JACK-Client's port callback: JACK's notification thread; only enqueues."""
        if register:
            self._callbacks.put(("jack-port",))

    def _on_jack_shutdown(self, status: Any, reason: str) -> None:
        """JACK-Client's shutdown callback: JACK's thread; only enqueues."""
        self._callbacks.put(("jack-shutdown", reason))

    def _drain(self) -> None:
        """Act on every queued callback. Owner thread."""
        b = self._backend
        rewire_external = False
        while True:
            try:
                record = self._callbacks.get_nowait()
            except queue.Empty:
                break
            kind = record[0]
            if kind == "jack-port":
                rewire_external = True
                continue
            if kind == "jack-shutdown":
                if not self._closing:
                    self._died(f"JACK server gone: {record[1]}")
                continue
            _, action, pid, v1, v2, valuef, raw = record
            text = raw.decode("utf-8", "replace") if raw else ""
            graph = self._graph
            if action == b.ENGINE_CALLBACK_PATCHBAY_CLIENT_ADDED:
                graph.groups[pid] = text
                graph.ports.setdefault(pid, {})
            elif action == b.ENGINE_CALLBACK_PATCHBAY_CLIENT_REMOVED:
                graph.groups.pop(pid, None)
                graph.ports.pop(pid, None)
            elif action == b.ENGINE_CALLBACK_PATCHBAY_PORT_ADDED:
                graph.ports.setdefault(pid, {})[v1] = v2
            elif action == b.ENGINE_CALLBACK_PATCHBAY_PORT_REMOVED:
                graph.ports.get(pid, {}).pop(v1, None)
            elif action == b.ENGINE_CALLBACK_PATCHBAY_CONNECTION_ADDED:
                with contextlib.suppress(ValueError):
                    ga, pa, gb, pb = (int(x) for x in text.split(":"))
                    graph.connections[(ga, pa, gb, pb)] = pid
            elif action == b.ENGINE_CALLBACK_PATCHBAY_CONNECTION_REMOVED:
                for edge, cid in list(graph.connections.items()):
                    if cid == pid:
                        del graph.connections[edge]
            elif action == b.ENGINE_CALLBACK_PARAMETER_VALUE_CHANGED:
                self._parameter_changed(pid, v1, valuef)
            elif action in (b.ENGINE_CALLBACK_ENGINE_STOPPED, b.ENGINE_CALLBACK_QUIT):
                if not self._closing and self._engine_open:
                    self._died(text or "Carla's engine stopped")
            elif action == b.ENGINE_CALLBACK_ERROR:
                log.error("carla: %s", text)
                if not self._closing and self._engine_open and not self._host.is_engine_running():
                    self._died(text)
            elif action == b.ENGINE_CALLBACK_PLUGIN_UNAVAILABLE:
                plugin = self._plugin_at(pid)
                if plugin is not None:
                    self._emit(EngineEvent("plugin-died", plugin.id, text or "unavailable"))
        if rewire_external and self._running:
            self._connect_external()
        for plugin_id, values in self._pending_params.items():
            self._emit(EngineEvent("parameter", plugin_id, values=values))
        self._pending_params = {}

    def _parameter_changed(self, carla_id: int, index: int, value: float) -> None:
        """A control changed inside the engine: collect it for ``on_event``."""
        if index < 0:
            return  # Carla's own pseudo-parameters (active, dry/wet, volume...)
        plugin = self._plugin_at(carla_id)
        if plugin is None:
            return
        symbol = plugin.symbols.get(index)
        if symbol is None or symbol == plugin.type.enable_symbol:
            return
        self._pending_params.setdefault(plugin.id, {})[symbol] = float(value)

    # -- owner thread: engine ----------------------------------------------------------

    def _open(self, paths: CarlaPaths) -> None:
        """Initialise Carla's engine and wire the tracks dry. Owner thread."""
        b = self._backend = load_backend(paths)
        host = _HOSTS.get(paths.library)
        if host is None:
            host = _HOSTS[paths.library] = b.CarlaHostDLL(str(paths.library), False)
        self._host = host
        host.set_engine_callback(self._on_engine_callback)
        host.set_engine_option(b.ENGINE_OPTION_PROCESS_MODE, b.ENGINE_PROCESS_MODE_PATCHBAY, "")
        host.set_engine_option(b.ENGINE_OPTION_TRANSPORT_MODE, b.ENGINE_TRANSPORT_MODE_INTERNAL, "")
        host.set_engine_option(b.ENGINE_OPTION_PATH_BINARIES, 0, str(paths.lib_dir))
        if paths.resources.is_dir():
            host.set_engine_option(b.ENGINE_OPTION_PATH_RESOURCES, 0, str(paths.resources))
        host.set_engine_option(b.ENGINE_OPTION_PREFER_PLUGIN_BRIDGES, int(self.carla.bridges), "")
        host.set_engine_option(b.ENGINE_OPTION_PREFER_UI_BRIDGES, 0, "")
        if self.carla.bridges and not (paths.lib_dir / BRIDGE_BINARY).is_file():
            raise EngineError(f"bridges are on but there is no {BRIDGE_BINARY} in {paths.lib_dir}")
        started = time.monotonic()
        ok = self._init_alsa() if self.carla.driver == "alsa" else self._init_jack()
        self._drain()
        if not ok:
            raise EngineError(f"Carla's {self.carla.driver} engine did not start: {host.get_last_error()}")
        self._engine_open = True
        self._running = True
        log.debug("engine_init took %.1f ms", (time.monotonic() - started) * 1000)
        self._info = EngineInfo(
            self.name,
            True,
            sample_rate=int(host.get_sample_rate()),
            buffer_size=int(host.get_buffer_size()),
            details=self._details(),
        )
        self._assign_channels()
        if self.carla.driver == "jack":
            self._open_jack_client()
        self._rewire()

    def _init_jack(self) -> bool:
        """``engine_init("JACK")`` aimed at the configured server. Owner thread.

        libjack reads the server name from the environment when the client
        opens, so ``JACK_DEFAULT_SERVER`` is set around the call (and
        ``JACK_NO_START_SERVER``: never start a server by accident).
        """
        saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
        if self.server_name is not None:
            os.environ["JACK_DEFAULT_SERVER"] = self.server_name
        os.environ["JACK_NO_START_SERVER"] = "1"
        try:
            return bool(self._host.engine_init("JACK", self.client_name))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _init_alsa(self) -> bool:
        """``engine_init("ALSA")`` with the box's device settings. Owner thread.

        Carla's defaults (512 frames, 44.1 kHz) are not the box's; its only
        period control is "triple buffer" (3 periods instead of 2).
        """
        b, host, c = self._backend, self._host, self.carla
        if c.device:
            host.set_engine_option(b.ENGINE_OPTION_AUDIO_DEVICE, 0, c.device)
        host.set_engine_option(b.ENGINE_OPTION_AUDIO_BUFFER_SIZE, c.buffer_size, "")
        host.set_engine_option(b.ENGINE_OPTION_AUDIO_SAMPLE_RATE, c.sample_rate, "")
        host.set_engine_option(b.ENGINE_OPTION_AUDIO_TRIPLE_BUFFER, int(c.periods >= 3), "")
        if c.periods not in (2, 3):
            log.warning(
                "carla: ALSA periods %d not supported, using %d", c.periods, 3 if c.periods > 3 else 2
            )
        return bool(host.engine_init("ALSA", self.client_name))

    def _assign_channels(self) -> None:
        """Give each track its engine input and output channels. Owner thread.

        Raises:
            EngineError: the tracks need more channels than the engine has
                (Carla's JACK patchbay has 2 in, 2 out).
        """
        graph = self._graph
        group_in = graph.group_named(AUDIO_INPUT_GROUP)
        group_out = graph.group_named(AUDIO_OUTPUT_GROUP)
        if group_in is None or group_out is None:
            raise EngineError("Carla's patchbay has no Audio Input/Output groups (not in patchbay mode?)")
        sources = graph.audio_ports(group_in, is_input=False)
        sinks = graph.audio_ports(group_out, is_input=True)
        by_number = self.carla.driver == "alsa"
        self._in_ports = self._allocate(
            sources, {t.id: t.inputs for t in self.tracks.values()}, by_number, "in"
        )
        self._out_ports = self._allocate(
            sinks, {t.id: t.outputs for t in self.tracks.values()}, by_number, "out"
        )

    def _allocate(
        self, ports: tuple[int, ...], wanted: dict[str, tuple[str, ...]], by_number: bool, what: str
    ) -> dict[str, tuple[int, ...]]:
        """Engine channels (patchbay port ids) per track, in track-port order. Owner thread."""
        needed = sum(len(names) for names in wanted.values())
        if needed > len(ports) and not by_number:
            raise EngineError(
                f"Carla's patchbay has {len(ports)} audio {what}puts but the tracks need {needed}; "
                "use fewer track channels or one engine per track"
            )
        result: dict[str, tuple[int, ...]] = {}
        nxt = 0
        for track_id, names in wanted.items():
            chosen: list[int] = []
            for name in names:
                match = _TRAILING_NUMBER.search(name) if by_number else None
                index = int(match.group(1)) - 1 if match else nxt
                nxt = index + 1
                if not 0 <= index < len(ports):
                    raise EngineError(
                        f"track {track_id}: {name} needs audio {what}put {index + 1} "
                        f"but the engine has {len(ports)}"
                    )
                chosen.append(ports[index])
            result[track_id] = tuple(chosen)
        return result

    def _open_jack_client(self) -> None:
        """A JACK client for the tracks' external connections. Owner thread."""
        import jack  # JACK-Client: only needed with the jack driver

        try:
            client = jack.Client(
                f"{self.client_name}-wire", servername=self.server_name, no_start_server=True
            )
        except jack.JackError as exc:
            raise EngineError(f"cannot reach jack server {self.server_name or '(default)'}: {exc}") from exc
        client.set_port_registration_callback(self._on_port_registration)
        client.set_shutdown_callback(self._on_jack_shutdown)
        client.activate()
        self._jack_client = client
        mine = f"{self.client_name}:"
        if not client.get_ports(mine):
            raise EngineError(f"Carla's JACK client is not called {self.client_name} (name taken?)")
        graph = self._graph
        sources = graph.audio_ports(graph.group_named(AUDIO_INPUT_GROUP) or 0, is_input=False)
        sinks = graph.audio_ports(graph.group_named(AUDIO_OUTPUT_GROUP) or 0, is_input=True)
        index_of_in = {port: i for i, port in enumerate(sources)}
        index_of_out = {port: i for i, port in enumerate(sinks)}
        wanted: set[tuple[str, str]] = set()
        for track in self.tracks.values():
            for name, port in zip(track.inputs, self._in_ports[track.id], strict=True):
                wanted.add((name, f"{mine}audio-in{index_of_in[port] + 1}"))
            for name, port in zip(track.outputs, self._out_ports[track.id], strict=True):
                wanted.add((f"{mine}audio-out{index_of_out[port] + 1}", name))
        self._external = wanted
        self._connect_external()

    def _connect_external(self) -> None:
        """Make every track ↔ engine JACK connection whose ports exist. Owner thread."""
        client = self._jack_client
        if client is None:
            return
        import jack

        for source, destination in self._external:
            try:
                if destination in {p.name for p in client.get_all_connections(source)}:
                    continue
                client.connect(source, destination)
            except jack.JackError:
                continue  # a port not there yet: its registration brings us back

    def _close(self) -> None:
        """Remove every plugin, close the engine and the JACK client. Owner thread."""
        self._closing = True
        host = self._host
        if self._jack_client is not None:
            with contextlib.suppress(Exception):
                self._jack_client.deactivate()
                self._jack_client.close()
            self._jack_client = None
        if host is not None and self._engine_open:
            host.set_engine_about_to_close()
            if self._running:
                host.remove_all_plugins()
            if not host.engine_close():
                log.warning("carla: engine_close failed: %s", host.get_last_error())
            self._drain()
            self._engine_open = False
        self._running = False
        self._plugins.clear()
        self._chains = {t: [] for t in self.tracks}

    # -- owner thread: plugins -------------------------------------------------------

    def _require_running(self) -> None:
        """Raise EngineError unless Carla's engine runs. Owner thread."""
        if not self._running:
            raise EngineError("the Carla engine is not running")

    def _plugin(self, plugin_id: str) -> _Plugin:
        """The plugin by box id, or UnknownPlugin. Owner thread (or a read from any)."""
        return find_plugin(self._plugins, plugin_id)

    def _carla_id(self, plugin: _Plugin) -> int:
        """The plugin's positional id in Carla now, found by its name. Owner thread.

        Raises:
            EngineError: Carla has no plugin of that name (any more).
        """
        host = self._host
        for carla_id in range(host.get_current_plugin_count()):
            if host.get_plugin_info(carla_id)["name"] == plugin.carla_name:
                return carla_id
        raise EngineError(f"Carla has no plugin {plugin.carla_name!r} (for {plugin.id!r})")

    def _plugin_at(self, carla_id: int) -> _Plugin | None:
        """The plugin at a positional id in Carla, if it is one of ours. Owner thread."""
        host = self._host
        if not 0 <= carla_id < host.get_current_plugin_count():
            return None
        name = host.get_plugin_info(carla_id)["name"]
        return next((p for p in self._plugins.values() if p.carla_name == name), None)

    def _load(
        self,
        track_id: str,
        plugin_id: str,
        plugin_type: PluginType,
        values: dict[str, float],
        bypass: bool,
        loaded: list[_Plugin],
    ) -> None:
        """Load the plugin, set its values and bypass; not wired yet. Owner thread.

        Appends the plugin to ``loaded`` once it is in, for an undo.
        """
        b, host = self._backend, self._host
        self._require_running()
        if track_id not in self._chains:
            raise UnknownTrack(f"no track {track_id!r}", {"track_id": track_id})
        if plugin_id in self._plugins:
            raise PluginLoadFailed(f"plugin id {plugin_id!r} is already in use")
        self._drain()
        carla_id = host.get_current_plugin_count()
        before = set(self._graph.groups)
        started = time.monotonic()
        if not host.add_plugin(b.BINARY_NATIVE, b.PLUGIN_LV2, "", plugin_id, plugin_type.uri, 0, None, 0):
            raise PluginLoadFailed(f"{plugin_type.uri}: {host.get_last_error()}")
        self._drain()
        log.debug("add_plugin %s took %.1f ms", plugin_type.uri, (time.monotonic() - started) * 1000)
        new_groups = [g for g in self._graph.groups if g not in before]
        group = new_groups[0] if len(new_groups) == 1 else None
        if group is None or host.get_current_plugin_count() != carla_id + 1:
            host.remove_plugin(host.get_current_plugin_count() - 1)
            raise PluginLoadFailed(f"{plugin_type.uri}: Carla added it but showed no patchbay group")
        params: dict[str, int] = {}
        for index in range(host.get_parameter_count(carla_id)):
            data = host.get_parameter_data(carla_id, index)
            if data["type"] != b.PARAMETER_INPUT:
                continue
            symbol = host.get_parameter_info(carla_id, index)["symbol"]
            if symbol:
                params[symbol] = index
        inputs = self._graph.audio_ports(group, is_input=True)
        outputs = self._graph.audio_ports(group, is_input=False)
        if plugin_type.audio_inputs and len(plugin_type.audio_inputs) < len(inputs):
            inputs = inputs[: len(plugin_type.audio_inputs)]  # side-chain inputs stay unconnected
        info = host.get_plugin_info(carla_id)
        plugin = _Plugin(
            id=plugin_id,
            track_id=track_id,
            type=plugin_type,
            carla_name=info["name"],
            group=group,
            inputs=inputs,
            outputs=outputs,
            params=params,
            symbols={i: s for s, i in params.items()},
            can_drywet=_can_drywet(b, info["hints"]),
        )
        self._plugins[plugin_id] = plugin
        loaded.append(plugin)
        try:
            self._write_values(plugin, values)
            self._apply_bypass(plugin, bypass)
        except BaseException:
            self._remove(plugin_id)
            raise

    def _insert(self, plugin_id: str, position: int) -> None:
        """Put a loaded plugin into its track's chain at ``position``. Owner thread."""
        plugin = self._plugin(plugin_id)
        self._require_running()
        chain = self._chains[plugin.track_id]
        self._change_chain(plugin.track_id, _inserted(chain, plugin_id, position))

    def _remove(self, plugin_id: str) -> None:
        """Rewire around the plugin, then remove it from Carla. Owner thread.

        Raises:
            EngineError: the rewiring or Carla's removal failed; the plugin
                stays, wired where it was.
        """
        plugin = self._plugin(plugin_id)
        chain = self._chains[plugin.track_id]
        without = [p for p in chain if p != plugin_id]
        if self._running:
            self._change_chain(plugin.track_id, without)
            try:
                carla_id = self._carla_id(plugin)
                if not self._host.remove_plugin(carla_id):
                    raise EngineError(
                        f"carla: remove_plugin({carla_id}) failed: {self._host.get_last_error()}"
                    )
            except BaseException:
                self._roll_back(lambda: self._chains.__setitem__(plugin.track_id, chain))
                raise
            self._drain()
        del self._plugins[plugin_id]
        self._chains[plugin.track_id] = without

    def _move(self, plugin_id: str, position: int) -> None:
        """Reorder the chain and rewire (Carla ids do not change). Owner thread."""
        plugin = self._plugin(plugin_id)
        chain = [p for p in self._chains[plugin.track_id] if p != plugin_id]
        if len(chain) == len(self._chains[plugin.track_id]):
            return  # still pre-rolling: add_plugin puts it where it was asked to
        if self._running:
            self._change_chain(plugin.track_id, _inserted(chain, plugin_id, position))
        else:
            self._chains[plugin.track_id] = _inserted(chain, plugin_id, position)

    def _change_chain(self, track_id: str, chain: list[str]) -> None:
        """Make ``chain`` the track's chain and rewire; all as before if that fails."""
        before, self._chains[track_id] = self._chains[track_id], chain
        try:
            self._rewire()
        except BaseException:
            self._roll_back(lambda: self._chains.__setitem__(track_id, before))
            raise

    def _controls(self, plugin_id: str) -> tuple[Control, ...]:
        """Carla's parameter info, data, ranges and scale points as Controls. Owner thread."""
        b, host = self._backend, self._host
        plugin = self._plugin(plugin_id)
        carla_id = self._carla_id(plugin)
        controls = []
        for symbol, index in plugin.params.items():
            info = host.get_parameter_info(carla_id, index)
            hints = host.get_parameter_data(carla_id, index)["hints"]
            ranges = host.get_parameter_ranges(carla_id, index)
            labels = tuple(
                (float(point["value"]), str(point["label"]))
                for point in (
                    host.get_parameter_scalepoint_info(carla_id, index, i)
                    for i in range(info["scalePointCount"])
                )
            )
            kind: Kind = "float"
            if hints & b.PARAMETER_IS_BOOLEAN:
                kind = "toggle"
            elif hints & b.PARAMETER_USES_SCALEPOINTS and labels:
                kind = "enum"
            elif hints & b.PARAMETER_IS_INTEGER:
                kind = "integer"
            controls.append(
                Control(
                    symbol=symbol,
                    name=str(info["name"]),
                    minimum=float(ranges["min"]),
                    maximum=float(ranges["max"]),
                    default=float(ranges["def"]),
                    unit=str(info["unit"]).strip(),
                    kind=kind,
                    labels=labels if kind == "enum" else (),
                    logarithmic=bool(hints & b.PARAMETER_IS_LOGARITHMIC),
                )
            )
        return tuple(controls)

    def _read_values(self, plugin_id: str) -> dict[str, float]:
        """``get_current_parameter_value`` of every input control. Owner thread."""
        plugin = self._plugin(plugin_id)
        carla_id = self._carla_id(plugin)
        return {
            symbol: float(self._host.get_current_parameter_value(carla_id, index))
            for symbol, index in plugin.params.items()
        }

    def _set_values(self, plugin_id: str, values: dict[str, float]) -> None:
        """Set controls of a running plugin. Owner thread."""
        plugin = self._plugin(plugin_id)
        self._require_running()
        self._write_values(plugin, values)

    def _write_values(self, plugin: _Plugin, values: Mapping[str, float]) -> None:
        """``set_parameter_value`` by symbol (Carla clamps; no callback). Owner thread."""
        carla_id = self._carla_id(plugin)
        for symbol, value in values.items():
            index = plugin.params.get(symbol)
            if index is None or symbol == plugin.type.enable_symbol:
                log.debug("%s has no control %r", plugin.id, symbol)
                continue
            self._host.set_parameter_value(carla_id, index, float(value))

    def _set_bypass(self, plugin_id: str, bypass: bool) -> None:
        """Bypass or engage; a reroute-bypassed plugin also rewires. Owner thread.

        Applied even when the plugin is already in that state, so that a
        repeated request also repairs the graph.

        Raises:
            EngineError: the rewiring failed; the plugin keeps its old state.
        """
        plugin = self._plugin(plugin_id)
        self._require_running()
        before = plugin.bypass
        try:
            self._apply_bypass(plugin, bypass)
            if plugin.bypass_mode == "reroute":
                self._rewire()
        except BaseException:
            self._roll_back(lambda: self._apply_bypass(plugin, before))
            raise

    def _apply_bypass(self, plugin: _Plugin, bypass: bool) -> None:
        """Set the plugin's enable control or dry/wet for ``bypass``. Owner thread."""
        carla_id = self._carla_id(plugin)
        mode = plugin.bypass_mode
        if mode == "enable-port":
            index, value = plugin.enable_index, plugin.type.enable_value(bypass)
            assert index is not None and value is not None
            self._host.set_parameter_value(carla_id, index, value)
        elif mode == "drywet":
            self._host.set_drywet(carla_id, 0.0 if bypass else 1.0)
        plugin.bypass = bypass

    def _roll_back(self, undo: Callable[[], None]) -> None:
        """After a failed change: restore the state, and the graph to match (best effort)."""
        try:
            self._drain()
            undo()
            if self._running:
                self._rewire()
        except Exception as exc:
            log.error("carla: could not restore the graph after a failed change: %s", exc)

    # -- owner thread: wiring --------------------------------------------------------

    def _desired(self) -> set[Edge]:
        """Every internal connection the chains want (all tracks)."""
        wanted: set[Edge] = set()
        graph = self._graph
        group_in = graph.group_named(AUDIO_INPUT_GROUP)
        group_out = graph.group_named(AUDIO_OUTPUT_GROUP)
        assert group_in is not None and group_out is not None
        for track_id, chain in self._chains.items():
            inputs = [(group_in, p) for p in self._in_ports[track_id]]
            outputs = [(group_out, p) for p in self._out_ports[track_id]]
            stages = [self._plugins[plugin_id].stage for plugin_id in chain]
            wanted.update((*a, *z) for a, z in chain_connections(inputs, stages, outputs))
        return wanted

    def _rewire(self) -> None:
        """Bring Carla's internal graph to :meth:`_desired`: connect, then disconnect."""
        host = self._host
        current = self._graph.connections
        connect, disconnect = connection_changes(current.keys(), self._desired())
        for edge in connect:
            if not host.patchbay_connect(False, *edge):
                raise EngineError(f"patchbay_connect{edge} failed: {host.get_last_error()}")
            self._drain()
        for edge in disconnect:
            connection = current.get(edge)
            if connection is not None and not host.patchbay_disconnect(False, connection):
                log.warning("patchbay_disconnect(%d) failed: %s", connection, host.get_last_error())
            self._drain()
            current.pop(edge, None)


def _inserted(chain: Sequence[str], plugin_id: str, position: int) -> list[str]:
    """A copy of ``chain`` with ``plugin_id`` at ``position`` (clamped)."""
    result = list(chain)
    result.insert(max(0, min(position, len(result))), plugin_id)
    return result
