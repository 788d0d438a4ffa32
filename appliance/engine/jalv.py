"""The JACK/jalv adapter: each plugin a ``jalv`` process, wired in series by JACK.

Debian's packages only: ``jackd2``, ``jalv`` and the LV2 plugins. Every plugin
runs in its own process, so a crashing plugin takes nothing else down; the
adapter notices, routes the track around it (dry), respawns it with its last
values and puts it back in the chain.

Threads:

* the asyncio loop's thread runs every public method and owns all state;
* one worker thread (``jalv-jack``) makes every blocking JACK call (open,
  connect, disconnect, port queries, close), so the loop never waits on the
  server and nothing runs on JACK's own threads;
* JACK's notification thread runs the xrun, port-registration and shutdown
  callbacks; they only count or hop onto the loop with
  ``loop.call_soon_threadsafe``.

Wiring is declarative: from the chains the loop computes the set of
connections it wants (:func:`appliance.engine.chain.chain_connections`:
bypassed or dead plugins skipped so the previous stage feeds the next one
directly, a dry pass-through, never a mute), then the worker connects what is
missing before it disconnects what is no longer wanted. A connection is the
adapter's to remove when one end is a plugin port, or when it runs straight
from a track input to a track output; anything else that touches a track's
endpoints (a monitor, the test rig's reference) is left alone.

A structural change (add, remove, move, bypass) holds the lock only while it
changes the chain and rewires; a jalv starts without it. The change stays
only if its rewiring worked: otherwise the old state is put back, a
background rewire brings the graph back to it, and the error propagates. A
jalv the engine no longer knows is always stopped, on any failure or
cancellation.

jalv facts this relies on (jalv 1.6, see the design field notes): ``-x -n NAME``
gives an exact client name, ports are ``NAME:SYMBOL``, ``-c SYM=VAL`` sets
initial values, ``set SYMBOL VALUE`` on stdin sets a control (no clamping),
EOF on stdin makes it exit, stdout is block-buffered unless run under
``stdbuf -oL``, and an unknown URI prints "Failed to find plugin" then crashes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import secrets
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jack  # type: ignore[import-untyped]

from ..controls import PluginType
from ..errors import EngineError, PluginLoadFailed
from . import (
    ENGINE_START_TIMEOUT,
    PLUGIN_START_TIMEOUT,
    Engine,
    EngineEvent,
    EngineInfo,
    EventSink,
    TrackPorts,
    find_chain,
    find_plugin,
)
from .chain import Stage, chain_connections, connection_changes
from .jackserver import DummySettings, JackServer, jack_environment, unique_server_name

log = logging.getLogger("appliance.engine.jalv")

T = TypeVar("T")

#: How long one blocking JACK call on the worker thread may take.
JACK_CALL_TIMEOUT = 5.0
#: How long a jalv process may take to exit after EOF, and again after SIGTERM.
PLUGIN_STOP_TIMEOUT = 2.0
#: Unsent ``set`` lines a jalv may have waiting before it is called stuck.
STDIN_BACKLOG_LIMIT = 1 << 20
#: Longest pause between two looks at a starting plugin's ports.
PORT_POLL_INTERVAL = 0.02
#: How long a dead plugin's JACK client may take to vanish before its respawn.
CLIENT_GONE_TIMEOUT = 5.0
#: Pauses before the respawn attempts of a dead plugin (one attempt each).
RESPAWN_DELAYS = (0.05, 0.25, 1.0, 2.0, 4.0)
#: A plugin that died this many times within :data:`RESPAWN_WINDOW` stays down.
RESPAWN_LIMIT = 5
#: Seconds over which :data:`RESPAWN_LIMIT` counts deaths.
RESPAWN_WINDOW = 60.0
#: Pause before retrying connections that failed (a client not active yet).
REWIRE_RETRY_INTERVAL = 0.1
#: Retries of failed connections before waiting for the next port to appear.
REWIRE_RETRY_LIMIT = 50
#: JACK client names are at most this long (``jack_client_name_size() - 1``).
CLIENT_NAME_MAX = 63

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

Connection = tuple[str, str]


def _safe_name(text: str) -> str:
    """A JACK-client-name-safe version of ``text`` (no ``:``, no spaces)."""
    return _UNSAFE.sub("_", text) or "_"


def _number(value: float) -> str:
    """A value as jalv's ``set`` and ``-c`` parse it."""
    return f"{float(value):.9g}"


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


