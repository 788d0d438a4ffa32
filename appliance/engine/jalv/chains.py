"""Chains of plugins that are JACK clients of their own, chained by JACK connections.

Each plugin is a :class:`Slot`: a process with JACK ports of its own (a
``jalv``, :mod:`appliance.engine.jalv.engine`). A track's chain is a list of
slots between the box's own faders, meters beside them; :class:`JackChainEngine`
keeps the chains, turns them into connections (:mod:`appliance.engine.jack.wiring`,
on the graph of :mod:`appliance.engine.jack.graph`) and leaves hosting to its
subclass through four hooks: :meth:`~JackChainEngine._instantiate`,
:meth:`~JackChainEngine._release`, :meth:`~JackChainEngine._deliver_values` and
:meth:`~JackChainEngine._send_bypass`.

A slot's life::

    loading ──instantiated, settled, wired in──▶ up ◀──host back──┐
       │                                          │                │
       └─failed: released, never in a chain       └──host died──▶ down (the track
                                                                   passes dry there)

Two speeds (docs/architecture "Stage-critical paths"):

* **Values and bypass never wait** for a structural change. They are kept on
  the slot at once; a slot that is up gets them from its host at once (a
  bypass that reroutes waits only for the short rewire); a slot that is
  loading or down gets them when it (re)joins.
* **Structural changes** (add, remove, move, a rerouting bypass) hold the lock
  only while they change a chain and rewire; a plugin starts without it. A
  change stays only if its rewiring worked; otherwise the old state is put
  back, a background rewire restores the graph, and the error propagates.

All methods run on the loop's thread.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ...core.controls import PluginType
from ...core.errors import ApplianceError, EngineError, HardwareError, PluginLoadFailed
from .. import (
    NO_OWN_PLUGINS,
    PLUGIN_START_TIMEOUT,
    EngineEvent,
    EngineInfo,
    EventSink,
    OwnPlugins,
    SavedPlugin,
    TrackPorts,
    find_chain,
    find_plugin,
)
from ..chain import Stage
from ..faders import FADER_CONTROL, fader_type, fader_values, ramp
from ..jack.graph import GraphEngine, JackGraph
from ..jack.server import DummySettings
from ..jack.wiring import JACK_CALL_TIMEOUT, Tap, WiringPlan, plan_wiring
from ..meters import listened, meter_level, tuner_reading

log = logging.getLogger("appliance.engine")

#: Longest pause between two looks at a starting plugin's ports.
PORT_POLL_INTERVAL = 0.02
#: Pause before retrying connections that failed (a client not active yet).
REWIRE_RETRY_INTERVAL = 0.1
#: Retries of failed connections before waiting for the next port to appear.
REWIRE_RETRY_LIMIT = 50
#: JACK client names are at most this long (``jack_client_name_size() - 1``).
CLIENT_NAME_MAX = 63

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

State = Literal["loading", "up", "down"]
#: Plugin ids of the box's own plugins (:class:`OwnPlugins`): never on a board.
OWN_PREFIXES = ("fader.", "meter.", "tuner.")


def safe_name(text: str) -> str:
    """A JACK-client-name-safe version of ``text`` (no ``:``, no spaces)."""
    return _UNSAFE.sub("_", text) or "_"


@dataclass(eq=False)
class Slot:
    """One plugin in (or joining) a chain. Loop thread only.

    Attributes:
        values: every value set so far, by LV2 symbol (what a restart starts with).
        bypass: the bypass the box wants.
        client_name: the plugin's JACK client.
        inputs / outputs: its audio ports in the chain, once known.
        state: ``loading``, ``up`` (its host runs it), or ``down``.
        hosted_bypass: True when its host bypasses it (an enable control,
            dry/wet); False when bypass routes the chain around it.
        retired: removed or failed; nothing may bring it back.
        lost: its host went away since this slot last started.
        readings: its output controls (meters), as its host last read them.
    """

    id: str
    track_id: str
    type: PluginType
    values: dict[str, float]
    bypass: bool = False
    client_name: str = ""
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    state: State = "loading"
    hosted_bypass: bool = False
    retired: bool = False
    lost: bool = False  # its host went away since it last started
    readings: dict[str, float] = field(default_factory=dict)

    @property
    def ports(self) -> tuple[str, ...]:
        return self.inputs + self.outputs

    @property
    def stage(self) -> Stage[str]:
        """The slot as the chain walk sees it: skipped while down or rerouted around."""
        rerouted = self.bypass and not self.hosted_bypass
        return Stage(self.inputs, self.outputs, in_path=self.state == "up" and not rerouted)


@dataclass(eq=False)
class Faders:
    """The two faders around one track's chain (:mod:`appliance.engine.faders`)."""

    head: Slot
    tail: Slot


