"""The JACK wiring both engines share: one JACK client on one worker thread.

Every plugin of either engine is a JACK client of its own (a ``jalv`` process,
or one of Carla's clients in the Carla host process), so a track's chain is a
set of JACK connections, and JACK (not a plugin host) keeps the audio thread
off a graph that is being changed. This module owns those connections::

    loop ──plan──▶ jack-wiring worker ──connect/disconnect──▶ JACK server
     ▲                                                          │
     └─ call_soon_threadsafe ◀── JACK notification thread ◀─────┘
          (port registered/unregistered, server gone; xruns are counted there)

* :class:`JackWiring` methods are coroutines for the loop's thread; every
  blocking JACK call runs on its one worker thread, with a timeout.
* JACK's notification thread only counts xruns or hops onto the loop.
* :meth:`JackWiring.info` reads a snapshot the worker refreshes; it never
  calls libjack on the loop.

A connection is the wiring's to remove when one end is a plugin port, or when
it runs straight from a track input to a track output; anything else touching
a track's endpoints (a monitor, the test rig's reference) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import jack  # type: ignore[import-untyped]

from ...core.errors import EngineError
from .. import TrackPorts
from ..chain import Stage, chain_connections, connection_changes

log = logging.getLogger("appliance.engine.jack.wiring")

T = TypeVar("T")

#: How long one blocking JACK call on the worker thread may take.
JACK_CALL_TIMEOUT = 5.0
#: How often the worker refreshes DSP load for :meth:`JackWiring.info`.
INFO_INTERVAL = 0.2
#: Refreshes in a row that find no new JACK cycle before the graph is called stalled
#: (0.4 to 0.6 s without a cycle: a running server makes one every few ms).
STALLED_AFTER = 2

Connection = tuple[str, str]


@dataclass(frozen=True)
class WiringPlan:
    """What the worker should make of the graph (computed on the loop).

    Attributes:
        desired: every connection the chains want.
        plugin_ports: ports of our plugins, live or retired: connections on
            them that are not desired are removed.
        endpoints: the tracks' own ports.
    """

    desired: frozenset[Connection]
    plugin_ports: frozenset[str]
    endpoints: frozenset[str]


@dataclass(frozen=True)
class Tap:
    """A plugin that listens beside a chain (a meter, the tuner) and feeds nothing.

    ``listens[i]`` is the track endpoint its ``inputs[i]`` hears: a track
    input as it comes in, or a track output as it goes out (whatever feeds it).
    """

    inputs: tuple[str, ...]
    listens: tuple[str, ...]


def plan_wiring(
    tracks: Iterable[TrackPorts],
    stages: Mapping[str, list[Stage[str]]],
    owned: Iterable[str] = (),
    ringing: Iterable[Mapping[str, list[Stage[str]]]] = (),
    taps: Iterable[Tap] = (),
) -> WiringPlan:
    """The connections every track's chain wants, and the ports that are ours.

    Args:
        tracks: the tracks and their endpoints.
        stages: track id → its chain as stages (bypassed or down: not in the path).
        owned: other plugin ports still ours (retired plugins, dead clients).
        ringing: old boards' chains still on the tracks after a switch
            (:mod:`appliance.engine.faders`): their outputs sum with the new one.
        taps: plugins listening to track endpoints (:class:`Tap`).
    """
    desired: set[Connection] = set()
    plugin_ports: set[str] = set(owned)
    endpoints: set[str] = set()
    sinks: set[str] = set()
    boards = [stages, *ringing]
    for track in tracks:
        endpoints.update(track.inputs, track.outputs)
        sinks.update(track.outputs)
        for board in boards:
            chain = board.get(track.id, [])
            for stage in chain:
                plugin_ports.update(stage.inputs, stage.outputs)
            desired |= chain_connections(track.inputs, chain, track.outputs)
    feeds: dict[str, set[str]] = {}
    for source, destination in desired:
        feeds.setdefault(destination, set()).add(source)
    for tap in taps:
        plugin_ports.update(tap.inputs)
        for port, endpoint in zip(tap.inputs, tap.listens, strict=True):
            # a track output is a sink: the tap hears what feeds it; a track input, itself
            heard = feeds.get(endpoint, set()) if endpoint in sinks else {endpoint}
            desired |= {(source, port) for source in heard}
    return WiringPlan(frozenset(desired), frozenset(plugin_ports), frozenset(endpoints))


@dataclass(frozen=True)
class WiringInfo:
    """What JACK says about the server, as of the last refresh.

    Attributes:
        stalled: the server has run no cycle for :data:`STALLED_AFTER`
            refreshes: no client hears anything (JACK2 was seen to keep a
            crashed client in its graph for good on a non-realtime server).
    """

    running: bool = False
    sample_rate: int = 0
    buffer_size: int = 0
    dsp_load: float = 0.0
    xruns: int = 0
    stalled: bool = False


def change_graph(client: Any, connect: list[Connection], disconnect: list[Connection]) -> list[str]:
    """Connect, then disconnect, with a ``jack.Client``; what failed. Blocking.

    Connecting first means the signal is never cut while the graph changes.
    """
    failures: list[str] = []
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


class JackWiring:
    """One JACK client that wires chains, counts xruns and watches ports.

    Args:
        client_name: this client's JACK name (unique per engine).
        server_name: the JACK server (None: the default server).
        on_port: ``(port name, registered)`` on the loop's thread.
        on_shutdown: ``(reason)`` on the loop's thread, once the server is gone.
        on_stall: ``(stalled)`` on the loop's thread, when the server stops
            running cycles and when it runs them again.
        graph_fault: called on the worker before every connect or disconnect
            pass; a test hook that raises to play a failing JACK.
        call_timeout: how long one blocking JACK call may take.
        client_factory: makes the ``jack.Client`` (tests wrap it).
    """

    def __init__(
        self,
        client_name: str,
        server_name: str | None,
        on_port: Callable[[str, bool], None],
        on_shutdown: Callable[[str], None],
        graph_fault: Callable[[], None] | None = None,
        call_timeout: float = JACK_CALL_TIMEOUT,
        client_factory: Callable[..., Any] = jack.Client,
        on_stall: Callable[[bool], None] | None = None,
    ) -> None:
        self.client_name = client_name
        self._client_factory = client_factory
        self.server_name = server_name
        self.call_timeout = call_timeout
        self._on_port = on_port
        self._on_shutdown = on_shutdown
        self._on_stall = on_stall
        self._graph_fault = graph_fault
        self._client: Any = None  # jack.Client; touched on the worker only
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._info = WiringInfo()
        self._xruns = 0
        self._last_cycle = -1
        self._still = 0
        self._refresh: asyncio.Task[None] | None = None
        # The stall check has a thread of its own: a graph change stuck on a stopped server
        # must not keep it from seeing that the server runs no cycle. It only reads shared
        # memory; the lock keeps the client from closing under it.
        self._sampler: ThreadPoolExecutor | None = None
        self._client_lock = threading.Lock()

    # -- lifecycle (loop thread) ---------------------------------------------------

    async def open(self) -> None:
        """Open and activate the client; start refreshing :meth:`info`.

        Raises:
            EngineError: the server cannot be reached.
        """
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jack-wiring")
        self._sampler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jack-stall-check")
        try:
            await self.call(self._open_client)
        except BaseException:
            await self.close()
            raise
        self._refresh = asyncio.create_task(self._refresh_info())

    async def close(self) -> None:
        """Close the client. Safe to call twice; does not wait long for a stuck JACK."""
        refresh, self._refresh = self._refresh, None
        if refresh is not None:
            refresh.cancel()
            await asyncio.gather(refresh, return_exceptions=True)
        executor, self._executor = self._executor, None
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.shutdown(wait=False)
        self._info = WiringInfo(xruns=self._xruns)
        if executor is None:
            return
        # Behind a JACK call that is stuck, the close waits its turn (it must run,
        # or the client leaks); nobody waits for either of them for long.
        closing = asyncio.wrap_future(executor.submit(self._close_client))
        try:
            await asyncio.wait_for(asyncio.shield(closing), self.call_timeout)
        except TimeoutError:
            log.warning("JACK client not closed within %s s; it closes when JACK answers", self.call_timeout)
        except jack.JackError as exc:
            log.warning("closing the JACK client failed: %s", exc)
        executor.shutdown(wait=False)

    @property
    def is_open(self) -> bool:
        """True while the client is open (the worker's view; any thread)."""
        return self._client is not None

    def info(self) -> WiringInfo:
        """Rate, buffer, DSP load (last refresh) and xruns. Never blocks; any thread."""
        info = self._info
        return dataclasses.replace(info, xruns=self._xruns)

    # -- the graph (loop thread) -------------------------------------------------

    async def apply(self, plan: WiringPlan) -> list[str]:
        """Connect what is missing, then disconnect what is unwanted.

        What is there is read and changed in one step of the worker thread
        (libjack reads the graph from shared memory: no server round trip),
        so two plans applied at once never interleave.

        Returns:
            Descriptions of connections that could not be made or undone yet
            (a client whose ports exist but which is not active yet, a port
            that vanished while it was read).

        Raises:
            EngineError: JACK did not answer, or the client is closed.
        """
        return await self.call(self._apply, plan)

    def _apply(self, plan: WiringPlan) -> list[str]:
        """:meth:`apply` on the worker thread."""
        diff = self._diff(plan)
        if isinstance(diff, str):
            return [diff]
        connect, disconnect = diff
        if not connect and not disconnect:
            return []
        return change_graph(self._require_client(), connect, disconnect)

    async def client_ports(self, client_name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A client's audio inputs and outputs, each in registration order."""
        return await self.call(self._client_ports, client_name)

    async def transport_bpm(self) -> float | None:
        """The BPM JACK's transport carries while it rolls (None: no timebase master, or stopped)."""
        return await self.call(self._transport_bpm)

    def _transport_bpm(self) -> float | None:
        state, position = self._require_client().transport_query()
        bpm = position.get("beats_per_minute")
        return float(bpm) if state == jack.ROLLING and bpm is not None else None

    async def call(self, work: Callable[..., T], *args: Any) -> T:
        """Run a blocking JACK call on the worker, with the timeout.

        Raises:
            EngineError: no worker, no answer within the timeout, or a JackError.
        """
        if self._executor is None:
            raise EngineError("the JACK wiring client is closed")
        loop = asyncio.get_running_loop()
        try:
            running = loop.run_in_executor(self._executor, work, *args)
            return await asyncio.wait_for(running, self.call_timeout)
        except TimeoutError:
            raise EngineError(f"JACK did not answer within {self.call_timeout} s") from None
        except jack.JackError as exc:
            raise EngineError(f"JACK: {exc}") from exc

    async def _refresh_info(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(INFO_INTERVAL)
            sampler = self._sampler
            if sampler is None:
                return
            with contextlib.suppress(TimeoutError, jack.JackError):
                await asyncio.wait_for(loop.run_in_executor(sampler, self._sample), self.call_timeout)

    # -- the worker thread ---------------------------------------------------------

    def _open_client(self) -> None:
        """Worker: open, set callbacks, activate; closed again if any step fails."""
        try:
            client = self._client_factory(self.client_name, servername=self.server_name, no_start_server=True)
        except jack.JackOpenError as exc:
            raise EngineError(f"cannot reach jack server {self.server_name or '(default)'}: {exc}") from exc
        try:
            client.set_xrun_callback(self._xrun)
            client.set_port_registration_callback(self._port_registered)
            client.set_shutdown_callback(self._shutdown)
            client.activate()
            client.get_ports()  # so that unregistrations of existing ports are reported too
        except BaseException:
            client.close()
            raise
        self._client = client
        self._info = WiringInfo(True, int(client.samplerate), int(client.blocksize), 0.0, self._xruns)

    def _close_client(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(jack.JackError):
                client.deactivate()
            client.close()

    def _sample(self) -> None:
        """The stall check's thread: has the server run a cycle since the last look?"""
        with self._client_lock:
            self._sample_locked()

    def _sample_locked(self) -> None:
        client = self._client
        if client is None or not self._info.running:
            return
        cycle = int(client.last_frame_time)
        self._still = self._still + 1 if cycle == self._last_cycle else 0
        self._last_cycle = cycle
        stalled = self._still >= STALLED_AFTER
        if stalled != self._info.stalled:
            if stalled:
                quiet = self._still * INFO_INTERVAL
                log.error("the JACK server has run no cycle for %.2f s: its graph is stalled", quiet)
            else:
                log.warning("the JACK server runs cycles again")
            if self._on_stall is not None:
                self._hop(self._on_stall, stalled)
        self._info = dataclasses.replace(self._info, dsp_load=float(client.cpu_load()), stalled=stalled)

    def _client_ports(self, client_name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        client = self._require_client()
        pattern = f"^{re.escape(client_name)}:"
        inputs = client.get_ports(pattern, is_audio=True, is_input=True)
        outputs = client.get_ports(pattern, is_audio=True, is_output=True)
        return tuple(p.name for p in inputs), tuple(p.name for p in outputs)

    def _require_client(self) -> Any:
        client = self._client
        if client is None:
            raise EngineError("the JACK wiring client is closed")
        return client

    def _diff(self, plan: WiringPlan) -> tuple[list[Connection], list[Connection]] | str:
        """Worker: what to connect and disconnect; a sentence when the ports changed meanwhile."""
        client = self._require_client()
        if self._graph_fault is not None:
            self._graph_fault()
        try:
            existing = {port.name: port for port in client.get_ports(is_audio=True)}
        except jack.JackError as exc:  # a port vanished while JACK-Client listed them: try again
            return f"listing ports: {exc}"
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
        return connection_changes(current, want)

    # -- JACK's notification thread ----------------------------------------------

    def _xrun(self, delayed_usecs: float) -> None:
        self._xruns += 1

    def _port_registered(self, port: Any, register: bool) -> None:
        if port is not None:
            self._hop(self._on_port, port.name, register)

    def _shutdown(self, status: Any, reason: str) -> None:
        self._info = WiringInfo(xruns=self._xruns)
        self._hop(self._on_shutdown, reason)

    def _hop(self, callback: Callable[..., None], *args: Any) -> None:
        """Hand a call to the loop's thread; dropped once the loop has closed."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)
