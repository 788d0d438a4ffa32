"""The JACK side both engines stand on: the server, the box's wiring client, the dry path.

An engine hosts plugins in processes of its own (jalv, Carla hosts) whose
JACK clients hang on the tracks' endpoints; what it shares with the other
engine is everything between those clients and JACK::

    engine ──plan()──▶ JackGraph ──connect/disconnect──▶ JACK server (or a private dummy one)
       ▲                  │
       └── events ◀───────┘  server gone, graph stalled (no cycle), ports (un)registered
                          ├─ DryPathKeeper: on a server that outlives the box, the tracks
                          │  play dry once the box has gone
                          └─ TempoMaster: the box's BPM on JACK's transport, for plugins
                             that follow their host's tempo

The engine says which connections it wants (``plan``: a
:class:`~appliance.engine.jack.wiring.WiringPlan`, computed on the loop); the
graph makes them, now (:meth:`JackGraph.rewire`, the engine's structural
lock held) or soon (:meth:`JackGraph.request_rewire`: requests coalesce and
failed connections are retried). Loop thread only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TypeVar

from ...core.errors import EngineError
from .. import ENGINE_START_TIMEOUT, Engine, EngineEvent, EngineInfo, TrackPorts
from ..faders import fade_step
from .drypath import DryPathKeeper
from .server import DummySettings, JackServer, unique_server_name
from .tempo import DEFAULT_BPM, TempoMaster
from .wiring import JACK_CALL_TIMEOUT, JackWiring, WiringPlan

T = TypeVar("T")

log = logging.getLogger("appliance.engine")

#: Pause before retrying connections that failed (a client not active yet).
REWIRE_RETRY_INTERVAL = 0.1
#: Retries of failed connections before waiting for the next change.
REWIRE_RETRY_LIMIT = 50
#: How long the tempo's timebase master may take to roll the transport at the box's tempo.
TEMPO_READY_TIMEOUT = 2.0


class JackGraph:
    """One engine's JACK server, wiring client and dry path.

    Args:
        engine: the engine's name, for the log and its events.
        tracks: the tracks and their fixed JACK endpoints.
        server_name: the JACK server (None: the default). With ``dummy`` it
            names the server to start (None: a unique name).
        dummy: start a private dummy-backend server with these settings
            (the virtual box) and stop it again in :meth:`stop_server`.
        client_name: the wiring client's JACK name.
        plan: the connections the engine wants now.
        lock: the engine's structural lock (a rewire in the background takes it).
        emit: the engine's events: ``engine-died`` (``needs_restart``) when
            the server goes, ``engine-stalled``/``engine-restored`` when its
            cycles stop and start again.
        on_port: ``(port name, registered)`` for the engine, after the graph's own bookkeeping.
        graph_fault: test hook run before every graph change (see :class:`JackWiring`).
        jack_timeout: how long one blocking JACK call may take.
    """

    def __init__(
        self,
        engine: str,
        tracks: Mapping[str, TrackPorts],
        server_name: str | None,
        dummy: DummySettings | None,
        client_name: str,
        plan: Callable[[], WiringPlan],
        lock: asyncio.Lock,
        emit: Callable[[EngineEvent], None],
        on_port: Callable[[str, bool], None] = lambda name, registered: None,
        graph_fault: Callable[[], None] | None = None,
        jack_timeout: float = JACK_CALL_TIMEOUT,
    ) -> None:
        self.engine = engine
        self.tracks = tracks
        self.server_name = server_name
        self.client_name = client_name
        #: True while the engine plays on a live server (the engine sets it once its hosts are up).
        self.running = False
        #: Ports of clients that are gone or going, not yet unregistered: connections to them are ours.
        self.stale_ports: set[str] = set()
        self._dummy = dummy
        self._plan = plan
        self._lock = lock
        self._emit = emit
        self._on_port = on_port
        self._graph_fault = graph_fault
        self._jack_timeout = jack_timeout
        self._server: JackServer | None = None
        self._wiring: JackWiring | None = None
        self._dry_path: DryPathKeeper | None = None
        #: The box's tempo: the transport's from every open on.
        self.bpm = DEFAULT_BPM
        #: Whether :meth:`open` starts the tempo's timebase master (config ``transport_master``).
        self.transport_master = False
        self._tempo: TempoMaster | None = None
        self._rewire_task: asyncio.Task[None] | None = None
        self._rewire_wanted = False
        self._gone: str | None = None  # why the server went, if it did since open()

    @property
    def wiring(self) -> JackWiring:
        """The wiring client.

        Raises:
            EngineError: the graph is not open.
        """
        if self._wiring is None:
            raise EngineError(f"the {self.engine} engine is not running")
        return self._wiring

    @property
    def realtime(self) -> bool | None:
        """Whether the private server runs realtime; None on a server of someone else's."""
        return self._server.is_realtime if self._server is not None else None

    async def open(self) -> None:
        """Start the private server if asked, open the wiring client, start the dry-path keeper.

        Raises:
            EngineError: the server cannot be started or reached (what was
                started is left for :meth:`close` and :meth:`stop_server`).
        """
        self._gone = None
        if self._dummy is not None and self._server is None:
            self._server = JackServer(self.server_name or unique_server_name("box"), self._dummy)
            await self._server.start()
            self.server_name = self._server.name
        self._wiring = JackWiring(
            self.client_name,
            self.server_name,
            self._port_changed,
            self._server_gone,
            self._graph_fault,
            self._jack_timeout,
            on_stall=self._graph_stalled,
        )
        await asyncio.wait_for(self._wiring.open(), ENGINE_START_TIMEOUT)
        if self.transport_master:
            self._tempo = TempoMaster(self.server_name, self.bpm)
            await self._tempo.start()
            if self._tempo.running:  # rolling at the tempo before any plugin loads: a synced one needs it
                await self._await_tempo()
        if self._server is None:
            self._dry_path = DryPathKeeper(self.server_name, self.tracks.values())
            await self._dry_path.start()

    def start_running(self) -> None:
        """The engine's hosts are up: it plays from now on (until :meth:`close` or the server goes).

        Raises:
            EngineError: the server went away since :meth:`open` (nobody
                was told yet: the engine's start fails with this).
        """
        if self._gone is not None:
            raise EngineError(f"JACK server gone: {self._gone}")
        self.running = True

    async def cancel_rewires(self) -> None:
        """Stop a rewire waiting to run (the engine stops)."""
        task, self._rewire_task = self._rewire_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        """The engine's hosts are gone: the dry path takes over (its keeper wires it and ends),
        and the wiring client closes. Safe to call twice."""
        self.running = False
        self.stale_ports.clear()
        if self._tempo is not None:
            await self._tempo.stop()
            self._tempo = None
        if self._dry_path is not None:
            await self._dry_path.release()
            self._dry_path = None
        if self._wiring is not None:
            await self._wiring.close()

    async def _await_tempo(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TEMPO_READY_TIMEOUT
        while loop.time() < deadline:
            bpm = await self.wiring.transport_bpm()
            if bpm is not None and abs(bpm - self.bpm) < 0.01:
                return
            await asyncio.sleep(0.01)
        log.warning("JACK's transport is not rolling at %g BPM: synced plugins may miss the tempo", self.bpm)

    def set_tempo(self, bpm: float) -> None:
        """The transport's tempo, now and after every later open."""
        self.bpm = bpm
        if self._tempo is not None:
            self._tempo.set(bpm)

    async def stop_server(self) -> None:
        """Stop the private server, if this graph started one."""
        if self._server is not None:
            await self._server.stop()
            self._server = None

    # -- rewiring --------------------------------------------------------------------

    async def rewire(self, plan: WiringPlan | None = None) -> None:
        """Bring the graph to ``plan`` (default: the engine's plan now); lock held.

        Connections that fail are left to a background retry.

        Raises:
            EngineError: JACK did not answer.
        """
        failures = await self.wiring.apply(plan if plan is not None else self._plan())
        if failures:
            log.debug("rewire left %d connection(s) for later: %s", len(failures), failures)
            self.request_rewire()

    def request_rewire(self) -> None:
        """Ask for a rewire soon; requests made meanwhile coalesce into one."""
        self._rewire_wanted = True
        if self.running and (self._rewire_task is None or self._rewire_task.done()):
            self._rewire_task = asyncio.get_running_loop().create_task(self._rewire_later())

    async def _rewire_later(self) -> None:
        attempts = 0
        try:
            while self._rewire_wanted and self.running:
                self._rewire_wanted = False
                async with self._lock:
                    if not self.running:
                        return
                    failures = await self.wiring.apply(self._plan())
                if not failures:
                    attempts = 0
                    continue  # done, unless another request came in meanwhile
                attempts += 1
                if attempts >= REWIRE_RETRY_LIMIT:
                    log.warning("giving up on %d connection(s): %s", len(failures), failures[:4])
                    return
                await asyncio.sleep(REWIRE_RETRY_INTERVAL)
                self._rewire_wanted = True
        except EngineError as exc:
            log.error("rewiring failed: %s", exc)

    # -- what JACK says --------------------------------------------------------------

    def info(self, up: bool, details: dict[str, object]) -> EngineInfo:
        """The engine's health: running while ``up`` (its hosts) and the graph moves. Never blocks."""
        details = {"server": self.server_name or "default", **details}
        if self._server is not None:
            details["realtime"] = self._server.is_realtime
        wiring = self._wiring.info() if self._wiring is not None else None
        if wiring is not None and wiring.stalled:
            details["graph"] = "stalled"
        if wiring is None or not (up and self.running and wiring.running) or wiring.stalled:
            return EngineInfo(self.engine, False, xruns=wiring.xruns if wiring else 0, details=details)
        return EngineInfo(
            self.engine,
            True,
            sample_rate=wiring.sample_rate,
            buffer_size=wiring.buffer_size,
            dsp_load=wiring.dsp_load,
            xruns=wiring.xruns,
            details=details,
        )

    def fade_step(self) -> float:
        """Seconds between two steps of a fade on this server (:func:`~appliance.engine.faders.fade_step`)."""
        wiring = self._wiring.info() if self._wiring is not None else None
        return fade_step(wiring.sample_rate, wiring.buffer_size) if wiring is not None else fade_step(0, 0)

    async def paced(self, steps: Iterable[T]) -> AsyncIterator[T]:
        """Each of ``steps`` in turn, :meth:`fade_step` apart on the loop's clock. Each step has
        its own deadline from the first, so a late wakeup does not push the later ones back:
        slept one after another, a fade's 8 steps of 2.7 ms took 26–30 ms instead of 21."""
        loop = asyncio.get_running_loop()
        interval = self.fade_step()
        start = loop.time()
        for index, step in enumerate(steps):
            yield step
            await asyncio.sleep(max(0.0, start + (index + 1) * interval - loop.time()))

    def _port_changed(self, name: str, register: bool) -> None:
        if not register:
            self.stale_ports.discard(name)
        self._on_port(name, register)
        endpoints = any(name in track.inputs or name in track.outputs for track in self.tracks.values())
        if register and self.running and endpoints:
            self.request_rewire()  # a track's port came (back): wire it

    def _server_gone(self, reason: str) -> None:
        self._gone = reason
        if not self.running:
            return  # still starting: the start fails (start_running)
        self.running = False
        log.error("jack server %s shut the %s engine down: %s", self.server_name, self.engine, reason)
        self._emit(EngineEvent("engine-died", None, f"JACK server gone: {reason}", needs_restart=True))

    def _graph_stalled(self, stalled: bool) -> None:
        if not self.running:
            return
        if stalled:
            self._emit(EngineEvent("engine-stalled", None, "the JACK server runs no cycle"))
        else:
            self._emit(EngineEvent("engine-restored", None, "the JACK server runs cycles again"))


class GraphEngine(Engine):
    """An engine that plays on a :class:`JackGraph`: the box's tempo is its graph's transport."""

    _graph: JackGraph

    def set_tempo(self, bpm: float) -> None:
        super().set_tempo(bpm)
        self._graph.set_tempo(bpm)

    def follow_tempo(self) -> None:
        super().follow_tempo()
        self._graph.transport_master = True
