"""The Carla engine: each track's chain in one Carla host process, in rack mode.

A track's whole chain is one :class:`Rack`: one host process (:mod:`.host`)
whose one JACK client runs every plugin in series in one realtime callback,
with the box's own plugins around the board's::

    track inputs ─▶ RACK:audio-in1/2 ─▶ meter · [tuner] · head fader · plugins… · tail fader · meter
                                                                       ─▶ RACK:audio-out1/2 ─▶ track outputs

The box's wiring client (:mod:`appliance.engine.jack.wiring`) connects each
rack to its track's endpoints; nothing else changes in JACK's graph while
a board plays. What lives where:

* **Structure** (add, remove, move) and **bypass** are Carla's own rack
  operations (see :mod:`.host` for why each is safe while audio runs). A new
  plugin enters dry at its place and runs with its values for
  :data:`PLUGIN_PREROLL` before it is heard; a dry/wet bypass is ramped over
  :data:`~appliance.engine.faders.FADE_TIME`.
* **A board switch** starts the new board in new racks beside the playing
  ones (or takes them from the **warm standby**: racks loaded for the
  setlist's neighbours that run no DSP while they wait), fades over with the
  faders inside the racks, and lets the old racks' tails ring out before
  their hosts end.
* **A crashed or wedged host** (a segfault in Carla or a plugin, no
  heartbeat for ``hang_timeout``) is killed if need be and reported
  (``engine-died``); its track plays dry meanwhile; a new host is started
  with the chain, its values and bypass; ``engine-restored`` says how long
  the gap was. With bridges, a crashed plugin leaves the rack (its place
  passes dry) and is loaded again with its values. The box's control plane
  never stops serving: the crash is in another process.

Loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...config import CarlaConfig, JackConfig
from ...core.controls import Control, Kind, PluginType
from ...core.errors import (
    ApplianceError,
    EngineError,
    HardwareError,
    PluginLoadFailed,
    UnknownPlugin,
    Unsupported,
)
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
from ..jack.wiring import JACK_CALL_TIMEOUT, WiringPlan, plan_wiring
from ..meters import meter_level, tuner_reading
from ..respawn import DEFAULT_RESPAWN, RespawnPolicy, RespawnSettings
from .install import BRIDGE_BINARY, CarlaPaths, find_carla
from .process import CarlaHostProcess

log = logging.getLogger("appliance.engine.carla")

#: How long a new plugin runs dry at its place before it is heard (its controls settle).
PLUGIN_PREROLL = 0.1
#: How long a quick request to a host (remove, move, read values) may take.
CARLA_CALL_TIMEOUT = 5.0
#: A host silent for this long (no heartbeat) is wedged and is killed.
HOST_HANG_TIMEOUT = 5.0
#: How often the heartbeats are checked.
HANG_CHECK_INTERVAL = 1.0
#: How long a host that JACK stopped waits, once ended, for the graph to say the server is gone.
SERVER_GONE_GRACE = 0.5
#: How many racks may wait in warm standby (the setlist's next and previous board, per track).
WARM_LIMIT = 2
#: JACK client names are at most this long.
CLIENT_NAME_MAX = 63

Role = Literal["live", "warm", "ringing"]
#: Requests that change a rack's chain (the test hook ``graph_fault`` runs before each).
STRUCTURAL = frozenset({"add", "remove", "move", "bypass"})
#: Host ids of the box's own plugins in a rack, in rack order around the board's.
HEAD_OWN = ("meter-in", "tuner", "head")
TAIL_OWN = ("tail", "meter-out")


@dataclass(eq=False)
class Member:
    """One plugin in a rack, as the box sees it. Loop thread only.

    Attributes:
        id: the box's plugin id (the board's), or the own plugin's role.
        hosted: its id inside the host process.
        mode: how its host bypasses it (``enable-port``, ``drywet``,
            ``absent``), once loaded.
        up: loaded in the rack's host now (False: the track passes dry there).
        prerolling: entered dry and not heard yet; its bypass waits.
        readings: its output controls (meters), as its host last read them.
    """

    id: str
    type: PluginType
    values: dict[str, float]
    bypass: bool = False
    hosted: str = ""
    mode: str = ""
    up: bool = False
    prerolling: bool = False
    readings: dict[str, float] = field(default_factory=dict)
    ramp: asyncio.Task[None] | None = None
    files: dict[str, str] = field(default_factory=dict)  # file parameter URI → path


def board_shape(
    plugins: Iterable[tuple[str, Mapping[str, str]]],
) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """What a warm rack can stand in for: its plugins' URIs in order, with the files they load."""
    return tuple((uri, tuple(sorted(files.items()))) for uri, files in plugins)


@dataclass(eq=False)
class Rack:
    """One track's chain in one Carla host process.

    Attributes:
        members: the board's plugins, in chain order.
        own: the box's own plugins in it, by role (``meter-in``, ``tuner``,
            ``head``, ``tail``, ``meter-out``).
        role: ``live`` (the board playing), ``warm`` (loaded for a board to
            come, running no DSP) or ``ringing`` (an old board's tails).
        down: its host died; the track plays dry until it is back.
        jack_stopped: its host said JACK stopped its engine (the server died, or
            dropped the host's client).
        shape: the plugin URIs in order (what a warm rack can stand in for).
    """

    track_id: str
    role: Role
    members: list[Member] = field(default_factory=list)
    own: dict[str, Member] = field(default_factory=dict)
    host: CarlaHostProcess | None = None
    client: str = ""
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    down: bool = False
    jack_stopped: bool = False
    load: float = 0.0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def shape(self) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
        return board_shape((m.type.uri, m.files) for m in self.members)

    @property
    def is_up(self) -> bool:
        return not self.down and self.host is not None and self.host.is_running

    @property
    def ports(self) -> tuple[str, ...]:
        return self.inputs + self.outputs

    @property
    def stage(self) -> Stage[str]:
        """The rack as the wiring sees it: skipped (the track dry) while it is down."""
        return Stage(self.inputs, self.outputs, in_path=self.is_up)

    def new_id(self) -> str:
        return f"p{next(self._ids)}"

    def sequence(self) -> list[Member]:
        """Every member in rack order, the box's own around the board's."""
        head = [self.own[role] for role in HEAD_OWN if role in self.own]
        tail = [self.own[role] for role in TAIL_OWN if role in self.own]
        return [*head, *self.members, *tail]

    def after(self, member: Member) -> str | None:
        """The host id of the first loaded member after ``member`` in the rack (None: the end)."""
        sequence = self.sequence()
        following = sequence[sequence.index(member) + 1 :]
        return next((m.hosted for m in following if m.up), None)

    def polled(self) -> list[Member]:
        return [m for m in self.sequence() if m.up and m.type.monitors]