@dataclass(eq=False)
class Listener:
    """A plugin of the box's own that listens beside a track (:mod:`appliance.engine.meters`).

    ``role``: ``in`` or ``out`` (a level meter), or ``tuner``.
    """

    slot: Slot
    role: str
    listens: tuple[str, ...]

    @property
    def tap(self) -> Tap:
        inputs = self.slot.inputs if self.slot.state == "up" else ()
        return Tap(inputs, self.listens[: len(inputs)])


def fader_slots(faders: Mapping[str, Faders]) -> list[Slot]:
    """Every fader of every track, heads and tails."""
    return [s for f in faders.values() for s in (f.head, f.tail)]


@dataclass(eq=False)
class Generation:
    """One board's chains with their faders: the one playing, or an old one ringing out."""

    chains: Mapping[str, list[Slot]]
    faders: Mapping[str, Faders]

    def stages(self) -> dict[str, list[Stage[str]]]:
        """Each track's walk for the wiring: head fader, plugins, tail fader."""
        stages: dict[str, list[Stage[str]]] = {}
        for track_id, chain in self.chains.items():
            faders = self.faders.get(track_id)
            walk = [faders.head, *chain, faders.tail] if faders else list(chain)
            stages[track_id] = [s.stage for s in walk]
        return stages

    def slots(self) -> list[Slot]:
        plugins = [s for chain in self.chains.values() for s in chain]
        return plugins + fader_slots(self.faders)