@dataclass(eq=False)
class _Plugin:
    """One plugin instance and its jalv process. Loop thread only."""

    id: str
    track_id: str
    type: PluginType
    client_name: str
    values: dict[str, float]
    bypass: bool = False
    proc: asyncio.subprocess.Process | None = None
    alive: bool = False
    retired: bool = False
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    #: Values set since the last write to stdin; flushed once per loop turn.
    unsent: dict[str, float] = field(default_factory=dict)
    deaths: collections.deque[float] = field(default_factory=collections.deque)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(f"{self.client_name}:{s}" for s in self.type.audio_inputs)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(f"{self.client_name}:{s}" for s in self.type.audio_outputs)

    @property
    def ports(self) -> tuple[str, ...]:
        return self.inputs + self.outputs

    @property
    def stage(self) -> Stage[str]:
        """The plugin as the chain walk sees it: skipped while bypassed or down."""
        return Stage(self.inputs, self.outputs, in_path=self.alive and not self.bypass)

    def start_values(self) -> dict[str, float]:
        """Values for ``-c``: the plugin's own enable control on, then ours."""
        start: dict[str, float] = {}
        enable = self.type.enable_value(bypass=False)
        if self.type.enable_symbol is not None and enable is not None:
            start[self.type.enable_symbol] = enable
        start.update(self.values)
        return start

    def output_tail(self) -> str:
        return " | ".join(line for line in self.output if line)


@dataclass(frozen=True)
class _WiringPlan:
    """What the worker should make of the graph (computed on the loop)."""

    desired: frozenset[Connection]
    plugin_ports: frozenset[str]
    endpoints: frozenset[str]