class CarlaEngine(GraphEngine):
    """Hosts each track's chain in a Carla host process in rack mode.

    Args:
        tracks: the tracks and their fixed JACK endpoints.
        carla: the installation prefix and whether plugins run bridged.
        jack: the JACK server (``server``), or a dummy server to start
            (``dummy``, the virtual box).
        on_event: receives :class:`EngineEvent` on the loop's thread.
        client_prefix: prefix of every JACK client name; unique by default.
        respawn: when to restart a crashed host or plugin.
        hang_timeout: seconds without a heartbeat before a host is killed.
        preroll: seconds a new plugin runs dry at its place before it is heard.
        graph_fault: test hook run (on a worker thread) before every change to a rack's
            chain: it raises as a host that fails would, or blocks as one that hangs.
        jack_timeout: how long one blocking JACK call may take.
        own: the box's own plugins (faders, meters, tuner); each one
            missing turns its feature off.
    """

    name = "carla"

    def __init__(
        self,
        tracks: Sequence[TrackPorts],
        carla: CarlaConfig,
        jack: JackConfig,
        on_event: EventSink | None = None,
        client_prefix: str | None = None,
        respawn: RespawnSettings = DEFAULT_RESPAWN,
        hang_timeout: float = HOST_HANG_TIMEOUT,
        preroll: float = PLUGIN_PREROLL,
        graph_fault: Callable[[], None] | None = None,
        jack_timeout: float = JACK_CALL_TIMEOUT,
        own: OwnPlugins = NO_OWN_PLUGINS,
    ) -> None:
        super().__init__(tracks, on_event)
        dummy = jack.dummy
        settings = DummySettings(dummy.rate, dummy.period, dummy.realtime) if dummy else None
        self.carla = carla
        self.hang_timeout = hang_timeout
        self.preroll = preroll
        prefix = client_prefix if client_prefix is not None else f"carla-{secrets.token_hex(2)}"
        self.prefix = "".join(c if c.isalnum() or c in "_.-" else "_" for c in prefix)[:40]
        self._graph_fault = graph_fault
        self._jack_timeout = jack_timeout
        self._lock = asyncio.Lock()  # structural changes, one at a time
        self._graph = JackGraph(
            self.name,
            self.tracks,
            jack.server,
            settings,
            f"{self.prefix}-wire",
            self._plan,
            self._lock,
            self._emit,
            self._port_changed,
            jack_timeout=jack_timeout,
        )
        self._respawn = respawn
        self._own = own
        self._fader = fader_type(own.fader) if own.fader is not None else None
        self._paths: CarlaPaths | None = None
        self._live: dict[str, Rack] = {}
        self._ringing: list[Rack] = []
        self._warm: list[Rack] = []
        self._wanted_warm: list[tuple[str, list[SavedPlugin]]] = []
        self._warming: asyncio.Task[None] | None = None
        self._plugins: dict[str, tuple[Rack, Member]] = {}  # the playing board's
        self._loading: dict[str, tuple[Rack, Member]] = {}  # being added
        self._unsent: dict[Member, tuple[Rack, dict[str, float]]] = {}
        self._muted = False
        self._names = itertools.count(1)
        self._track_policies: dict[str, RespawnPolicy] = {}
        self._plugin_policies: dict[str, RespawnPolicy] = {}
        self._restarts = 0
        self._woken = 0  # switches that woke a warm rack instead of loading one
        self._last_gap: float | None = None
        self._down_since: dict[str, float] = {}
        self._started = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- diagnostics (tests and hil/ play crashes with these) ------------------------

    def _first_live(self) -> Rack | None:
        return self._live.get(next(iter(self.tracks)))

    @property
    def host_pid(self) -> int | None:
        """The first track's playing host process, or None while there is none."""
        rack = self._first_live()
        host = rack.host if rack is not None else None
        return host.pid if host is not None and host.is_running else None

    def host_pids(self) -> dict[str, list[int]]:
        """Every running host process by role (``live``, ``warm``, ``ringing``)."""
        pids: dict[str, list[int]] = {"live": [], "warm": [], "ringing": []}
        for rack in self._racks():
            if rack.host is not None and rack.host.is_running and rack.host.pid is not None:
                pids[rack.role].append(rack.host.pid)
        return pids

    def bridge_pids(self) -> set[int]:
        """The playing hosts' bridge processes now."""
        hosts = {
            r.host.pid for r in self._live.values() if r.host is not None and r.host.pid is not None
        }
        found: set[int] = set()
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent in hosts and BRIDGE_BINARY.encode() in (proc / "cmdline").read_bytes():
                    found.add(int(proc.name))
        return found

    def kill_host(self, sig: Any) -> None:
        """Send a signal to the first track's playing host."""
        rack = self._first_live()
        if rack is not None and rack.host is not None:
            rack.host.kill(sig)

    def bypass_mode(self, plugin_id: str) -> str:
        """``hosted`` (enable control or dry/wet inside the host) or ``absent`` (out of the rack)."""
        _rack, member = self._member(plugin_id)
        return "absent" if member.mode == "absent" else "hosted"

    async def controls(self, plugin_id: str) -> tuple[Control, ...]:
        """The plugin's input controls as Carla itself describes them.

        What a plugin format without LV2 data (VST, CLAP) would be described by.

        Raises:
            UnknownPlugin: no such plugin.
        """
        described = await self._ask("controls", plugin_id)
        controls = []
        for c in described:
            kind: Kind = c["kind"]
            labels = tuple((float(v), str(label)) for v, label in c["labels"])
            controls.append(
                Control(
                    symbol=c["symbol"],
                    name=c["name"],
                    minimum=c["minimum"],
                    maximum=c["maximum"],
                    default=c["default"],
                    unit=c["unit"],
                    kind=kind,
                    labels=labels,
                    logarithmic=c["logarithmic"],
                )
            )
        return tuple(controls)

    async def values(self, plugin_id: str) -> dict[str, float]:
        """Every input control's current value, read back from Carla, by symbol."""
        values: dict[str, float] = await self._ask("values", plugin_id)
        return values

    async def reset_parameters(self, plugin_id: str) -> None:
        """Carla resets the plugin's controls to their defaults; the changes come back as events."""
        await self._ask("reset", plugin_id)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the private server if asked, the wiring client and one rack per track.

        Raises:
            EngineError: the server cannot be started or reached, or a host cannot start.
        """
        if self._running:
            return
        self._started = True
        try:
            self._paths = find_carla(self.carla.prefix)
            await self._graph.open()
            self._graph.start_running()
            for track_id in self.tracks:
                rack = Rack(track_id, "live")
                await self._open_rack(rack, [], head_open=True)
                self._live[track_id] = rack
        except BaseException:
            await self.stop()
            raise
        self._background(self._watch_heartbeats())
        log.info("carla engine up on jack server %s (rack mode)", self.server_name or "(default)")
        async with self._lock:
            await self._graph.rewire()
        self._kick_warming()  # what was prepared before a restart

    async def stop(self) -> None:
        """Stop every host, the wiring client and a private server. Safe to call twice."""
        if not self._started:
            return
        self._started = False
        was_running, self._graph.running = self._graph.running, False
        await self._graph.cancel_rewires()
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.gather(self._warming, return_exceptions=True)
        self._warming = None
        try:
            await asyncio.wait_for(self._lock.acquire(), PLUGIN_START_TIMEOUT)
            locked = True
        except TimeoutError:
            locked = False
            log.warning("stopping while a structural change is still running")
        try:
            racks = self._racks()
            self._live.clear()
            self._ringing.clear()
            self._warm.clear()
            self._plugins.clear()
            self._loading.clear()
            self._unsent.clear()
            self._muted = False
            await asyncio.gather(*(self._close_rack(rack) for rack in racks))
            await self._graph.close()  # the racks are gone: the tracks play dry from now on
        finally:
            if locked:
                self._lock.release()
        leftovers = list(self._tasks)
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        await self._graph.stop_server()
        if was_running:
            log.info("carla engine stopped")

    # -- racks -----------------------------------------------------------------------

    def set_tempo(self, bpm: float) -> None:
        super().set_tempo(bpm)
        for rack in self._racks():
            if rack.host is not None:
                rack.host.send("tempo", bpm=bpm)

    def _racks(self) -> list[Rack]:
        return [*self._live.values(), *self._ringing, *self._warm]

    async def _open_rack(
        self,
        rack: Rack,
        plugins: Sequence[SavedPlugin],
        *,
        head_open: bool,
        strict: bool = False,
    ) -> dict[str, ApplianceError]:
        """Start a host for ``rack`` and load its own plugins and ``plugins`` into it.

        Returns:
            plugin id → why it could not be loaded (left out of the rack).

        Raises:
            EngineError: the host did not start (nothing is left running).
            PluginLoadFailed: with ``strict``, the first plugin that failed
                (its ``plugin_id`` says which); the host is stopped.
        """
        assert self._paths is not None
        rack.client = f"{self.prefix}-{rack.track_id}.{next(self._names)}"[:CLIENT_NAME_MAX]
        host = CarlaHostProcess(
            self._paths,
            self.server_name,
            rack.client,
            self.carla.bridges,
            functools.partial(self._host_event, rack),
            lambda why: None,
            jack_transport=self.follows_tempo,
        )
        host.on_exit = functools.partial(self._host_ended, rack, host)
        ready = await host.start()
        rack.host, rack.down, rack.jack_stopped = host, False, False
        host.send("tempo", bpm=self.tempo)  # before its first plugin: synced ones start in time
        rack.inputs = tuple(str(p) for p in ready.get("inputs", ()))
        rack.outputs = tuple(str(p) for p in ready.get("outputs", ()))
        try:
            if rack.role == "warm":
                await self._request(rack, "activate", CARLA_CALL_TIMEOUT, active=False)
            rack.own = {}
            for role, member in self._own_members(rack, head_open):
                member.hosted = role
                rack.own[role] = member
            rack.members = [
                Member(
                    s.plugin_id, s.type, dict(s.values), s.bypass, hosted=rack.new_id(), files=dict(s.files)
                )
                for s in plugins
            ]
            failed = await self._load_all(rack, preroll=False)
            if strict and failed:
                plugin_id, why = next(iter(failed.items()))
                error = why if isinstance(why, EngineError) else PluginLoadFailed(str(why))
                error.plugin_id = plugin_id
                raise error
            if not self._started:
                raise EngineError("the carla engine stopped while a rack started")
        except BaseException:
            await self._close_rack(rack)
            raise
        return failed

    def _own_members(self, rack: Rack, head_open: bool) -> list[tuple[str, Member]]:
        """The box's own plugins a new rack gets, by role."""
        own: list[tuple[str, Member]] = []
        meter, tuner = self._own.meter, self._own.tuner
        if meter is not None:
            own.append(("meter-in", Member("meter.in", meter, {})))
        if tuner is not None and self._muted and rack.track_id == next(iter(self.tracks)):
            own.append(("tuner", Member("tuner", tuner, {})))
        if self._fader is not None:
            own.append(("head", Member("fader.head", self._fader, fader_values(head_open))))
            own.append(("tail", Member("fader.tail", self._fader, fader_values(not self._muted))))
        if meter is not None:
            own.append(("meter-out", Member("meter.out", meter, {})))
        return own

    async def _load_all(self, rack: Rack, preroll: bool) -> dict[str, ApplianceError]:
        """Load every member of a rack that is not up, in rack order; the box's own must load.

        Returns:
            plugin id → why a board plugin could not be loaded (it is left
            out of the rack's members).
        """
        failed: dict[str, ApplianceError] = {}
        for member in rack.sequence():
            if member.up:
                continue
            try:
                await self._load(rack, member, preroll)
            except ApplianceError as exc:
                if member not in rack.members:
                    raise EngineError(f"the box's own {member.id} did not load: {exc}") from exc
                rack.members.remove(member)
                failed[member.id] = exc
        return failed

    async def _load(self, rack: Rack, member: Member, preroll: bool) -> None:
        """Load one member into its rack's host at its place (it is in the sequence)."""
        plugin_type = member.type
        enable = None
        if plugin_type.enable_symbol is not None:
            enable = {
                "symbol": plugin_type.enable_symbol,
                "on": plugin_type.enable_value(bypass=False),
                "off": plugin_type.enable_value(bypass=True),
            }
        sent_values, sent_bypass = dict(member.values), member.bypass
        reply = await self._request(
            rack,
            "add",
            PLUGIN_START_TIMEOUT,
            plugin=member.hosted,
            uri=plugin_type.uri,
            values=sent_values,
            bypass=sent_bypass,
            enable=enable,
            before=rack.after(member),
            preroll=preroll,
            files=dict(member.files),
        )
        member.mode, member.up = str(reply["bypass"]), True
        member.prerolling = preroll and member.mode != "absent" and not sent_bypass
        missed = {s: v for s, v in member.values.items() if sent_values.get(s) != v}
        if missed:
            self._send_values(rack, member, missed)
        if member.bypass != sent_bypass and not member.prerolling:
            self._send_bypass(rack, member, member.bypass)

    async def _close_rack(self, rack: Rack) -> None:
        """Stop a rack's host (its JACK client leaves the graph); its ports are stale till gone."""
        host, rack.host = rack.host, None
        self._graph.stale_ports.update(rack.ports)
        for member in rack.sequence():
            member.up = False
            if member.ramp is not None:
                member.ramp.cancel()
        if host is not None:
            await host.stop()

    async def _end_prerolls(self, rack: Rack, members: Iterable[Member]) -> None:
        """After :attr:`preroll`, the new members are heard (as their bypass says)."""
        members = [m for m in members if m.prerolling]
        if not members:
            return
        if self.preroll:
            await asyncio.sleep(self.preroll)
        for member in members:
            member.prerolling = False
            if member.up and rack.host is not None:
                # it pre-rolled dry: to stay bypassed is no change (a ramp would start from wet and
                # let it be heard for a moment); to be heard, it ramps up from dry
                self._send_bypass(rack, member, member.bypass, ramped=not member.bypass)

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
        """Load the plugin at ``position`` of the track's rack; dry until it has settled.

        Raises:
            UnknownTrack: no such track.
            PluginLoadFailed: the plugin could not be loaded; the chain is as it was.
            EngineError: the engine is not running.
        """
        self._require_running()
        find_chain(self._live, track_id)
        if plugin_id in self._plugins or plugin_id in self._loading:
            raise PluginLoadFailed(f"plugin id {plugin_id!r} is already in use")
        member = Member(plugin_id, plugin_type, dict(values), bypass)
        rack = self._live[track_id]
        self._loading[plugin_id] = (rack, member)
        try:
            async with self._lock:
                self._require_running()
                rack = self._live[track_id]
                self._loading[plugin_id] = (rack, member)
                member.hosted = rack.new_id()
                rack.members.insert(max(0, min(position, len(rack.members))), member)
                if rack.is_up:
                    try:
                        await self._load(rack, member, preroll=True)
                    except BaseException as exc:
                        if not self._host_lost(exc, rack):
                            rack.members.remove(member)
                            raise
                        # its host died as it loaded: it joins down, and the restart brings it
            try:
                await self._end_prerolls(rack, [member])
            except BaseException:  # cancelled while it pre-rolled: it leaves again
                await asyncio.shield(self._discard(rack, member))
                raise
        finally:
            self._loading.pop(plugin_id, None)
        self._plugins[plugin_id] = (rack, member)
        log.debug("added %s (%s) to %s", plugin_id, plugin_type.uri, track_id)

    async def _discard(self, rack: Rack, member: Member) -> None:
        """Take a member that never joined out of its rack again; failures only logged."""
        async with self._lock:
            if member in rack.members:
                rack.members.remove(member)
            if member.up and rack.is_up:
                try:
                    await self._request(rack, "remove", CARLA_CALL_TIMEOUT, plugin=member.hosted)
                except ApplianceError as exc:
                    log.warning("taking %s out again: %s", member.id, exc)
            member.up = False

    async def load_board(self, plugins: Sequence[SavedPlugin]) -> dict[str, ApplianceError]:
        """Load a saved board's plugins at the ends of their racks, dry until they settle.

        Returns:
            plugin id → why it could not be loaded (the others play).
        """
        self._require_running()
        failed: dict[str, ApplianceError] = {}
        added: dict[Rack, list[Member]] = {}
        async with self._lock:
            for saved in plugins:
                try:
                    rack = find_chain(self._live, saved.track_id)
                    if saved.plugin_id in self._plugins:
                        raise PluginLoadFailed(f"plugin id {saved.plugin_id!r} is already in use")
                except ApplianceError as exc:
                    failed[saved.plugin_id] = exc
                    continue
                member = Member(
                    saved.plugin_id,
                    saved.type,
                    dict(saved.values),
                    saved.bypass,
                    rack.new_id(),
                    files=dict(saved.files),
                )
                rack.members.append(member)
                self._plugins[saved.plugin_id] = (rack, member)
                added.setdefault(rack, []).append(member)
            for rack, members in added.items():
                for member in members:
                    if not rack.is_up:
                        break  # its host died: the restart loads the rest
                    try:
                        await self._load(rack, member, preroll=True)
                    except ApplianceError as exc:
                        if self._host_lost(exc, rack):
                            break
                        rack.members.remove(member)
                        del self._plugins[member.id]
                        failed[member.id] = exc
        await asyncio.gather(*(self._end_prerolls(rack, members) for rack, members in added.items()))
        return failed

    async def remove_plugin(self, plugin_id: str) -> None:
        """Take the plugin out of its rack; the chain closes up around it between two cycles.

        Raises:
            UnknownPlugin: no such plugin.
        """
        async with self._lock:
            rack, member = self._plugin(plugin_id)
            if member.up and rack.is_up:
                with contextlib.suppress(UnknownPlugin):  # died in its bridge: the host took it out
                    await self._request(rack, "remove", CARLA_CALL_TIMEOUT, plugin=member.hosted)
            rack.members.remove(member)
            member.up = False
            self._plugins.pop(plugin_id, None)
            self._unsent.pop(member, None)
            self._plugin_policies.pop(plugin_id, None)

    async def move_plugin(self, plugin_id: str, position: int) -> None:
        """Move a plugin within its own track's rack (dry while it passes the others).

        Raises:
            UnknownPlugin: no such plugin.
            EngineError: the host failed; the chain stays as it was.
        """
        async with self._lock:
            rack, member = self._plugin(plugin_id)
            before = list(rack.members)
            rack.members.remove(member)
            rack.members.insert(max(0, min(position, len(rack.members))), member)
            if rack.members == before or not (member.up and rack.is_up):
                return
            try:
                after = rack.after(member)
                await self._request(rack, "move", CARLA_CALL_TIMEOUT, plugin=member.hosted, before=after)
            except BaseException:
                rack.members[:] = before
                raise

    # -- the engine port: switching boards -------------------------------------------

    async def switch_board(
        self, plugins: Sequence[SavedPlugin], spillover: float, commit: Callable[[], None]
    ) -> None:
        """Start the new board in new racks (or warm ones), then fade the tracks over.

        The new racks load (or wake) while the old board plays. Only then, in
        one rewire, do both boards hang on the tracks, and ``commit`` runs;
        the new racks fade in while the old ones fade out: their input only,
        when ``spillover`` (seconds) is above 0, so that their tails ring on
        until their hosts end, else their output too.

        Raises:
            PluginLoadFailed: a plugin could not start (its ``plugin_id``
                says which); nothing changed, the old board plays on.
            EngineError: the engine is not running; nothing changed.
        """
        self._require_running()
        by_track: dict[str, list[SavedPlugin]] = {track_id: [] for track_id in self.tracks}
        for saved in plugins:
            find_chain(by_track, saved.track_id).append(saved)
        fading = self._fader is not None
        new: dict[str, Rack] = {}
        cold = False
        swapped = False
        try:
            for track_id, board in by_track.items():
                rack = self._take_warm(track_id, board)
                if rack is not None:
                    new[track_id] = rack  # closed again if the switch fails
                    await self._wake(rack, board)
                    self._woken += 1
                else:
                    rack = Rack(track_id, "live")
                    new[track_id] = rack  # closed again if the switch fails
                    await self._open_rack(rack, board, head_open=not fading, strict=True)
                    cold = True
                new[track_id] = rack
            if cold and self.preroll:
                await asyncio.sleep(self.preroll)  # the new racks run unwired: their plugins settle
            async with self._lock:
                self._require_running()
                old = dict(self._live)
                self._live = new
                for rack in old.values():
                    rack.role = "ringing"
                for rack in new.values():
                    rack.role = "live"
                if fading:
                    self._ringing.extend(old.values())
                self._plugins = {m.id: (rack, m) for rack in new.values() for m in rack.members}
                swapped = True
                await self._graph.rewire()
                commit()
        except BaseException:
            if swapped:
                self._live = old
                for rack in old.values():
                    rack.role = "live"
                    if rack in self._ringing:
                        self._ringing.remove(rack)
                self._plugins = {m.id: (rack, m) for rack in old.values() for m in rack.members}
                self._graph.request_rewire()
            await asyncio.gather(*(self._close_rack(rack) for rack in new.values()))
            raise
        self._kick_warming()
        if not fading:  # no faders: the rewire cut the old board off
            await asyncio.gather(*(self._close_rack(rack) for rack in old.values()))
            return
        heads = [(r, r.own["head"]) for r in new.values()]
        closing = [(r, r.own["head" if spillover > 0 else "tail"]) for r in old.values()]
        await self._fade(heads, closing)
        if spillover > 0:
            self._background(self._ring_out(list(old.values()), spillover))
        else:
            await self._tear_down(list(old.values()))
        log.info("switched to a board of %d plugin(s)%s", len(plugins), "" if cold else " (warm)")

    async def _ring_out(self, old: list[Rack], seconds: float) -> None:
        """Let an old board's tails ring with no input, then fade them out and end their hosts."""
        await asyncio.sleep(seconds)
        await self._fade((), [(r, r.own["tail"]) for r in old if "tail" in r.own])
        await self._tear_down(old)

    async def _tear_down(self, old: list[Rack]) -> None:
        async with self._lock:
            for rack in old:
                if rack in self._ringing:
                    self._ringing.remove(rack)
            await asyncio.gather(*(self._close_rack(rack) for rack in old))
            if self._running:
                try:
                    await self._graph.rewire()
                except EngineError as exc:
                    log.error("unwiring the old board failed: %s; retrying", exc)
                    self._graph.request_rewire()

    # -- warm standby ----------------------------------------------------------------

    def prepare(self, boards: Sequence[Sequence[SavedPlugin]]) -> None:
        """Keep racks loaded for these boards (the setlist's neighbours), running no DSP.

        A later :meth:`switch_board` to a board of the same plugins (values
        and bypass may differ) wakes them instead of loading: it is heard
        within a period and a fade. Racks for boards not named any more end.
        Never waits: the racks load in the background, one at a time.
        """
        wanted: list[tuple[str, list[SavedPlugin]]] = []
        for board in boards:
            by_track: dict[str, list[SavedPlugin]] = {track_id: [] for track_id in self.tracks}
            for saved in board:
                if saved.track_id in by_track:
                    by_track[saved.track_id].append(saved)
            wanted.extend(by_track.items())
        self._wanted_warm = wanted[: WARM_LIMIT * len(self.tracks)]
        self._kick_warming()

    def _kick_warming(self) -> None:
        if self._running and (self._warming is None or self._warming.done()):
            self._warming = asyncio.get_running_loop().create_task(self._keep_warm())

    async def _keep_warm(self) -> None:
        """Bring the warm racks to what :meth:`prepare` asked for, one rack at a time."""
        while self._running:
            spare = list(self._warm)
            missing: list[tuple[str, list[SavedPlugin]]] = []
            for track_id, saved in self._wanted_warm:
                shape = board_shape((s.type.uri, s.files) for s in saved)
                match = next((r for r in spare if r.track_id == track_id and r.shape == shape), None)
                if match is not None:
                    spare.remove(match)
                else:
                    missing.append((track_id, saved))
            for rack in spare:
                self._warm.remove(rack)
                await self._close_rack(rack)
                self._graph.request_rewire()
            if not missing:
                return
            track_id, saved = missing[0]
            rack = Rack(track_id, "warm")
            try:
                failed = await self._open_rack(rack, saved, head_open=False)
            except ApplianceError as exc:
                log.warning("warm standby for %s: %s", track_id, exc)
                return
            if failed or not self._running:
                await self._close_rack(rack)
                return
            self._warm.append(rack)
            self._graph.request_rewire()
            log.debug("warm standby: %d plugin(s) ready on %s", len(saved), track_id)

    def _take_warm(self, track_id: str, saved: Sequence[SavedPlugin]) -> Rack | None:
        shape = board_shape((s.type.uri, s.files) for s in saved)
        rack = next((r for r in self._warm if r.track_id == track_id and r.shape == shape and r.is_up), None)
        if rack is not None:
            self._warm.remove(rack)
        return rack

    async def _wake(self, rack: Rack, saved: Sequence[SavedPlugin]) -> None:
        """A warm rack becomes the new board's: its ids, values and bypass, then its DSP runs."""
        for member, plugin in zip(rack.members, saved, strict=True):
            member.id = plugin.plugin_id
            changed = {s: v for s, v in plugin.values.items() if member.values.get(s) != v}
            member.values.update(plugin.values)
            if changed:
                self._send_values(rack, member, changed)
            if member.bypass != plugin.bypass:
                member.bypass = plugin.bypass
                self._send_bypass(rack, member, plugin.bypass, ramped=False)
        tail = rack.own.get("tail")
        if tail is not None and self._muted:
            self._set_fader(rack, tail, opened=False)
        tuner = self._own.tuner
        if self._muted and tuner is not None and rack.track_id == next(iter(self.tracks)):
            member = Member("tuner", tuner, {}, hosted="tuner")
            rack.own["tuner"] = member
            await self._load(rack, member, preroll=False)
        await self._request(rack, "activate", CARLA_CALL_TIMEOUT, active=True)

    # -- the engine port: values and bypass (never wait for a structural change) ------

    async def set_parameters(self, plugin_id: str, values: Mapping[str, float]) -> None:
        """Keep the values and hand them to the plugin's host at once (coalesced per loop turn).

        Raises:
            UnknownPlugin: no such plugin.
        """
        rack, member = self._member(plugin_id)
        member.values.update(values)
        if member.up:
            self._send_values(rack, member, values)

    async def set_bypass(self, plugin_id: str, bypass: bool) -> None:
        """True bypass inside the host: the plugin's enable control, a dry/wet ramp, or out of the rack.

        Raises:
            UnknownPlugin: no such plugin.
        """
        rack, member = self._member(plugin_id)
        before, member.bypass = member.bypass, bypass
        if not member.up or member.prerolling:
            return
        if member.mode != "absent":
            self._send_bypass(rack, member, bypass)
            return
        # Out of the rack or back in: a structural change, answered (never waits for the lock).
        try:
            await self._request(rack, "bypass", PLUGIN_START_TIMEOUT, plugin=member.hosted, bypass=bypass)
        except BaseException:
            member.bypass = before
            raise

    sets_files = True

    async def set_file(self, plugin_id: str, uri: str, path: str) -> None:
        """The plugin loads ``path`` as its file ``uri`` in its worker thread, playing on meanwhile.

        Raises:
            UnknownPlugin: no such plugin.
            Unsupported: it loads more than one file (Carla sets only the first it finds).
        """
        rack, member = self._member(plugin_id)
        if len(member.type.files) != 1:
            raise Unsupported(
                f"Carla sets the file of a plugin that loads one file; "
                f"{member.type.name} loads {len(member.type.files)}"
            )
        member.files[uri] = path
        if member.up and rack.host is not None:
            self._flush_values(member)  # values sent before the file keep their order
            rack.host.send("file", plugin=member.hosted, uri=uri, path=path)

    def _send_values(self, rack: Rack, member: Member, values: Mapping[str, float]) -> None:
        """Coalesce: a slider storm becomes one message per plugin per loop turn, newest values."""
        pending = self._unsent.get(member)
        if pending is None:
            pending = self._unsent[member] = (rack, {})
            asyncio.get_running_loop().call_soon(self._flush_values, member)
        pending[1].update(values)

    def _flush_values(self, member: Member) -> None:
        pending = self._unsent.pop(member, None)
        if pending is None:
            return
        rack, values = pending
        host = rack.host
        if values and host is not None and member.up:
            host.send("set", plugin=member.hosted, values=values)

    def _send_bypass(self, rack: Rack, member: Member, bypass: bool, ramped: bool = True) -> None:
        """The host bypasses the plugin; a dry/wet one over a short ramp, so it never clicks."""
        host = rack.host
        if host is None:
            return
        self._flush_values(member)  # values sent before the bypass land before it
        if member.ramp is not None:
            member.ramp.cancel()
            member.ramp = None
        if member.mode == "drywet" and ramped:
            member.ramp = asyncio.get_running_loop().create_task(self._ramp_drywet(rack, member, bypass))
        else:
            host.send("bypass", plugin=member.hosted, bypass=bypass)

    async def _ramp_drywet(self, rack: Rack, member: Member, bypass: bool) -> None:
        """Dry/wet from where it is to dry (bypass) or wet over :data:`FADE_TIME`, then the bypass."""
        async for value in self._graph.paced(ramp(not bypass)):  # the fader's ramp: CLOSED +1 … OPEN -1
            host = rack.host
            if host is None:
                return
            host.send("drywet", plugin=member.hosted, value=(1.0 - value) / 2.0)
        if rack.host is not None:
            rack.host.send("bypass", plugin=member.hosted, bypass=bypass)

    # -- meters and the tuner --------------------------------------------------------

    def request_readings(self) -> None:
        """Ask every playing host for its plugins' output controls, meters and tuner included."""
        for rack in self._live.values():
            polled = rack.polled()
            if polled and rack.host is not None and rack.is_up:
                rack.host.send("readings", plugins=[m.hosted for m in polled])

    def readings(self) -> dict[str, dict[str, float]]:
        return {
            plugin_id: dict(member.readings)
            for plugin_id, (_rack, member) in self._plugins.items()
            if member.readings
        }

    def levels(self) -> dict[str, dict[str, float]]:
        levels: dict[str, dict[str, float]] = {}
        for track_id, rack in self._live.items():
            for role, key in (("meter-in", "in"), ("meter-out", "out")):
                member = rack.own.get(role)
                if member is not None and member.readings:
                    levels.setdefault(track_id, {})[key] = meter_level(member.readings)
        return levels

    @property
    def is_tuning(self) -> bool:
        return self._muted

    def tuner(self) -> dict[str, object] | None:
        rack = self._first_live()
        member = rack.own.get("tuner") if rack is not None else None
        return tuner_reading(member.readings) if member is not None else None

    async def set_tuner(self, on: bool) -> None:
        """The stage tuner: silence at once, then the tuner listens at the first rack's input.

        Off: the outputs fade back in at once, then the tuner leaves the rack.

        Raises:
            HardwareError: no tuner is installed.
            EngineError: the engine is not running (PluginLoadFailed: the
                tuner did not start; the box sounds again).
        """
        self._require_running()
        tails = [(r, r.own["tail"]) for r in self._live.values() if "tail" in r.own]
        if not on:
            self._muted = False
            await self._fade(tails, ())
            rack = self._first_live()
            member = rack.own.pop("tuner", None) if rack is not None else None
            if rack is not None and member is not None and member.up and rack.is_up:
                with contextlib.suppress(ApplianceError):
                    await self._request(rack, "remove", CARLA_CALL_TIMEOUT, plugin=member.hosted)
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
        async with self._lock:
            rack = self._first_live()
            if rack is None or not self._muted or not self._running:
                return
            member = Member("tuner", tuner, {}, hosted="tuner")
            rack.own["tuner"] = member
            try:
                await self._load(rack, member, preroll=False)
            except ApplianceError:
                rack.own.pop("tuner", None)
                self._muted = False
                await self._fade(tails, ())
                raise

    def _set_fader(self, rack: Rack, member: Member, opened: bool) -> None:
        member.values.update(fader_values(opened))
        if member.up and rack.host is not None:
            rack.host.send("set", plugin=member.hosted, values={FADER_CONTROL: member.values[FADER_CONTROL]})

    async def _fade(
        self, opening: Iterable[tuple[Rack, Member]], closing: Iterable[tuple[Rack, Member]]
    ) -> None:
        """Open some faders while closing others, step by step (:meth:`JackGraph.paced`)."""
        opening, closing = list(opening), list(closing)
        async for up, down in self._graph.paced(zip(ramp(True), ramp(False), strict=True)):
            for (rack, member), value in [*((o, up) for o in opening), *((c, down) for c in closing)]:
                member.values[FADER_CONTROL] = value
                if member.up and rack.host is not None:
                    rack.host.send("set", plugin=member.hosted, values={FADER_CONTROL: value})

    # -- the engine port: reads ------------------------------------------------------

    def info(self) -> EngineInfo:
        """Rate, buffer, DSP load and xruns from the wiring's snapshot. Never blocks."""
        racks = list(self._live.values())
        details: dict[str, object] = {
            "mode": "rack",
            "plugins": len(self._plugins),
            "plugins_running": sum(1 for _r, m in self._plugins.values() if m.up),
            "starting": len(self._loading),
            "bridges": self.carla.bridges,
            "host": "up" if racks and all(r.is_up for r in racks) else "down",
            "host_load": round(max((r.load for r in racks), default=0.0), 2),
            "hosts": {role: len(pids) for role, pids in self.host_pids().items()},
            "restarts": self._restarts,
            "warm_switches": self._woken,
        }
        if self._last_gap is not None:
            details["last_gap_ms"] = round(self._last_gap * 1000)
        return self._graph.info(bool(racks) and all(r.is_up for r in racks), details)

    def chain(self, track_id: str) -> list[str]:
        """Plugin ids of a track in chain order.

        Raises:
            UnknownTrack: no such track.
        """
        return [m.id for m in find_chain(self._live, track_id).members if m.id not in self._loading]

    # -- lookups ---------------------------------------------------------------------

    def _member(self, plugin_id: str) -> tuple[Rack, Member]:
        """A plugin of the playing board or being added; UnknownPlugin otherwise."""
        found = self._loading.get(plugin_id)
        return found if found is not None else self._plugin(plugin_id)

    def _plugin(self, plugin_id: str) -> tuple[Rack, Member]:
        return find_plugin(self._plugins, plugin_id)

    @staticmethod
    def _host_lost(exc: BaseException, rack: Rack) -> bool:
        """True when a load failed only because the rack's host went away (the restart loads it)."""
        return type(exc) is EngineError and not rack.is_up

    @property
    def _running(self) -> bool:
        return self._graph.running

    @property
    def server_name(self) -> str | None:
        """The JACK server (its name once a private one has started)."""
        return self._graph.server_name

    def _require_running(self) -> None:
        if not self._running:
            raise EngineError("the carla engine is not running")

    async def _ask(self, op: str, plugin_id: str) -> Any:
        rack, member = self._member(plugin_id)
        if not member.up or not rack.is_up:
            raise EngineError(f"plugin {plugin_id} is not running")
        return await self._request(rack, op, CARLA_CALL_TIMEOUT, plugin=member.hosted)

    async def _request(self, rack: Rack, op: str, timeout: float, **fields: Any) -> Any:
        """A request to a rack's host, behind every value of its plugins still waiting."""
        if op in STRUCTURAL and self._graph_fault is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._graph_fault), self._jack_timeout)
            except TimeoutError:
                raise EngineError(f"the Carla host did not answer within {self._jack_timeout} s") from None
        host = rack.host
        if host is None:
            raise EngineError("the Carla host is not running")
        for member, (owner, _values) in list(self._unsent.items()):
            if owner is rack:
                self._flush_values(member)
        return await host.request(op, timeout, **fields)

    def _emit(self, event: EngineEvent) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("event sink failed on %s", event.kind)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the hosts -------------------------------------------------------------------

    def _host_event(self, rack: Rack, message: dict[str, Any]) -> None:
        event = message.get("event")
        hosted = message.get("plugin")
        if event == "info":
            rack.load = float(message.get("load", 0.0))
        elif event == "readings" and isinstance(message.get("values"), dict):
            members = {m.hosted: m for m in rack.sequence()}
            for hosted_id, readings in message["values"].items():
                member = members.get(hosted_id)
                if member is not None and isinstance(readings, dict):
                    member.readings.update((str(k), float(v)) for k, v in readings.items())
        elif event == "parameter" and rack.role == "live":
            member = next((m for m in rack.members if m.hosted == hosted), None)
            if member is not None:
                values = {str(k): float(v) for k, v in dict(message.get("values", {})).items()}
                self._emit(EngineEvent("parameter", member.id, values=values))
        elif event == "plugin-died":
            member = next((m for m in rack.sequence() if m.hosted == hosted), None)
            if member is None or not member.up:
                return
            member.up = False
            why = str(message.get("message", ""))
            if member in rack.members and rack.role == "live":
                log.warning("plugin %s died in the Carla host: %s", member.id, why)
                self._emit(EngineEvent("plugin-died", member.id, why))
                self._background(self._revive(rack, member))
            else:
                log.warning("%s died in a %s Carla host: %s", member.id, rack.role, why)
        elif event == "stopped":
            rack.jack_stopped = True
            log.error("carla host: %s", message.get("message"))

    async def _revive(self, rack: Rack, member: Member) -> None:
        """One plugin died inside a running host (its bridge crashed): its place passes dry
        while it is loaded again with its values; given up after too many deaths."""
        host = rack.host
        policy = self._plugin_policies.get(member.id)
        if policy is None:
            policy = self._plugin_policies[member.id] = RespawnPolicy(
                asyncio.get_running_loop().time, self._respawn
            )
        delays = policy.died()
        if not delays:
            why = f"died {policy.recent} times within {self._respawn.window:.0f} s"
            log.error("plugin %s stays down (%s); its place passes dry", member.id, why)
            self._emit(EngineEvent("plugin-died", member.id, f"not restarted: {why}"))
            return
        for delay in delays:
            await asyncio.sleep(delay)
            async with self._lock:
                if member not in rack.members or rack.host is not host or not rack.is_up or member.up:
                    return  # removed, switched away, or a new host reloads every plugin
                try:
                    await self._load(rack, member, preroll=False)
                except ApplianceError as exc:
                    log.warning("reloading %s failed: %s", member.id, exc)
                    continue
            log.info("plugin %s reloaded with its values", member.id)
            self._emit(EngineEvent("plugin-restored", member.id, "reloaded with its values"))
            return
        self._emit(EngineEvent("plugin-died", member.id, "not restarted: reloading failed"))

    def _host_ended(self, rack: Rack, host: CarlaHostProcess, why: str, waited: bool = False) -> None:
        """A host process ended on its own (a crash, a kill). Loop thread.

        A host that JACK stopped may have outlived its server: that death is the
        graph's to tell (once, and the box restarts the whole engine), so such a
        host's end waits :data:`SERVER_GONE_GRACE` for the graph to hear of it."""
        if rack.host is not host or not self._started:
            return
        for member in rack.sequence():
            member.up = False
        rack.down = True
        self._graph.stale_ports.update(rack.ports)
        if not self._graph.running:
            return  # the server is gone: told by the graph, and the whole engine restarts
        if rack.jack_stopped and not waited:
            asyncio.get_running_loop().call_later(SERVER_GONE_GRACE, self._host_ended, rack, host, why, True)
            return
        if rack in self._warm:
            self._warm.remove(rack)
            log.warning("a warm standby host ended (%s); it is loaded again", why)
            self._kick_warming()
            return
        if rack in self._ringing:
            self._ringing.remove(rack)
            self._graph.request_rewire()
            return
        if self._live.get(rack.track_id) is not rack:
            return  # a new board's rack, not playing yet: its switch fails and says why
        self._down_since.setdefault(rack.track_id, asyncio.get_running_loop().time())
        self._emit(EngineEvent("engine-died", None, why))
        self._graph.request_rewire()  # the track plays dry meanwhile
        self._background(self._restart(rack))

    async def _restart(self, rack: Rack) -> None:
        """Start a new host for a playing rack, with its chain, its values and bypass."""
        policy = self._track_policies.get(rack.track_id)
        if policy is None:
            policy = self._track_policies[rack.track_id] = RespawnPolicy(
                asyncio.get_running_loop().time, self._respawn
            )
        delays = policy.died()
        if not delays:
            why = f"the Carla host died {policy.recent} times within {self._respawn.window:.0f} s"
            log.error("%s; it stays down and track %s plays dry", why, rack.track_id)
            self._emit(EngineEvent("engine-died", None, f"not restarted: {why}"))
            return
        for delay in delays:
            await asyncio.sleep(delay)
            async with self._lock:
                if not self._started or self._live.get(rack.track_id) is not rack:
                    return  # stopping, or switched away: nobody needs this rack
                members = list(rack.members)
                try:
                    await self._open_rack(rack, [], head_open=True)
                except EngineError as exc:
                    log.error("restarting the Carla host failed: %s", exc)
                    continue
                rack.members = members
                failed = await self._load_all(rack, preroll=False)
                for plugin_id, error in failed.items():
                    self._plugins.pop(plugin_id, None)
                    log.error("plugin %s did not come back: %s", plugin_id, error)
                    self._emit(EngineEvent("plugin-died", plugin_id, f"not restarted: {error}"))
                try:
                    await self._graph.rewire()
                except EngineError as exc:
                    log.error("rewiring after the restart failed: %s; retrying", exc)
                    self._graph.request_rewire()
            self._report_restored(rack.track_id)
            return
        self._emit(EngineEvent("engine-died", None, "not restarted: the Carla host did not start"))

    def _report_restored(self, track_id: str) -> None:
        since = self._down_since.pop(track_id, None)
        if since is None:
            return
        gap = asyncio.get_running_loop().time() - since
        self._restarts += 1
        self._last_gap = gap
        log.warning("carla host restarted: track %s was dry for %.0f ms", track_id, gap * 1000)
        self._emit(EngineEvent("engine-restored", None, f"back after {gap * 1000:.0f} ms"))

    async def _watch_heartbeats(self) -> None:
        """Kill a host that has gone silent; its end restarts it."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HANG_CHECK_INTERVAL)
            for rack in self._racks():
                host = rack.host
                if host is None or not host.is_running or host.busy:
                    continue  # a request in flight has its own timeout
                if loop.time() - host.last_heard > self.hang_timeout:
                    log.error("a Carla host sent nothing for %.1f s; killing it", self.hang_timeout)
                    host.kill()

    # -- wiring ----------------------------------------------------------------------

    def _plan(self) -> WiringPlan:
        """Each playing rack between its track's endpoints, with old racks ringing and warm
        ones waiting beside it (a warm rack is silent: its plugins run no DSP and its head
        fader is closed); a dead rack's track plays dry."""
        owned = set(self._graph.stale_ports)
        current = {track_id: [rack.stage] for track_id, rack in self._live.items()}
        beside = []
        for rack in [*self._ringing, *self._warm]:
            owned.update(rack.ports)
            if rack.is_up and (rack.role != "warm" or self._fader is not None):
                beside.append({rack.track_id: [rack.stage]})
        return plan_wiring(self.tracks.values(), current, owned, beside)

    def _port_changed(self, name: str, register: bool) -> None:
        """A rack's port came (back): wire it (the graph wires the tracks' own)."""
        if register and self._graph.running and any(name in rack.ports for rack in self._racks()):
            self._graph.request_rewire()