class JackChainEngine(GraphEngine):
    """Chains of JACK-client plugins, wired by one :class:`JackWiring`.

    Args:
        tracks: the tracks and their fixed JACK endpoints.
        server_name: the JACK server (None: the default). With
            ``dummy_server`` it names the server to start (None: unique).
        on_event: receives :class:`EngineEvent` on the loop's thread.
        dummy_server: start a private dummy-backend server with these
            settings (the virtual box) and stop it again in :meth:`stop`.
        client_prefix: prefix of every JACK client name this engine opens;
            unique per instance by default.
        preroll: seconds a new plugin runs unconnected before it joins its
            chain, so that it enters with its values in effect.
        graph_fault: test hook run before every graph change (see
            :class:`JackWiring`).
        jack_timeout: how long one blocking JACK call may take.
        own: the box's own plugins (faders, meters, tuner); each one
            missing turns its feature off.
    """

    def __init__(
        self,
        tracks: Sequence[TrackPorts],
        server_name: str | None = None,
        on_event: EventSink | None = None,
        dummy_server: DummySettings | None = None,
        client_prefix: str | None = None,
        preroll: float = 0.0,
        graph_fault: Callable[[], None] | None = None,
        jack_timeout: float = JACK_CALL_TIMEOUT,
        own: OwnPlugins = NO_OWN_PLUGINS,
    ) -> None:
        super().__init__(tracks, on_event)
        self.preroll = preroll
        #: How long one plugin start may take.
        self.start_timeout = PLUGIN_START_TIMEOUT
        prefix = client_prefix if client_prefix is not None else f"{self.name}-{secrets.token_hex(2)}"
        self.prefix = safe_name(prefix)[: CLIENT_NAME_MAX - 24]
        self._lock = asyncio.Lock()
        self._graph = JackGraph(
            self.name,
            self.tracks,
            server_name,
            dummy_server,
            f"{self.prefix}-wire",
            self._plan,
            self._lock,
            self._emit,
            self._port_changed,
            graph_fault,
            jack_timeout,
        )
        self._chains: dict[str, list[Slot]] = {track_id: [] for track_id in self.tracks}
        self._plugins: dict[str, Slot] = {}  # in a chain
        self._loading: dict[str, Slot] = {}  # starting, not in a chain yet
        self._unsent: dict[str, dict[str, float]] = {}  # values waiting for the loop turn's delivery
        self._fader = fader_type(own.fader) if own.fader is not None else None
        self._faders: dict[str, Faders] = {}  # around each track's chain
        self._own = own
        self._listeners: dict[str, Listener] = {}  # meters and the tuner, by slot id
        self._muted = False  # the tuner is on: the tail faders stay closed
        self._fading: list[Generation] = []  # old boards' chains, ringing out after a switch
        self._started = False
        self._ports_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- hooks for the hosting engine -----------------------------------------------

    @abc.abstractmethod
    async def _instantiate(self, slot: Slot) -> None:
        """Start the plugin with ``slot.values`` and ``slot.bypass``; set its ports.

        Sets ``slot.client_name``, ``slot.inputs``, ``slot.outputs`` and
        ``slot.hosted_bypass``. On any failure, cancellation included, what
        was started is stopped again before the exception propagates (a host
        that has ended meanwhile took its plugins with it).

        Raises:
            PluginLoadFailed: the plugin could not be started.
            EngineError: the host is not running.
        """

    @abc.abstractmethod
    async def _release(self, slot: Slot) -> None:
        """Stop the plugin's instance (the slot is retired and out of every chain)."""

    @abc.abstractmethod
    def _deliver_values(self, slot: Slot, values: Mapping[str, float]) -> None:
        """Hand values to the running plugin's host without waiting (one message)."""

    def _send_values(self, slot: Slot, values: Mapping[str, float]) -> None:
        """Coalesce: a slider storm becomes one delivery per plugin per loop turn, newest values."""
        unsent = self._unsent.setdefault(slot.id, {})
        if not unsent:
            asyncio.get_running_loop().call_soon(self._flush_values, slot)
        unsent.update(values)

    def _flush_values(self, slot: Slot) -> None:
        """Deliver what the slot's values waited for (the call_soon of :meth:`_send_values`, or earlier)."""
        values = self._unsent.pop(slot.id, None)
        if values:
            self._deliver_values(slot, values)

    def _send_bypass(self, slot: Slot, bypass: bool) -> None:
        """Bypass inside the host without waiting (only when ``hosted_bypass``)."""
        raise NotImplementedError

    def _details(self) -> dict[str, object]:
        """Engine-specific health details."""
        return {}

    def _poll_readings(self, slots: list[Slot]) -> None:
        """Ask the hosts of these running slots to read their output controls into
        ``slot.readings`` soon (their answers arrive on the loop). Never waits."""

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the private server if asked, the wiring client and the host; wire tracks dry.

        Raises:
            EngineError: the server cannot be started or reached, or the host
                cannot start.
        """
        if self._running:
            return
        self._started = True
        try:
            await self._graph.open()
            self._graph.start_running()
        except BaseException:
            await self.stop()
            raise
        self._faders = await self._start_faders(opened=True)
        await self._start_meters()
        log.info("%s engine up on jack server %s", self.name, self.server_name or "(default)")
        async with self._lock:
            await self._graph.rewire()

    async def stop(self) -> None:
        """Stop every plugin, the host, the wiring client and a private server.

        Safe to call twice, and after a failed :meth:`start`.
        """
        if not self._started:
            return
        self._started = False
        was_running, self._graph.running = self._graph.running, False
        await self._graph.cancel_rewires()
        try:
            await asyncio.wait_for(self._lock.acquire(), PLUGIN_START_TIMEOUT)
            locked = True
        except TimeoutError:
            locked = False
            log.warning("stopping while a structural change is still running")
        try:
            slots = [*self._plugins.values(), *self._loading.values(), *self._own_slots()]
            for generation in self._fading:
                slots.extend(generation.slots())
            for slot in slots:
                slot.retired = True
            await self._release_in_turn(slots)
            self._plugins.clear()
            self._faders.clear()
            self._listeners.clear()
            self._muted = False
            self._fading.clear()
            for chain in self._chains.values():
                chain.clear()
            await self._graph.close()  # the chains are gone: the tracks play dry from now on
        finally:
            if locked:
                self._lock.release()
        leftovers = list(self._tasks)
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        await self._graph.stop_server()
        if was_running:
            log.info("%s engine stopped", self.name)

    # -- the engine port: structure --------------------------------------------------

    async def add_plugin(
        self,
        track_id: str,
        plugin_id: str,
        plugin_type: PluginType,
        position: int,
        values: Mapping[str, float],
        bypass: bool = False,
    ) -> None:
        """Start the plugin and wire it in at ``position`` (the chain as it is then).

        The plugin starts without the lock: other changes, and every value and
        bypass (this plugin's too), go on meanwhile.

        Raises:
            UnknownTrack: no such track.
            PluginLoadFailed: the plugin could not start; the chain is as it was.
            EngineError: the engine is not running, or the rewiring failed;
                the chain is as it was and the plugin stopped.
        """
        slot = self._new_slot(track_id, plugin_id, plugin_type, values, bypass)
        try:
            await self._bring_up(slot)
            if self.preroll:
                await asyncio.sleep(self.preroll)
            async with self._lock:
                self._join(slot, position)
                await self._rewire_or_undo(lambda: self._unjoin(slot))
        except BaseException:
            await self._abandon(slot)
            raise
        log.debug("added %s (%s) to %s", plugin_id, plugin_type.uri, track_id)

    async def load_board(self, plugins: Sequence[SavedPlugin]) -> dict[str, ApplianceError]:
        """Start every plugin at once, settle them together, then wire them in with one rewire.

        A plugin whose host went away while it started (a crash) is kept: it
        joins its chain down, and the engine brings it back with the host.

        Returns:
            plugin id → why it could not be loaded (the others play).
        """
        slots: list[Slot] = []
        failed: dict[str, ApplianceError] = {}
        for saved in plugins:
            try:
                slots.append(
                    self._new_slot(saved.track_id, saved.plugin_id, saved.type, saved.values, saved.bypass)
                )
            except ApplianceError as exc:
                failed[saved.plugin_id] = exc
        results = await asyncio.gather(*(self._bring_up(slot) for slot in slots), return_exceptions=True)
        started: list[Slot] = []
        for slot, result in zip(slots, results, strict=True):
            if isinstance(result, ApplianceError):
                failed[slot.id] = result
                await self._abandon(slot)
            elif isinstance(result, BaseException):
                for other in slots:
                    await self._abandon(other)
                raise result
            else:
                started.append(slot)
        if any(slot.state == "up" for slot in started) and self.preroll:
            await asyncio.sleep(self.preroll)
        joined: list[Slot] = []
        async with self._lock:
            for slot in started:
                try:
                    self._join(slot, len(self._chains[slot.track_id]))
                except ApplianceError as exc:
                    failed[slot.id] = exc
                    await self._abandon(slot)
                else:
                    joined.append(slot)

            def unjoin_all() -> None:
                for slot in joined:
                    self._unjoin(slot)

            try:
                await self._rewire_or_undo(unjoin_all)
            except BaseException as exc:
                for slot in joined:
                    await self._abandon(slot)
                if not isinstance(exc, ApplianceError):
                    raise
                failed.update((slot.id, exc) for slot in joined)
                return failed
        return failed

    async def remove_plugin(self, plugin_id: str) -> None:
        """Wire the chain around the plugin, then stop it.

        Raises:
            UnknownPlugin: no such plugin.
            EngineError: the rewiring failed; the plugin stays where it was.
        """
        async with self._lock:
            slot = self._plugin(plugin_id)
            without = [s for s in self._chains[slot.track_id] if s is not slot]
            await self._change_chain(slot.track_id, without, retired=[slot])
            self._plugins.pop(plugin_id, None)  # stop() may have cleared them meanwhile
            slot.retired = True
            self._graph.stale_ports.update(slot.ports)
        await self._release_quietly(slot)

    async def move_plugin(self, plugin_id: str, position: int) -> None:
        """Move a plugin within its own track's chain and rewire.

        Raises:
            UnknownPlugin: no such plugin.
            EngineError: the rewiring failed; the chain stays as it was.
        """
        async with self._lock:
            slot = self._plugin(plugin_id)
            moved = [s for s in self._chains[slot.track_id] if s is not slot]
            moved.insert(max(0, min(position, len(moved))), slot)
            await self._change_chain(slot.track_id, moved)

    async def _change_chain(self, track_id: str, chain: list[Slot], retired: Iterable[Slot] = ()) -> None:
        """Make ``chain`` the track's chain and rewire; all as before if that fails (lock held)."""
        current = self._chains[track_id]
        before = list(current)
        current[:] = chain

        def restore() -> None:
            current[:] = before

        await self._rewire_or_undo(restore, retired)

    # -- the engine port: switching boards -----------------------------------------

    async def switch_board(
        self, plugins: Sequence[SavedPlugin], spillover: float, commit: Callable[[], None]
    ) -> None:
        """Build the new board beside the playing one, then move the signal over.

        Every new plugin starts and settles while the old board plays (its
        values and bypass keep working). Only then, in one rewire, do both
        boards hang on the tracks, and ``commit`` runs; the new chains fade
        in while the old ones fade out: their input only, when ``spillover``
        (seconds) is above 0, so that their tails ring on until they are torn
        down, else their output too.

        Raises:
            PluginLoadFailed: a plugin could not start (its ``plugin_id``
                says which); nothing changed, the old board plays on.
            EngineError: the engine is not running or the rewire failed;
                nothing changed.
        """
        self._require_running()
        slots: list[Slot] = []
        faders: dict[str, Faders] = {}
        old: Generation | None = None
        try:
            for saved in plugins:
                slots.append(
                    self._new_slot(saved.track_id, saved.plugin_id, saved.type, saved.values, saved.bypass)
                )
            faders = await self._start_faders(opened=False) if self._faders else {}
            results = await asyncio.gather(*(self._bring_up(s) for s in slots), return_exceptions=True)
            for slot, result in zip(slots, results, strict=True):
                if isinstance(result, EngineError):
                    result.plugin_id = slot.id
                if isinstance(result, BaseException):
                    raise result
            if self.preroll:
                await asyncio.sleep(self.preroll)
            async with self._lock:
                self._require_running()
                new = Generation({t: [s for s in slots if s.track_id == t] for t in self.tracks}, faders)
                old = self._swap(new)
                try:
                    await self._rewire(() if old.faders else old.slots())
                except BaseException:
                    self._unswap(old, new)
                    old = None
                    self._graph.request_rewire()
                    raise
                commit()
        finally:
            if old is None:
                for slot in [*slots, *fader_slots(faders)]:
                    await self._abandon(slot)
        if not old.faders:  # no faders: the rewire cut the old board off
            await self._release_in_turn(old.slots())
            return
        closing = [f.head if spillover > 0 else f.tail for f in old.faders.values()]
        await self._fade([f.head for f in faders.values()], closing)
        if spillover > 0:
            self._background(self._ring_out(old, spillover))
        else:
            await self._tear_down(old)
        log.info("switched to a board of %d plugin(s)", len(slots))

    def _swap(self, new: Generation) -> Generation:
        """Make ``new`` the playing board (lock held); returns the old one, still wired.

        The old board's plugins leave the engine's plugins, retired (nothing
        restarts them); with faders it rings out until :meth:`_tear_down`.
        """
        old = Generation({t: list(c) for t, c in self._chains.items()}, dict(self._faders))
        for slot in old.slots():
            self._plugins.pop(slot.id, None)
            slot.retired = True
        for track_id, chain in self._chains.items():
            chain[:] = new.chains.get(track_id, [])
            for slot in chain:
                self._loading.pop(slot.id, None)
                self._plugins[slot.id] = slot
        self._faders = dict(new.faders)
        if old.faders:
            self._fading.append(old)
        return old

    def _unswap(self, old: Generation, new: Generation) -> None:
        """Undo :meth:`_swap` (lock held): the new board's plugins are starting again."""
        for slot in (s for chain in new.chains.values() for s in chain):
            self._plugins.pop(slot.id, None)
            self._loading[slot.id] = slot
        for track_id, chain in self._chains.items():
            chain[:] = old.chains.get(track_id, [])
            for slot in chain:
                self._plugins[slot.id] = slot
        for slot in old.slots():
            slot.retired = False
        self._faders = dict(old.faders)
        if old in self._fading:
            self._fading.remove(old)

    async def _start_faders(self, opened: bool) -> dict[str, Faders]:
        """A head and a tail fader for every track; none (and a log line) if they cannot start."""
        if self._fader is None:
            return {}
        fader = self._fader
        made = {
            track_id: Faders(
                Slot(f"fader.{track_id}.in.{secrets.token_hex(2)}", track_id, fader, fader_values(opened)),
                Slot(
                    f"fader.{track_id}.out.{secrets.token_hex(2)}",
                    track_id,
                    fader,
                    fader_values(not self._muted),
                ),
            )
            for track_id in self.tracks
        }
        failed = await self._bring_up_all(fader_slots(made))
        if failed is None:
            return made
        if not opened or not isinstance(failed, ApplianceError):
            raise failed  # a switch's faders: the switch fails; anything else is not ours to hide
        log.error("the faders did not start (%s); board switches will cut without a fade", failed)
        self._fader = None
        return {}

    async def _bring_up_all(self, slots: list[Slot]) -> BaseException | None:
        """Start the box's own slots together; if one fails, stop them all and return why."""
        results = await asyncio.gather(*(self._bring_up(s) for s in slots), return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            for slot in slots:
                slot.retired = True
                await self._release_quietly(slot)
        return failed

    # -- meters and the tuner (:mod:`appliance.engine.meters`) -------------------------

    async def _start_meters(self) -> None:
        """A level meter on each track's input and on its output; none (and a log line) if they fail."""
        meter = self._own.meter
        if meter is None:
            return
        made = [
            Listener(
                Slot(f"meter.{track.id}.{role}.{secrets.token_hex(2)}", track.id, meter, {}),
                role,
                listened(ends),
            )
            for track in self.tracks.values()
            for role, ends in (("in", track.inputs), ("out", track.outputs))
            if ends
        ]
        failed = await self._bring_up_all([listener.slot for listener in made])
        if failed is None:
            self._listeners.update((listener.slot.id, listener) for listener in made)
        elif isinstance(failed, ApplianceError):
            log.error("the level meters did not start (%s); the box shows no levels", failed)
        else:
            raise failed

    def request_readings(self) -> None:
        """Ask every running plugin with output controls, meters and tuner included, for them."""
        slots = [*self._plugins.values(), *(listener.slot for listener in self._listeners.values())]
        polled = [s for s in slots if s.state == "up" and s.type.monitors]
        if polled:
            self._poll_readings(polled)

    def readings(self) -> dict[str, dict[str, float]]:
        """The board's plugins' output controls as last read (:meth:`request_readings`)."""
        return {s.id: dict(s.readings) for s in self._plugins.values() if s.readings}

    def levels(self) -> dict[str, dict[str, float]]:
        """Each track's peak level in dBFS at its input and output, as the meters last read."""
        levels: dict[str, dict[str, float]] = {}
        for listener in self._listeners.values():
            slot = listener.slot
            if listener.role in ("in", "out") and slot.readings:
                levels.setdefault(slot.track_id, {})[listener.role] = meter_level(slot.readings)
        return levels

    @property
    def is_tuning(self) -> bool:
        return self._muted

    def tuner(self) -> dict[str, object] | None:
        """What the tuner hears; None when it is off or hears no note."""
        listener = self._tuning()
        return tuner_reading(listener.slot.readings) if listener is not None else None

    async def set_tuner(self, on: bool) -> None:
        """The stage tuner: silence at once, then the tuner listens to the first track's input.

        Off: the outputs fade back in at once, then the tuner stops. The
        silence is the tail faders, closed (a board switch meanwhile keeps it).

        Raises:
            HardwareError: no tuner is installed.
            EngineError: the engine is not running (PluginLoadFailed: the
                tuner did not start; the box sounds again).
        """
        self._require_running()
        tails = [f.tail for f in self._faders.values()]
        if not on:
            self._muted = False
            await self._fade(tails, ())
            listener = self._tuning()
            if listener is not None:
                await self._drop_listener(listener)
            return
        tuner = self._own.tuner
        if tuner is None:
            raise HardwareError("this box has no tuner: x42-plugins' tuna.lv2 is not installed")
        if self._muted:
            return
        self._muted = True
        if not tails:
            log.warning("no faders: the tuner cannot silence the box")
        await self._fade((), tails)
        track = next(iter(self.tracks.values()))
        slot = Slot(f"tuner.{track.id}.{secrets.token_hex(2)}", track.id, tuner, {})
        failed = await self._bring_up_all([slot])
        if failed is None and self._muted and self._running:
            async with self._lock:
                self._listeners[slot.id] = Listener(slot, "tuner", track.inputs[:1])
                await self._rewire()
            return
        if failed is None:  # turned off (or stopped) while it started
            slot.retired = True
            await self._release_quietly(slot)
            return
        self._muted = False
        await self._fade(tails, ())
        raise failed

    def _tuning(self) -> Listener | None:
        return next((listener for listener in self._listeners.values() if listener.role == "tuner"), None)

    async def _drop_listener(self, listener: Listener) -> None:
        """Unwire a meter or the tuner and stop it."""
        slot = listener.slot
        async with self._lock:
            self._listeners.pop(slot.id, None)
            slot.retired = True
            self._graph.stale_ports.update(slot.ports)
            if self._running:
                try:
                    await self._rewire([slot])
                except EngineError as exc:
                    log.error("unwiring %s failed: %s; retrying", slot.id, exc)
                    self._graph.request_rewire()
        await self._release_quietly(slot)

    def _hosted_slots(self) -> list[Slot]:
        """Every slot of the playing board, the box's own included: what a host restart brings back."""
        return [*(s for chain in self._chains.values() for s in chain), *self._own_slots()]

    def _own_slots(self) -> list[Slot]:
        """The playing board's faders, the meters and the tuner."""
        return [*fader_slots(self._faders), *(listener.slot for listener in self._listeners.values())]

    async def _fade(self, opening: Iterable[Slot], closing: Iterable[Slot]) -> None:
        """Open some faders while closing others, step by step (:meth:`JackGraph.paced`)."""
        opening, closing = list(opening), list(closing)
        async for up, down in self._graph.paced(zip(ramp(True), ramp(False), strict=True)):
            for slot, value in [*((s, up) for s in opening), *((s, down) for s in closing)]:
                slot.values[FADER_CONTROL] = value
                if slot.state == "up":
                    self._send_values(slot, {FADER_CONTROL: value})

    async def _ring_out(self, old: Generation, seconds: float) -> None:
        """Let an old board's tails ring with no input, then fade it out and tear it down."""
        await asyncio.sleep(seconds)
        await self._fade((), (f.tail for f in old.faders.values()))
        await self._tear_down(old)

    async def _tear_down(self, old: Generation) -> None:
        """Unwire an old board and stop its plugins."""
        async with self._lock:
            if old in self._fading:
                self._fading.remove(old)
            slots = old.slots()
            self._graph.stale_ports.update(p for s in slots for p in s.ports)
            if self._running:
                try:
                    await self._rewire(slots)
                except EngineError as exc:
                    log.error("unwiring the old board failed: %s; retrying", exc)
                    self._graph.request_rewire()
        await self._release_in_turn(slots)

    # -- the engine port: values and bypass (never wait for a structural change) -----

    async def set_parameters(self, plugin_id: str, values: Mapping[str, float]) -> None:
        """Keep the values and hand them to the running plugin at once.

        A plugin that is starting or down gets them when it (re)joins.

        Raises:
            UnknownPlugin: no such plugin.
        """
        slot = self._slot(plugin_id)
        slot.values.update(values)
        if slot.state == "up":
            self._send_values(slot, values)

    async def set_bypass(self, plugin_id: str, bypass: bool) -> None:
        """True bypass: inside the host where it can, else the chain routes around the plugin.

        A rerouting bypass rewires even when the plugin is already in that
        state, so that a repeated request also repairs the graph; it does not
        wait for a structural change under way. A plugin that is starting or
        down is bypassed as it (re)joins.

        Raises:
            UnknownPlugin: no such plugin.
            EngineError: the rewiring failed; the plugin keeps its old state.
        """
        slot = self._slot(plugin_id)
        before, slot.bypass = slot.bypass, bypass
        if slot.state != "up":
            return
        if slot.hosted_bypass:
            self._send_bypass(slot, bypass)
            return
        if slot.id not in self._plugins or slot.retired:
            return  # pre-rolling: it joins the chain with its bypass
        # Without the structural lock, so that a footswitch never waits for an add's
        # rewire: a plan is the whole graph wanted now, and the wiring applies plans
        # in order, so this one is right whatever a structural change does meanwhile.
        try:
            await self._rewire()
        except BaseException:
            slot.bypass = before
            self._graph.request_rewire()
            raise

    # -- the engine port: reads ------------------------------------------------------

    def info(self) -> EngineInfo:
        """Rate, buffer, DSP load and xruns from the wiring's snapshot. Never blocks."""
        details: dict[str, object] = {
            "plugins": len(self._plugins),
            "plugins_running": sum(1 for s in self._plugins.values() if s.state == "up"),
            "starting": len(self._loading),
            **self._details(),
        }
        return self._graph.info(True, details)

    def chain(self, track_id: str) -> list[str]:
        """Plugin ids of a track in chain order.

        Raises:
            UnknownTrack: no such track.
        """
        return [s.id for s in find_chain(self._chains, track_id)]

    def bypass_mode(self, plugin_id: str) -> str:
        """``hosted`` (the host bypasses it) or ``reroute`` (the chain goes around it)."""
        return "hosted" if self._slot(plugin_id).hosted_bypass else "reroute"

    # -- slots -----------------------------------------------------------------------

    def _new_slot(
        self,
        track_id: str,
        plugin_id: str,
        plugin_type: PluginType,
        values: Mapping[str, float],
        bypass: bool,
    ) -> Slot:
        self._require_running()
        find_chain(self._chains, track_id)
        if plugin_id in self._plugins or plugin_id in self._loading:
            raise PluginLoadFailed(f"plugin id {plugin_id!r} is already in use")
        slot = Slot(plugin_id, track_id, plugin_type, dict(values), bypass)
        self._loading[plugin_id] = slot
        return slot

    async def _bring_up(self, slot: Slot) -> None:
        """Instantiate a slot, then hand it what changed while it started. No lock."""
        sent_values, sent_bypass = dict(slot.values), slot.bypass
        slot.lost = False
        try:
            await asyncio.wait_for(self._instantiate(slot), self.start_timeout)
        except TimeoutError:
            why = f"did not start within {self.start_timeout} s"
            raise PluginLoadFailed(f"{slot.type.uri}: {why}") from None
        if slot.retired:
            raise EngineError(f"the {self.name} engine stopped while the plugin started")
        if slot.lost:
            raise EngineError(f"the plugin's host went away as {slot.id} started")
        slot.state = "up"
        missed = {s: v for s, v in slot.values.items() if sent_values.get(s) != v}
        if missed:
            self._send_values(slot, missed)
        if slot.hosted_bypass and slot.bypass != sent_bypass:
            self._send_bypass(slot, slot.bypass)

    def _join(self, slot: Slot, position: int) -> None:
        """Put a started slot into its chain (lock held); a down one passes dry there."""
        if slot.retired:
            raise EngineError(f"the {self.name} engine stopped while the plugin started")
        self._require_running()
        chain = self._chains[slot.track_id]
        del self._loading[slot.id]
        self._plugins[slot.id] = slot
        chain.insert(max(0, min(position, len(chain))), slot)

    def _unjoin(self, slot: Slot) -> None:
        """Undo :meth:`_join` after a failed rewire; its ports may be wired: ours to undo."""
        self._chains[slot.track_id].remove(slot)
        del self._plugins[slot.id]
        self._graph.stale_ports.update(slot.ports)

    async def _abandon(self, slot: Slot) -> None:
        """A slot that did not make it: forgotten and stopped."""
        self._loading.pop(slot.id, None)
        if self._plugins.get(slot.id) is not slot:
            slot.retired = True
            await self._release_quietly(slot)

    async def _release_quietly(self, slot: Slot) -> None:
        """:meth:`_release`, carried on even if the caller is cancelled; failures logged."""
        task = asyncio.ensure_future(self._release(slot))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.shield(task)
        except ApplianceError as exc:
            log.warning("stopping plugin %s: %s", slot.id, exc)

    async def _release_in_turn(self, slots: Iterable[Slot]) -> None:
        """Release plugins one after another, never together: JACK2's server answers a client's
        close only after telling every other client, and a client that is closing at the same
        time never answers, so a board of jalvs closed all at once held the server (and every
        connection the box asked for meanwhile) until they were killed: 4.2 s to stop the demo
        board against 0.4 s in turn."""
        for slot in slots:
            await self._release_quietly(slot)

    def _set_down(self, slots: Iterable[Slot]) -> None:
        """Their host died: route every track around them (dry) until they are back.

        Slots still starting go down too: they join their chain down.
        """
        for slot in slots:
            slot.lost = True
            if slot.state == "up":
                slot.state = "down"
        self._graph.request_rewire()

    async def _set_up(self, slot: Slot) -> None:
        """A slot's host runs it again: wire it back in (retried in the background if JACK fails)."""
        slot.state = "up"
        async with self._lock:
            if slot.retired or not self._running:
                return
            try:
                await self._rewire()
            except EngineError as exc:
                log.error("rewiring %s back in failed: %s; retrying", slot.id, exc)
                self._graph.request_rewire()

    def _slot(self, plugin_id: str) -> Slot:
        """A slot in a chain or starting, by plugin id; UnknownPlugin otherwise."""
        slot = self._loading.get(plugin_id)
        return slot if slot is not None else self._plugin(plugin_id)

    def _plugin(self, plugin_id: str) -> Slot:
        return find_plugin(self._plugins, plugin_id)

    def _require_running(self) -> None:
        if not self._running:
            raise EngineError(f"the {self.name} engine is not running")

    def _emit(self, event: EngineEvent) -> None:
        if event.plugin_id is not None and event.plugin_id.startswith(OWN_PREFIXES):
            log.warning("%s: %s %s", event.plugin_id, event.kind, event.message)
            return  # the box's own plugins are not on any board: nobody to tell
        try:
            self.on_event(event)
        except Exception:
            log.exception("event sink failed on %s", event.kind)

    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_ports(
        self,
        client_name: str,
        ready: Callable[[tuple[str, ...], tuple[str, ...]], bool],
        still_starting: Callable[[], None],
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A client's audio ports once ``ready(inputs, outputs)``; loop thread, no lock.

        ``still_starting`` raises when the client cannot appear any more (its
        process exited).
        """
        wiring = self._graph.wiring
        while True:
            self._ports_changed.clear()
            inputs, outputs = await wiring.client_ports(client_name)
            if ready(inputs, outputs):
                return inputs, outputs
            still_starting()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ports_changed.wait(), PORT_POLL_INTERVAL)

    async def _client_gone(self, client_name: str, timeout: float) -> bool:
        """Wait until a dead client has no ports left; False on timeout."""
        try:
            await asyncio.wait_for(
                self._wait_ports(client_name, lambda ins, outs: not ins and not outs, lambda: None), timeout
            )
        except TimeoutError:
            return False
        return True

    # -- wiring ----------------------------------------------------------------------

    def _port_changed(self, name: str, register: bool) -> None:
        self._ports_changed.set()  # a starting plugin's ports may be there now

    async def _rewire_or_undo(self, undo: Callable[[], object], retired: Iterable[Slot] = ()) -> None:
        """Rewire after a change to the chains; if that fails, undo the change (lock held).

        A failed rewire may have left part of the graph changed: a background
        rewire then brings it back to the restored state, and the error is raised.
        """
        if not self._running:
            return
        try:
            await self._rewire(retired)
        except BaseException:
            undo()
            self._graph.request_rewire()
            raise

    def _plan(self, retired: Iterable[Slot] = ()) -> WiringPlan:
        """The connections the chains want; retired slots' ports are still ours to undo."""
        owned = set(self._graph.stale_ports)
        for slot in retired:
            owned.update(slot.ports)
        current = Generation(self._chains, self._faders)
        taps = [listener.tap for listener in self._listeners.values()]
        return plan_wiring(
            self.tracks.values(), current.stages(), owned, [g.stages() for g in self._fading], taps
        )

    async def _rewire(self, retired: Iterable[Slot] = ()) -> None:
        """Bring the graph to the chains (lock held); retired slots' ports are still ours to undo."""
        await self._graph.rewire(self._plan(retired))

    @property
    def _running(self) -> bool:
        return self._graph.running

    @property
    def server_name(self) -> str | None:
        """The JACK server (its name once a private one has started)."""
        return self._graph.server_name
