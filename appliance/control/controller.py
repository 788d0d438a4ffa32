"""The box's one control interface: requests in, events out.

Every frontend (WebSocket clients, GPIO encoders, the demo loader) goes
through :class:`Controller`. A change is checked against the board, applied to
the engine, committed to the board, then published as events; a request that
fails at any step changes nothing and yields an error instead.

Two speeds (docs/architecture "Stage-critical paths"):

* **Structural requests** (add, remove, move) run one at a time.
* **Performance requests** (parameter, batch, preset, bypass) never wait for
  them: they act on the board that is playing at once. A plugin being added
  is on the board as *starting* from the first moment, so a knob or a
  footswitch aimed at it is taken at once too and the engine applies it when
  the plugin joins. Performance requests run one at a time among themselves
  (a short lock), so that the board and the engine agree on the last value.

Runs on the asyncio loop's thread only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..core.board import Board, ParameterPlan, PluginInstance, conform_values
from ..core.controls import FileParameter, PluginType
from ..core.errors import (
    ApplianceError,
    EngineError,
    InvalidMessage,
    PluginLoadFailed,
    UnknownPlugin,
    Unsupported,
)
from ..core.pedalboards import Recall
from ..core.protocol import Request, batch_values
from ..engine import Engine, EngineEvent, SavedPlugin
from ..store.userfiles import UserFiles
from ..system.logs import fields

log = logging.getLogger("appliance.control.controller")

Event = tuple[str, dict[str, Any]]

#: Requests that change the chains: run one at a time, never in a performance request's way.
STRUCTURAL = frozenset({"PLUGIN_ADD", "PLUGIN_REMOVE", "PLUGIN_MOVE"})

Handler = Callable[[Request], Awaitable["Outcome"]]

#: What clients are told of engine events (docs/protocol.md, ENGINE_EVENT).
ENGINE_EVENT_SENTENCES = {
    "plugin-died": "the plugin stopped; the box is restarting it",
    "plugin-restored": "the plugin is running again with its settings",
    "engine-died": "the audio engine stopped; the box logged why and restarts it where it can",
    "engine-stalled": "the audio server has stopped running: no sound until it moves again",
    "engine-restored": "the audio engine is running again with the board",
}


class Catalog(Protocol):
    def resolve(self, name: object, plugin_path: object) -> PluginType: ...

    def lookup(self, key: str) -> PluginType | None: ...

    def describe(self) -> list[dict[str, Any]]: ...

    def installed(self) -> list[dict[str, Any]]: ...


@dataclass
class Outcome:
    """What a request produced: messages for the requester and for everyone."""

    reply: list[Event] = field(default_factory=list)
    broadcast: list[Event] = field(default_factory=list)


Publisher = Callable[[list[Event], "str | None", "dict[str, str] | None"], None]


class Controller:
    """Applies requests to engine and board, in that order, and reports events.

    Args:
        board: the state, owned by this controller from now on.
        catalog: what may be added.
        engine: the plugin host.
        on_change: called after every committed change (schedules a save).
        health: returns the health report (for HEALTH_GET and BOARD_STATE).
    """

    def __init__(
        self,
        board: Board,
        catalog: Catalog,
        engine: Engine,
        on_change: Callable[[], None] = lambda: None,
        health: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.board = board
        self.catalog = catalog
        self.engine = engine
        self.on_change = on_change
        self.health = health
        self.publishers: list[Publisher] = []
        #: The player's files (None: the box has no folder for them; no plugin gets a file).
        self.user_files: UserFiles | None = None
        #: Request types that run beside a client's message stream (see :meth:`register`).
        self.structural: set[str] = set(STRUCTURAL)
        #: What a client that just connected is told after the board (see :meth:`replay`).
        self.greeters: list[Callable[[], list[Event]]] = []
        #: Awaited before each health report a client asks for (HEALTH_GET, ``/healthz``): they
        #: read again, off the loop, what the report shows from files others write (an update's
        #: outcome).
        self.health_readers: list[Callable[[], Awaitable[None]]] = []
        self._structure = asyncio.Lock()
        self._performance = asyncio.Lock()
        self._handlers: dict[str, Handler] = {
            "PLUGIN_ADD": self._add,
            "PLUGIN_REMOVE": self._remove,
            "PLUGIN_MOVE": self._move,
            "PLUGIN_PARAMETER": self._parameter,
            "PLUGIN_PARAMETER_BATCH": self._batch,
            "PLUGIN_PRESET": self._preset,
            "PRESET_LOAD": self._factory_preset,
            "PRESET_LIST": self._preset_list,
            "PLUGIN_BYPASS": self._bypass,
            "PLUGIN_FILE": self._file,
            "PLUGIN_PARAMETERS_GET": self._parameters_get,
            "BOARD_GET": self._board_get,
            "CATALOG_GET": self._catalog_get,
            "HEALTH_GET": self._health_get,
            "PING": self._ping,
        }

    def register(self, kind: str, handler: Handler, structural: bool = False) -> None:
        """Handle another request type (pedalboards, setlists: :mod:`appliance.control.library`).

        ``structural`` requests may take long (a board switch): the server runs
        them beside the client's other messages.
        """
        self._handlers[kind] = handler
        if structural:
            self.structural.add(kind)

    async def execute(self, request: Request) -> Outcome:
        """Carry out one request.

        Raises:
            ApplianceError: the request was refused; nothing changed.
        """
        handler = self._handlers.get(request.type)
        if handler is None:
            raise InvalidMessage(f"{request.type} is not handled here")
        outcome = await handler(request)
        if outcome.broadcast:
            self.publish(outcome.broadcast, request.id, request.origin())
        return outcome

    def publish(
        self, events: list[Event], reply_to: str | None = None, origin: dict[str, str] | None = None
    ) -> None:
        for publisher in self.publishers:
            publisher(events, reply_to, origin)

    # -- structure -------------------------------------------------------

    async def _add(self, request: Request) -> Outcome:
        data = request.data
        self.board.check_room(data["track_id"])
        plugin_type = self.catalog.resolve(data.get("name"), data.get("plugin_path"))
        name = (
            data.get("name") if isinstance(data.get("name"), str) and data.get("name") else plugin_type.name
        )
        return await self.add(data["track_id"], plugin_type, str(name), data.get("position"))

    async def add(
        self,
        track_id: str,
        plugin_type: PluginType,
        name: str,
        position: object = None,
        values: Mapping[str, object] | None = None,
        bypass: bool = False,
    ) -> Outcome:
        """Add a plugin (also used by the demo loader).

        The plugin is on the board as starting while the engine starts it:
        values and bypass sent meanwhile are kept, and it joins with them.
        """
        async with self._structure:
            self.board.check_room(track_id)
            index = self.board.check_position(track_id, position)
            instance = self.board.new_instance(plugin_type, name)
            if values:
                instance.values.update(conform_values(plugin_type, values)[0])
            instance.bypass = bypass
            chain = self.board.track(track_id).chain
            index = len(chain) if index is None else index
            self.board.begin_insert(track_id, instance)
            try:
                await self.engine.add_plugin(
                    track_id, instance.id, plugin_type, index, instance.engine_values(), bypass
                )
            except BaseException:
                self.board.abandon(track_id, instance)
                raise
            self.board.finish_insert(track_id, instance, index)
        self.on_change()
        log.debug(
            "added %s (%s) to %s at %d",
            instance.id,
            plugin_type.key,
            track_id,
            index,
            extra=fields(plugin_id=instance.id, track_id=track_id),
        )
        events = [("PLUGIN_ADD", self._added(track_id, instance, index))]
        if instance.bypass:
            events.append(("PLUGIN_BYPASS", self._ids(track_id, instance) | {"bypass": True}))
        return Outcome(broadcast=events)

    async def exclusively(self, load: Callable[[], Awaitable[None]]) -> None:
        """Run ``load`` (the saved board into the engine, at start) with no structural change
        meanwhile; an engine restart asked for meanwhile waits for it."""
        async with self._structure:
            await load()

    async def restart_engine(self, load: Callable[[], Awaitable[None]]) -> bool:
        """Stop and start the engine, then ``load`` the board into it, with no structural
        change in between; False (engine stopped) while it cannot start yet."""
        async with self._structure:
            await self.engine.stop()
            try:
                await self.engine.start()
            except EngineError as exc:
                log.debug("engine: cannot start yet: %s", exc)
                return False
            await load()
        return True

    async def _remove(self, request: Request) -> Outcome:
        track_id, plugin_id = request.data["track_id"], request.data["plugin_id"]
        async with self._structure:
            self.board.plugin(track_id, plugin_id)
            try:
                await self.engine.remove_plugin(plugin_id)
            except UnknownPlugin:
                log.warning("remove: the engine did not have %s; removed from the board", plugin_id)
            self.board.remove(track_id, plugin_id)
        self.on_change()
        return Outcome(broadcast=[("PLUGIN_REMOVE", {"track_id": track_id, "plugin_id": plugin_id})])

    async def _move(self, request: Request) -> Outcome:
        track_id, plugin_id = request.data["track_id"], request.data["plugin_id"]
        async with self._structure:
            self.board.plugin(track_id, plugin_id)
            last = len(self.board.track(track_id).chain) - 1
            position = max(0, min(int(request.data["position"]), last))
            await self.engine.move_plugin(plugin_id, position)
            self.board.move(track_id, plugin_id, position)
        self.on_change()
        return Outcome(
            broadcast=[("PLUGIN_MOVE", {"track_id": track_id, "plugin_id": plugin_id, "position": position})]
        )

    async def switch_board(self, data: Mapping[str, Any], spillover: float) -> list[Event]:
        """Replace the whole board with a saved one, without a gap; the events that say so.

        The saved board's plugins get fresh ids (the old board's still play
        while the new one starts). Until the engine moves the signal over,
        knobs and bypass act on the old board; the board changes with the
        sound, in one loop step.

        Raises:
            PluginLoadFailed: a plugin is not installed or did not start; the
                sentence names it. Nothing changed; the old board plays on.
            EngineError: the engine is not running; nothing changed.
        """
        async with self._structure:
            incoming = Board(self.board.tracks)
            problems = incoming.restore(data, self.catalog)
            missing = [saved for track in incoming.tracks.values() for _index, saved in track.dormant]
            if missing:
                raise _naming(
                    f"{missing[0].get('name') or missing[0].get('plugin')} is not installed on this box"
                )
            for problem in problems:
                log.warning("pedalboard: %s", problem)
            for _track, instance in incoming.instances():
                instance.id = f"plugin_{self.board.next_number}"
                self.board.next_number += 1
            without_files: list[Event] = []
            saved_plugins = [self.saved(t.id, p, without_files) for t, p in incoming.instances()]
            before = self._removals()

            def commit() -> None:
                for track_id, track in incoming.tracks.items():
                    self.board.tracks[track_id].chain = track.chain
                    self.board.tracks[track_id].dormant = []

            try:
                await self.engine.switch_board(saved_plugins, spillover, commit)
            except EngineError as exc:
                if exc.plugin_id is None:
                    raise
                name = next((p.name for _t, p in incoming.instances() if p.id == exc.plugin_id), "a plugin")
                log.error(
                    "board switch: %s (%s) could not start: %s",
                    name,
                    exc.plugin_id,
                    exc,
                    extra=fields(plugin_id=exc.plugin_id, engine=self.engine.name),
                )
                raise _naming(f"{name} could not start") from exc
        self.on_change()
        return before + self.replay_board() + without_files

    async def recall(self, changes: Sequence[Recall]) -> list[Event]:
        """Set many plugins' values and bypass as one step (a snapshot); the events that say so.

        Every value reaches the engine in the same loop turn, then every
        bypass; no other knob or footswitch lands in between. A plugin removed
        meanwhile (the recall may wait for a footswitch, and its own bypasses
        for the graph) is left out; whatever was applied is saved, even if a
        later bypass fails.
        """
        events: list[Event] = []
        changed = False
        try:
            async with self._performance:
                applied: list[Recall] = []
                for change in changes:
                    try:
                        await self.engine.set_parameters(change.plan.plugin_id, change.plan.engine)
                        self.board.commit(change.plan)
                    except UnknownPlugin:
                        log.warning("snapshot: %s was removed as it was recalled", change.plan.plugin_id)
                        continue
                    changed = True
                    applied.append(change)
                    events += self._parameter_events(change.plan)
                for change in applied:
                    track_id, plugin_id = change.plan.track_id, change.plan.plugin_id
                    try:
                        instance = self.board.plugin(track_id, plugin_id)
                        if instance.bypass == change.bypass:
                            continue
                        await self.engine.set_bypass(plugin_id, change.bypass)
                        self.board.set_bypass(track_id, plugin_id, change.bypass)
                    except UnknownPlugin:
                        continue  # removed while a bypass rewired
                    bypassed = self._ids(track_id, instance) | {"bypass": change.bypass}
                    events.append(("PLUGIN_BYPASS", bypassed))
        finally:
            if changed:
                self.on_change()
        return events

    def _removals(self) -> list[Event]:
        return [
            ("PLUGIN_REMOVE", {"track_id": track.id, "plugin_id": instance.id})
            for track, instance in self.board.instances()
        ]

    # -- performance: never behind a structural change ------------------

    async def _bypass(self, request: Request) -> Outcome:
        track_id, plugin_id = request.data["track_id"], request.data["plugin_id"]
        bypass = request.data.get("bypass")
        instance = self.board.plugin(track_id, plugin_id)
        if not isinstance(bypass, bool):
            self.board.set_bypass(track_id, plugin_id, bypass)  # raises InvalidValue
        async with self._performance:
            await self.engine.set_bypass(plugin_id, bool(bypass))
            self.board.set_bypass(track_id, plugin_id, bypass)
        self.on_change()
        return Outcome(broadcast=[("PLUGIN_BYPASS", self._ids(track_id, instance) | {"bypass": bypass})])

    async def _file(self, request: Request) -> Outcome:
        """The plugin loads one of the player's files (PLUGIN_FILE, docs/protocol.md)."""
        data = request.data
        track_id, plugin_id = data["track_id"], data["plugin_id"]
        instance = self.board.plugin(track_id, plugin_id)
        parameter = instance.type.file(data["file_id"])
        path = await asyncio.to_thread(self._player_file, parameter, data.get("file"))
        async with self._performance:
            await self.engine.set_file(plugin_id, parameter.uri, str(path))
            instance.files[parameter.id] = str(data["file"])
        self.on_change()
        return Outcome(
            broadcast=[
                (
                    "PLUGIN_FILE",
                    self._ids(track_id, instance) | {"file_id": parameter.id, "file": data["file"]},
                )
            ]
        )

    async def rename_file(self, old: str, new: str) -> list[Event]:
        """The player's file ``old`` is called ``new`` now (both names are still there): the
        board's plugins that load it name the new one at once, then load it from there (the
        same sound; the engine's copy of the path is what a crashed plugin comes back with).
        Their ``PLUGIN_FILE`` events."""
        renamed = self.board.rename_file(old, new)  # before any await: the board never names both
        if not renamed:
            return []
        self.on_change()
        if self.engine.sets_files:  # jalv loads no files: the names alone change
            for _track_id, instance, file_id in renamed:
                parameter = instance.type.file(file_id)
                try:
                    path = await asyncio.to_thread(self._player_file, parameter, new)
                    async with self._performance:
                        await self.engine.set_file(instance.id, parameter.uri, str(path))
                except ApplianceError as exc:
                    why = exc.public_message()
                    log.warning("%s: loading %r under its new name: %s", instance.id, new, why)
        return [
            ("PLUGIN_FILE", self._ids(track_id, instance) | {"file_id": file_id, "file": new})
            for track_id, instance, file_id in renamed
        ]

    def _player_file(self, parameter: FileParameter, name: object) -> Path:
        """The real path of the player's file ``name`` for ``parameter`` (blocking: a stat).

        Raises:
            Unsupported: the box keeps no files of the player's.
            InvalidValue: not a file of theirs that suits the parameter.
        """
        if self.user_files is None:
            raise Unsupported("this box keeps no files of the player's")
        return self.user_files.path(name, parameter.file_types)

    def saved(
        self, track_id: str, instance: PluginInstance, missing: list[Event] | None = None
    ) -> SavedPlugin:
        """A plugin of the board as an engine loads it: its values, bypass and files. A file the
        player's folder no longer has is left out, logged, and told in ``missing`` (an
        ``ENGINE_EVENT`` of kind ``file-missing`` each)."""
        files: dict[str, str] = {}
        for file_id, name in instance.files.items():
            try:
                parameter = instance.type.file(file_id)
                if not self.engine.sets_files:
                    raise Unsupported(f"the {self.engine.name} engine cannot set a plugin's file")
                files[parameter.uri] = str(self._player_file(parameter, name))
            except ApplianceError as exc:
                log.warning("%s loads without its file %r: %s", instance.id, name, exc.public_message())
                if missing is not None:
                    sentence = f"{instance.name} plays without its file {name!r}: {exc.public_message()}"
                    told = {"kind": "file-missing", "plugin_id": instance.id, "message": sentence}
                    missing.append(("ENGINE_EVENT", told))
        return SavedPlugin(
            track_id, instance.id, instance.type, instance.engine_values(), instance.bypass, files
        )

    async def _apply(self, plan: ParameterPlan) -> None:
        async with self._performance:
            await self.engine.set_parameters(plan.plugin_id, plan.engine)
            self.board.commit(plan)
        self.on_change()

    async def _parameter(self, request: Request) -> Outcome:
        data = request.data
        plan = self.board.plan_parameters(
            data["track_id"], data["plugin_id"], {data["parameter_id"]: data.get("parameter_value")}
        )
        await self._apply(plan)
        return Outcome(broadcast=self._parameter_events(plan))

    async def _batch(self, request: Request) -> Outcome:
        data = request.data
        plan = self.board.plan_parameters(
            data["track_id"], data["plugin_id"], batch_values(data["parameters"])
        )
        await self._apply(plan)
        return Outcome(broadcast=self._parameter_events(plan))

    async def _preset(self, request: Request) -> Outcome:
        data = request.data
        plan = self.board.plan_parameters(data["track_id"], data["plugin_id"], data["preset_data"])
        await self._apply(plan)
        instance = self.board.plugin(plan.track_id, plan.plugin_id)
        events: list[Event] = [
            ("PLUGIN_PRESET", self._ids(plan.track_id, instance) | {"preset_data": dict(instance.values)})
        ]
        # Clients that only follow PLUGIN_PARAMETER (the React example) converge too.
        return Outcome(broadcast=events + self._parameter_events(plan))

    async def _factory_preset(self, request: Request) -> Outcome:
        """One of the plugin's factory presets: its values, as one change (a PLUGIN_PRESET)."""
        data = request.data
        instance = self.board.plugin(data["track_id"], data["plugin_id"])
        preset = instance.type.preset(data["preset"])
        values = {}
        for symbol, value in preset.values:
            parameter = instance.type.canonical(symbol)
            values[parameter.id] = parameter.from_engine(value)
        plan = self.board.plan_parameters(data["track_id"], instance.id, values)
        await self._apply(plan)
        events: list[Event] = [
            ("PLUGIN_PRESET", self._ids(plan.track_id, instance) | {"preset_data": dict(instance.values)})
        ]
        return Outcome(broadcast=events + self._parameter_events(plan))

    async def _preset_list(self, request: Request) -> Outcome:
        plugin_type = self.catalog.resolve(request.data["plugin"], None)
        presets = [{"uri": p.uri, "label": p.label} for p in plugin_type.presets]
        return Outcome(reply=[("PRESETS", {"plugin": plugin_type.key, "presets": presets})])

    @staticmethod
    def _parameter_events(plan: ParameterPlan) -> list[Event]:
        return [
            (
                "PLUGIN_PARAMETER",
                {
                    "track_id": plan.track_id,
                    "plugin_id": plan.plugin_id,
                    "parameter_id": parameter_id,
                    "parameter_value": value,
                },
            )
            for parameter_id, value in plan.values.items()
        ]

    # -- reads -----------------------------------------------------------

    async def _parameters_get(self, request: Request) -> Outcome:
        track_id, plugin_id = request.data["track_id"], request.data["plugin_id"]
        instance = self.board.plugin(track_id, plugin_id)
        return Outcome(
            reply=[
                (
                    "PLUGIN_PARAMETERS_GET",
                    self._ids(track_id, instance) | {"parameters": dict(instance.values)},
                )
            ]
        )

    async def _board_get(self, request: Request) -> Outcome:
        return Outcome(reply=[("BOARD_STATE", self.board_state())])

    async def _catalog_get(self, request: Request) -> Outcome:
        return Outcome(
            reply=[("CATALOG", {"plugins": self.catalog.describe(), "installed": self.catalog.installed()})]
        )

    async def _health_get(self, request: Request) -> Outcome:
        await self.refresh_health()
        return Outcome(reply=[("HEALTH", self.health())])

    async def refresh_health(self) -> None:
        """Bring what the health report reads from files up to date (:attr:`health_readers`)."""
        for read in self.health_readers:
            await read()

    async def _ping(self, request: Request) -> Outcome:
        return Outcome(reply=[("PONG", {})])

    def board_state(self) -> dict[str, Any]:
        """The whole board in one message (BOARD_STATE, docs/protocol.md)."""
        tracks = []
        for track in self.board.tracks.values():
            ports = self.engine.tracks.get(track.id)
            tracks.append(
                {
                    "track_id": track.id,
                    "inputs": list(ports.inputs) if ports else [],
                    "outputs": list(ports.outputs) if ports else [],
                    "plugins": [
                        self._added(track.id, p, i) | {"bypass": p.bypass} for i, p in enumerate(track.chain)
                    ],
                }
            )
        return {"tracks": tracks, "engine": self.engine.info().as_dict()}

    def replay(self) -> list[Event]:
        """What a client that just connected is told: the board, then the greeters' events.

        protocol.md "Late joiners see the board".
        """
        events = self.replay_board()
        for greeter in self.greeters:
            events += greeter()
        return events

    def replay_board(self) -> list[Event]:
        """The board as ordinary events: per track in chain order, PLUGIN_ADD with
        current values, then PLUGIN_BYPASS for bypassed ones."""
        events: list[Event] = []
        for track in self.board.tracks.values():
            for index, instance in enumerate(track.chain):
                events.append(("PLUGIN_ADD", self._added(track.id, instance, index)))
                if instance.bypass:
                    events.append(("PLUGIN_BYPASS", self._ids(track.id, instance) | {"bypass": True}))
        return events

    @staticmethod
    def _ids(track_id: str, instance: PluginInstance) -> dict[str, Any]:
        return {"track_id": track_id, "plugin_id": instance.id}

    def _added(self, track_id: str, instance: PluginInstance, index: int) -> dict[str, Any]:
        return {
            "track_id": track_id,
            "plugin_id": instance.id,
            "name": instance.name,
            "parameters": dict(instance.values),
            "plugin": instance.type.key,
            "uri": instance.type.uri,
            "position": index,
        } | (
            {"files": {f.id: instance.files.get(f.id) for f in instance.type.files}}
            if instance.type.files
            else {}
        )

    # -- engine events ---------------------------------------------------

    def engine_event(self, event: EngineEvent) -> None:
        """React to something the engine reports. Loop thread."""
        if event.kind == "parameter" and event.plugin_id:
            for track, instance in self.board.instances():
                if instance.id != event.plugin_id:
                    continue
                changed: dict[str, float] = {}
                for parameter in instance.type.parameters:
                    if parameter.symbol in event.values:
                        value = parameter.from_engine(event.values[parameter.symbol])
                        if instance.values.get(parameter.id) != value:
                            changed[parameter.id] = value
                if changed:
                    plan = ParameterPlan(track.id, instance.id, changed, {})
                    self.board.commit(plan)
                    self.on_change()
                    self.publish(self._parameter_events(plan), None, {"source": "engine"})
        elif event.kind in ENGINE_EVENT_SENTENCES:
            where = fields(plugin_id=event.plugin_id, engine=self.engine.name)
            if event.kind in ("plugin-restored", "engine-restored"):
                log.warning("engine: %s %s %s", event.kind, event.plugin_id or "", event.message, extra=where)
            else:
                log.error("engine: %s %s %s", event.kind, event.plugin_id or "", event.message, extra=where)
            # The engine's own message (process output, library errors) stays in the log.
            sentence = ENGINE_EVENT_SENTENCES[event.kind]
            self.publish(
                [("ENGINE_EVENT", {"kind": event.kind, "plugin_id": event.plugin_id, "message": sentence})]
            )


def _naming(sentence: str) -> PluginLoadFailed:
    """A failed board switch, told to the client with the plugin's name (never the engine's text)."""
    failed = PluginLoadFailed(f"{sentence}; the old board plays on")
    failed.public = str(failed)
    return failed