class JalvEngine(Engine):
    """Hosts each plugin in a ``jalv`` process and wires the chains with JACK.

    All public methods are called from the asyncio loop's thread.

    Args:
        tracks: the tracks and their fixed JACK endpoints.
        server_name: the JACK server to use (``None``: the default server).
            With ``dummy_server`` it names the server to start (``None``:
            a unique name is made up).
        on_event: receives :class:`EngineEvent` on the loop's thread.
        dummy_server: start a private dummy-backend server with these
            settings (the virtual box) and stop it again in :meth:`stop`.
        client_prefix: prefix of every JACK client name this engine opens;
            unique per instance by default.
        jalv: the jalv executable.
    """

    name = "jalv"

    def __init__(
        self,
        tracks: Sequence[TrackPorts],
        server_name: str | None = None,
        on_event: EventSink | None = None,
        dummy_server: DummySettings | None = None,
        client_prefix: str | None = None,
        jalv: str = "jalv",
    ) -> None:
        super().__init__(tracks, on_event)
        self.server_name = server_name
        self._dummy_settings = dummy_server
        self._server: JackServer | None = None
        prefix = client_prefix if client_prefix is not None else f"jalv-{secrets.token_hex(2)}"
        self._prefix = _safe_name(prefix)[: CLIENT_NAME_MAX - 16]
        self._jalv = jalv
        self._client: Any = None  # jack.Client; touched on the worker thread only
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._chains: dict[str, list[_Plugin]] = {track_id: [] for track_id in self.tracks}
        self._plugins: dict[str, _Plugin] = {}
        self._loading: dict[str, _Plugin] = {}  # spawning outside the lock, not in a chain yet
        self._client_names: set[str] = set()
        self._stale_ports: set[str] = set()  # of dead clients that JACK has not dropped yet
        self._running = False
        self._started = False
        self._xruns = 0
        self._ports_changed = asyncio.Event()
        self._rewire_task: asyncio.Task[None] | None = None
        self._rewire_wanted = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping: set[asyncio.Future[None]] = set()  # terminations under way

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the private server if asked, open the JACK client, wire tracks dry.

        Raises:
            EngineError: the server cannot be started or reached.
        """
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._started = True
        try:
            if self._dummy_settings is not None and self._server is None:
                name = self.server_name or unique_server_name("box")
                self._server = JackServer(name, self._dummy_settings)
                await self._server.start()
                self.server_name = self._server.name
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jalv-jack")
            await self._jack(self._open_client, timeout=ENGINE_START_TIMEOUT)
        except BaseException:
            await self.stop()
            raise
        self._running = True
        log.info("jalv engine up on jack server %s", self.server_name or "(default)")
        async with self._lock:
            await self._rewire()

    async def stop(self) -> None:
        """Stop every jalv, close the JACK client, stop a private server.

        Safe to call twice, and after a failed :meth:`start`.
        """
        if not self._started:
            return
        self._started = False
        was_running, self._running = self._running, False
        rewire_task, self._rewire_task = self._rewire_task, None
        if rewire_task is not None:
            rewire_task.cancel()
            await asyncio.gather(rewire_task, return_exceptions=True)
        try:
            await asyncio.wait_for(self._lock.acquire(), PLUGIN_START_TIMEOUT)
            locked = True
        except TimeoutError:
            locked = False
            log.warning("stopping while a structural change is still running")
        try:
            plugins = [*self._plugins.values(), *self._loading.values()]
            for plugin in plugins:
                plugin.retired = True
            await asyncio.gather(*(self._terminate(p) for p in plugins))
            self._plugins.clear()
            self._client_names.clear()
            self._stale_ports.clear()
            for chain in self._chains.values():
                chain.clear()
            if self._executor is not None:
                executor, self._executor = self._executor, None
                # Behind a JACK call that is stuck, the close waits its turn (it must
                # run, or the client leaks); stop waits for neither of them for long.
                closing = asyncio.wrap_future(executor.submit(self._close_client))
                try:
                    await asyncio.wait_for(asyncio.shield(closing), JACK_CALL_TIMEOUT)
                except TimeoutError:
                    log.warning(
                        "JACK client not closed within %s s; it closes when JACK answers", JACK_CALL_TIMEOUT
                    )
                except jack.JackError as exc:
                    log.warning("closing the JACK client failed: %s", exc)
                executor.shutdown(wait=False)
        finally:
            if locked:
                self._lock.release()
        await asyncio.gather(*self._stopping, return_exceptions=True)
        leftovers = list(self._tasks)  # output pumps end at EOF; watchers see retired
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        await asyncio.gather(*self._stopping, return_exceptions=True)  # of cancelled spawns
        if self._server is not None:
            await self._server.stop()
            self._server = None
        if was_running:
            log.info("jalv engine stopped")

    # -- the engine port -------------------------------------------------------------

    async def add_plugin(
        self,
        track_id: str,
        plugin_id: str,
        plugin_type: PluginType,
        position: int,
        values: Mapping[str, float],
        bypass: bool = False,
    ) -> None:
        """Start a jalv for the plugin and wire it in at ``position``.

        The jalv starts without the lock (other changes go on meanwhile);
        the position is taken in the chain as it is once it is up.

        Raises:
            UnknownTrack: no such track.
            PluginLoadFailed: jalv failed, or its ports did not appear within
                :data:`PLUGIN_START_TIMEOUT`; the chain is left as it was.
            EngineError: the engine is not running, or the rewiring failed;
                the chain is left as it was and the jalv stopped.
        """
        self._require_running()
        self._chain_of(track_id)
        if plugin_id in self._plugins or plugin_id in self._loading:
            raise PluginLoadFailed(f"plugin id {plugin_id!r} is already in use")
        plugin = _Plugin(
            id=plugin_id,
            track_id=track_id,
            type=plugin_type,
            client_name=self._client_name_for(plugin_id),
            values=dict(values),
            bypass=bypass,
        )
        self._client_names.add(plugin.client_name)
        self._loading[plugin_id] = plugin
        try:
            # Without the lock: a bypass pressed meanwhile need not wait for jalv.
            await self._spawn(plugin)
            async with self._lock:
                if plugin.retired:  # stop() came first
                    raise EngineError("the jalv engine stopped while the plugin started")
                self._require_running()
                chain = self._chains[track_id]
                del self._loading[plugin_id]
                self._plugins[plugin_id] = plugin
                chain.insert(max(0, min(position, len(chain))), plugin)

                def undo() -> None:
                    chain.remove(plugin)
                    del self._plugins[plugin_id]
                    self._stale_ports.update(plugin.ports)  # may be wired in: ours to undo

                await self._rewire_or_undo(undo)
        except BaseException:
            self._loading.pop(plugin_id, None)
            plugin.retired = True
            await self._stop_process(plugin)
            self._client_names.discard(plugin.client_name)
            raise
        log.debug("added %s (%s) to %s", plugin_id, plugin_type.uri, track_id)

    async def remove_plugin(self, plugin_id: str) -> None:
        """Wire the chain around the plugin, then stop its jalv.

        Raises:
            UnknownPlugin: no such plugin.
            EngineError: the rewiring failed; the plugin stays where it was.
        """
        async with self._lock:
            plugin = self._plugin(plugin_id)
            chain = self._chains[plugin.track_id]
            before = list(chain)
            chain.remove(plugin)

            def restore() -> None:
                chain[:] = before

            await self._rewire_or_undo(restore, retired=[plugin])
            del self._plugins[plugin_id]
            plugin.retired = True
            try:
                await self._stop_process(plugin)
            finally:
                self._client_names.discard(plugin.client_name)

    async def move_plugin(self, plugin_id: str, position: int) -> None:
        """Move a plugin within its own track's chain and rewire.

        Raises:
            UnknownPlugin: no such plugin.
            EngineError: the rewiring failed; the chain stays as it was.
        """
        async with self._lock:
            plugin = self._plugin(plugin_id)
            chain = self._chains[plugin.track_id]
            before = list(chain)
            chain.remove(plugin)
            chain.insert(max(0, min(position, len(chain))), plugin)

            def restore() -> None:
                chain[:] = before

            await self._rewire_or_undo(restore)

    async def set_parameters(self, plugin_id: str, values: Mapping[str, float]) -> None:
        """Send ``set SYMBOL VALUE`` lines to the plugin's jalv.

        The values are kept as the plugin's current ones (a respawn starts
        with them) even when the process is down at that moment.

        Raises:
            UnknownPlugin: no such plugin.
        """
        plugin = self._plugin(plugin_id)
        plugin.values.update(values)
        if plugin.alive:
            # A slider storm becomes one write per loop turn with the newest values.
            if not plugin.unsent:
                asyncio.get_running_loop().call_soon(self._flush, plugin)
            plugin.unsent.update(values)

    async def set_bypass(self, plugin_id: str, bypass: bool) -> None:
        """Route the chain around the plugin (or back through it).

        Rewires even when the plugin is already in that state, so that a
        repeated request also repairs the graph.

        Raises:
            UnknownPlugin: no such plugin.
            EngineError: the rewiring failed; the plugin keeps its old state.
        """
        async with self._lock:
            plugin = self._plugin(plugin_id)
            before, plugin.bypass = plugin.bypass, bypass

            def restore() -> None:
                plugin.bypass = before

            await self._rewire_or_undo(restore)

    def info(self) -> EngineInfo:
        """Rate, buffer, DSP load and xruns. Never blocks (shared-memory reads)."""
        details: dict[str, object] = {
            "server": self.server_name or "default",
            "plugins": len(self._plugins),
            "plugins_running": sum(1 for p in self._plugins.values() if p.alive),
        }
        client = self._client
        if not self._running or client is None:
            return EngineInfo(self.name, False, xruns=self._xruns, details=details)
        if self._server is not None:
            details["realtime"] = self._server.is_realtime
        try:
            return EngineInfo(
                self.name,
                True,
                sample_rate=int(client.samplerate),
                buffer_size=int(client.blocksize),
                dsp_load=float(client.cpu_load()),
                xruns=self._xruns,
                details=details,
            )
        except jack.JackError:
            return EngineInfo(self.name, False, xruns=self._xruns, details=details)

    def chain(self, track_id: str) -> list[str]:
        """Plugin ids of a track in chain order.

        Raises:
            UnknownTrack: no such track.
        """
        return [p.id for p in self._chain_of(track_id)]

    def plugin_pid(self, plugin_id: str) -> int | None:
        """The process id of a plugin's jalv, or None while it is down (for tests).

        Raises:
            UnknownPlugin: no such plugin.
        """
        plugin = self._plugin(plugin_id)
        if plugin.proc is None or plugin.proc.returncode is not None:
            return None
        return plugin.proc.pid

    # -- lookups -----------------------------------------------------------------

    def _require_running(self) -> None:
        if not self._running:
            raise EngineError("the jalv engine is not running")

    def _chain_of(self, track_id: str) -> list[_Plugin]:
        return find_chain(self._chains, track_id)

    def _plugin(self, plugin_id: str) -> _Plugin:
        return find_plugin(self._plugins, plugin_id)

    def _client_name_for(self, plugin_id: str) -> str:
        base = f"{self._prefix}-{_safe_name(plugin_id)}"[:CLIENT_NAME_MAX]
        name, n = base, 1
        while name in self._client_names:
            n += 1
            name = f"{base[: CLIENT_NAME_MAX - 4]}~{n}"
        return name

    def _emit(self, event: EngineEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("event sink failed on %s", event.kind)

    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the JACK worker thread --------------------------------------------------

    async def _jack(self, call: Callable[..., T], *args: Any, timeout: float = JACK_CALL_TIMEOUT) -> T:
        """Run a blocking JACK call on the worker thread (loop thread only)."""
        if self._executor is None:
            raise EngineError("the jalv engine is not running")
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, call, *args), timeout)
        except TimeoutError:
            raise EngineError(f"JACK did not answer within {timeout} s") from None
        except jack.JackError as exc:
            raise EngineError(f"JACK: {exc}") from exc

    def _open_client(self) -> None:
        """Worker thread: open and activate the engine's own JACK client."""
        try:
            client = jack.Client(self._prefix, servername=self.server_name, no_start_server=True)
        except jack.JackOpenError as exc:
            raise EngineError(f"cannot reach jack server {self.server_name or '(default)'}: {exc}") from exc
        client.set_xrun_callback(self._on_xrun)
        client.set_port_registration_callback(self._on_port_registration)
        client.set_shutdown_callback(self._on_shutdown)
        client.activate()
        client.get_ports()  # so that unregistrations of existing ports are reported too
        self._client = client

    def _close_client(self) -> None:
        """Worker thread: deactivate and close the JACK client."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(jack.JackError):
                client.deactivate()
            client.close()

    def _port_names(self, client_name: str) -> set[str]:
        """Worker thread: the names of a client's ports."""
        prefix = f"{client_name}:"
        return {p.name for p in self._client.get_ports() if p.name.startswith(prefix)}

    def _apply(self, plan: _WiringPlan) -> list[str]:
        """Worker thread: connect what is missing, then disconnect what is unwanted.

        Returns:
            Descriptions of the connections that could not be made or undone
            (for example a client whose ports exist but which is not active yet).
        """
        client = self._client
        if client is None:
            raise EngineError("the jalv engine's JACK client is closed")
        existing = {port.name: port for port in client.get_ports(is_audio=True)}
        want = {(s, d) for s, d in plan.desired if s in existing and d in existing}
        current: set[Connection] = set()
        for name in plan.plugin_ports | plan.endpoints:
            port = existing.get(name)
            if port is None:
                continue
            try:
                connected = client.get_all_connections(port)
            except jack.JackError:  # its client died since get_ports: no connections left
                continue
            for other in connected:
                src, dst = (name, other.name) if port.is_output else (other.name, name)
                ours = src in plan.plugin_ports or dst in plan.plugin_ports
                if ours or (src in plan.endpoints and dst in plan.endpoints):
                    current.add((src, dst))
        failures: list[str] = []
        connect, disconnect = connection_changes(current, want)
        for src, dst in connect:
            try:
                client.connect(src, dst)
            except jack.JackError as exc:
                failures.append(f"connect {src} -> {dst}: {exc}")
        for src, dst in disconnect:
            try:
                client.disconnect(src, dst)
            except jack.JackError as exc:
                failures.append(f"disconnect {src} -> {dst}: {exc}")
        return failures

    # -- JACK's notification thread ----------------------------------------------

    def _on_xrun(self, delayed_usecs: float) -> None:
        """JACK notification thread: count the xrun."""
        self._xruns += 1

    def _on_port_registration(self, port: Any, register: bool) -> None:
        """JACK notification thread: hand the port's name to the loop."""
        if port is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self._loop.call_soon_threadsafe(self._port_changed, port.name, register)

    def _on_shutdown(self, status: Any, reason: str) -> None:
        """JACK notification thread: the server went away."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._server_gone, reason)

    # -- the loop's reactions ----------------------------------------------------

    def _port_changed(self, name: str, register: bool) -> None:
        self._ports_changed.set()
        if not register:
            self._stale_ports.discard(name)
        if (
            register
            and self._running
            and any(name in track.inputs or name in track.outputs for track in self.tracks.values())
        ):
            self._request_rewire()

    def _server_gone(self, reason: str) -> None:
        if not self._running:
            return
        self._running = False
        log.error("jack server %s shut the engine down: %s", self.server_name, reason)
        self._emit(EngineEvent("engine-died", None, f"JACK server gone: {reason}"))

    # -- wiring --------------------------------------------------------------------

    def _plan(self, retired: Iterable[_Plugin] = ()) -> _WiringPlan:
        """The connections every track's chain wants, plus the ports we own."""
        desired: set[Connection] = set()
        plugin_ports: set[str] = set()
        endpoints: set[str] = set()
        for track in self.tracks.values():
            endpoints.update(track.inputs, track.outputs)
            chain = self._chains[track.id]
            for plugin in chain:
                plugin_ports.update(plugin.ports)
            desired |= chain_connections(track.inputs, [p.stage for p in chain], track.outputs)
        for plugin in retired:
            plugin_ports.update(plugin.ports)
        plugin_ports.update(self._stale_ports)
        return _WiringPlan(frozenset(desired), frozenset(plugin_ports), frozenset(endpoints))

    async def _rewire_or_undo(self, undo: Callable[[], object], retired: Iterable[_Plugin] = ()) -> None:
        """Rewire after a change to the engine's state; if that fails, undo the change.

        Loop thread, with the lock held. A failed rewire may have left part of
        the graph changed: a background rewire then brings it back to the
        restored state, and the error is raised.
        """
        if not self._running:
            return
        try:
            await self._rewire(retired)
        except BaseException:
            undo()
            self._request_rewire()
            raise

    async def _rewire(self, retired: Iterable[_Plugin] = ()) -> None:
        """Bring the graph to the plan (loop thread, with the lock held)."""
        failures = await self._jack(self._apply, self._plan(retired))
        if failures:
            log.debug("rewire left %d connection(s) for later: %s", len(failures), failures)
            self._request_rewire()

    def _request_rewire(self) -> None:
        """Ask for a rewire soon; requests made meanwhile coalesce into one."""
        self._rewire_wanted = True
        if self._rewire_task is None or self._rewire_task.done():
            self._rewire_task = asyncio.get_running_loop().create_task(self._rewire_later())

    async def _rewire_later(self) -> None:
        try:
            await self._retry_rewire()
        except EngineError as exc:
            log.error("rewiring failed: %s", exc)

    async def _retry_rewire(self) -> None:
        attempts = 0
        while self._rewire_wanted and self._running:
            self._rewire_wanted = False
            async with self._lock:
                if not self._running:
                    return
                failures = await self._jack(self._apply, self._plan())
            if not failures:
                attempts = 0
                continue  # done, unless another request came in meanwhile
            attempts += 1
            if attempts >= REWIRE_RETRY_LIMIT:
                log.warning("giving up on %d connection(s): %s", len(failures), failures[:4])
                return
            await asyncio.sleep(REWIRE_RETRY_INTERVAL)
            self._rewire_wanted = True

    # -- jalv processes ------------------------------------------------------------

    async def _spawn(self, plugin: _Plugin) -> None:
        """Start the plugin's jalv and wait for all its audio ports.

        On any failure, a cancellation included, the new jalv is stopped
        again before the exception propagates. Needs no lock: it touches only
        ``plugin``, which is in no chain or has its process down.

        Raises:
            PluginLoadFailed: jalv could not run, exited, or its ports did not
                appear within :data:`PLUGIN_START_TIMEOUT`.
        """
        sent = plugin.start_values()
        argv = ["stdbuf", "-oL", self._jalv, "-x", "-n", plugin.client_name]
        for symbol, value in sent.items():
            argv += ["-c", f"{symbol}={_number(value)}"]
        argv.append(plugin.type.uri)
        plugin.output.clear()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=jack_environment(self.server_name),
            )
        except OSError as exc:
            raise PluginLoadFailed(f"cannot run jalv for {plugin.type.uri}: {exc}") from exc
        plugin.proc = proc
        assert proc.stdout is not None
        self._background(self._pump(plugin, proc.stdout))
        try:
            await asyncio.wait_for(self._wait_ports(plugin, proc), PLUGIN_START_TIMEOUT)
        except BaseException as exc:
            try:
                await self._stop_process(plugin)
            finally:
                plugin.proc = None
            if not isinstance(exc, (TimeoutError, PluginLoadFailed, EngineError)):
                raise  # a cancellation, or a bug: the process is gone either way
            why = str(exc) or f"its ports did not appear within {PLUGIN_START_TIMEOUT} s"
            raise PluginLoadFailed(f"{plugin.type.uri}: {why}") from exc
        plugin.alive = True
        self._background(self._watch(plugin, proc))
        missed = {s: v for s, v in plugin.values.items() if sent.get(s) != v}
        if missed:  # set while the process was starting
            plugin.unsent.update(missed)
            self._flush(plugin)

    async def _wait_ports(self, plugin: _Plugin, proc: asyncio.subprocess.Process) -> None:
        expected = set(plugin.ports)
        while True:
            self._ports_changed.clear()
            if expected <= await self._jack(self._port_names, plugin.client_name):
                return
            if proc.returncode is not None:
                await asyncio.sleep(0.05)  # let the pump catch the last words
                raise PluginLoadFailed(
                    f"jalv exited with {_describe_exit(proc.returncode)}: {plugin.output_tail()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ports_changed.wait(), PORT_POLL_INTERVAL)

    async def _wait_client_gone(self, plugin: _Plugin) -> bool:
        """Wait until a dead plugin's JACK client has no ports left; False on timeout."""

        async def gone() -> None:
            while True:
                self._ports_changed.clear()
                if not await self._jack(self._port_names, plugin.client_name):
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ports_changed.wait(), PORT_POLL_INTERVAL)

        try:
            await asyncio.wait_for(gone(), CLIENT_GONE_TIMEOUT)
        except TimeoutError:
            return False
        return True

    def _rename(self, plugin: _Plugin) -> None:
        """Give a plugin a fresh client name; its old ports stay ours until they go."""
        self._stale_ports.update(plugin.ports)
        old = plugin.client_name
        plugin.client_name = self._client_name_for(f"{plugin.id}.{secrets.token_hex(2)}")
        self._client_names.discard(old)
        self._client_names.add(plugin.client_name)
        log.warning("client %s lingers in JACK; respawning as %s", old, plugin.client_name)

    async def _pump(self, plugin: _Plugin, stream: asyncio.StreamReader) -> None:
        """Read a jalv's output for as long as it lives, so the pipe never fills."""
        while line := await stream.readline():
            text = line.decode(errors="replace").strip()
            while text.startswith(">"):  # jalv's prompt glues onto the next line
                text = text[1:].lstrip()
            plugin.output.append(text)
            log.debug("%s: %s", plugin.client_name, text)

    def _flush(self, plugin: _Plugin) -> None:
        """Write the values set since the last flush. Loop thread, never waits."""
        values, plugin.unsent = plugin.unsent, {}
        proc = plugin.proc
        if not values or proc is None or proc.stdin is None or proc.returncode is not None:
            return
        lines = "".join(f"set {symbol} {_number(value)}\n" for symbol, value in values.items())
        try:
            proc.stdin.write(lines.encode())
        except (BrokenPipeError, ConnectionResetError):
            log.debug("%s: stdin closed; values kept for the respawn", plugin.client_name)
            return
        transport = proc.stdin.transport
        if transport.get_write_buffer_size() > STDIN_BACKLOG_LIMIT:
            log.warning(
                "%s: not reading its stdin; %d bytes of values wait",
                plugin.client_name,
                transport.get_write_buffer_size(),
            )

    async def _stop_process(self, plugin: _Plugin) -> None:
        """:meth:`_terminate`, carried on even if the caller is cancelled meanwhile."""
        task = asyncio.ensure_future(self._terminate(plugin))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        await asyncio.shield(task)

    async def _terminate(self, plugin: _Plugin) -> None:
        """Stop a plugin's jalv: EOF on stdin, then SIGTERM, then SIGKILL."""
        plugin.alive = False
        proc = plugin.proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            proc.stdin.close()
        for stop in (None, proc.terminate, proc.kill):
            if proc.returncode is not None:
                break
            if stop is not None:
                with contextlib.suppress(ProcessLookupError):
                    stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), PLUGIN_STOP_TIMEOUT)
        if proc.returncode is None:
            log.error("%s (pid %d) would not die", plugin.client_name, proc.pid)

    async def _watch(self, plugin: _Plugin, proc: asyncio.subprocess.Process) -> None:
        """Notice a jalv that dies on its own and bring the plugin back."""
        try:
            await self._recover(plugin, proc)
        except EngineError as exc:
            log.error("recovery of plugin %s failed: %s", plugin.id, exc)
            self._emit(EngineEvent("plugin-died", plugin.id, f"not restarted: {exc}"))

    async def _recover(self, plugin: _Plugin, proc: asyncio.subprocess.Process) -> None:
        returncode = await proc.wait()
        if plugin.proc is not proc or plugin.retired or not self._running:
            return
        plugin.alive = False
        why = f"jalv exited with {_describe_exit(returncode)}"
        log.warning("plugin %s died: %s", plugin.id, why)
        self._emit(EngineEvent("plugin-died", plugin.id, why))
        loop = asyncio.get_running_loop()
        plugin.deaths.append(loop.time())
        while plugin.deaths and plugin.deaths[0] < loop.time() - RESPAWN_WINDOW:
            plugin.deaths.popleft()
        async with self._lock:
            if plugin.retired or not self._running:
                return
            await self._rewire()  # dry around the hole while it restarts
        if len(plugin.deaths) >= RESPAWN_LIMIT:
            self._give_up(plugin, f"died {len(plugin.deaths)} times within {RESPAWN_WINDOW:.0f} s")
            return
        if not await self._wait_client_gone(plugin):
            if plugin.retired or not self._running:
                return
            self._rename(plugin)
        for delay in RESPAWN_DELAYS:
            await asyncio.sleep(delay)
            if plugin.retired or not self._running:
                return
            try:
                # Without the lock, as in add_plugin: the plugin is down, so
                # the chain walk skips it whatever else changes meanwhile.
                await self._spawn(plugin)
            except PluginLoadFailed as exc:
                log.warning("respawn of %s failed: %s", plugin.id, exc)
                continue
            async with self._lock:
                if plugin.retired or not self._running:  # removed meanwhile
                    await self._stop_process(plugin)
                    return
                await self._rewire()
            log.info("plugin %s restored", plugin.id)
            self._emit(EngineEvent("plugin-restored", plugin.id, "respawned with its values"))
            return
        self._give_up(plugin, "respawn failed")

    def _give_up(self, plugin: _Plugin, why: str) -> None:
        log.error("plugin %s stays down (%s); its track passes dry there", plugin.id, why)
        self._emit(EngineEvent("plugin-died", plugin.id, f"not restarted: {why}"))
