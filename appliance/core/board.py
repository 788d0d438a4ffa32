"""The board: tracks, their plugin chains, parameter values and bypass.

Pure: no asyncio, sockets, clocks or files. The board is the single place
where the rules live (which ids exist, clamping and snapping, atomic
multi-value changes); callers check a change with a ``plan_*`` method, apply
it to the engine, then ``commit`` it here, so a change the engine refused
never reaches the board.

Plugin ids are assigned here (``plugin_<n>``), never reused, and saved with
the board, so they are stable across restarts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .controls import PluginType
from .errors import ChainFull, InvalidMessage, InvalidValue, UnknownPlugin, UnknownTrack

BOARD_FORMAT = 1
#: Plugins a track's chain may hold (a Pi 4 runs out of DSP well before; a client adding
#: without end would otherwise start a plugin host per request).
MAX_CHAIN = 16


@dataclass
class PluginInstance:
    """One plugin on a track.

    Attributes:
        id: the box's stable id.
        name: the name the client asked for (echoed back, the examples key
            presets on it).
        type: what the plugin is.
        values: canonical parameter id → value in canonical units.
        bypass: True when the plugin is passed through.
        files: file parameter id → the player's file it loads (``ir/cab.wav``,
            :mod:`appliance.store.userfiles`).
    """

    id: str
    name: str
    type: PluginType
    values: dict[str, float]
    bypass: bool = False
    files: dict[str, str] = field(default_factory=dict)

    def engine_values(self) -> dict[str, float]:
        """Every parameter as LV2 symbol → value in the plugin's own units."""
        return {p.symbol: p.to_engine(self.values.get(p.id, p.default)) for p in self.type.parameters}


@dataclass
class Track:
    """A track's chain, plugins still starting, and saved plugins that cannot be loaded now.

    ``starting`` holds plugins being added: their values and bypass can be
    changed at once (the engine applies them when the plugin joins), but
    they are not in the chain, the replay or the saved board until they do.
    ``dormant`` keeps each unloadable saved entry with its place in the saved
    chain, untouched, so that saving the board never throws it away (a plugin
    package being upgraded must not cost the user their settings).
    """

    id: str
    chain: list[PluginInstance] = field(default_factory=list)
    starting: list[PluginInstance] = field(default_factory=list)
    dormant: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class ParameterPlan:
    """A checked multi-value change, ready for the engine and then the board.

    Attributes:
        values: canonical id → value as applied (clamped, snapped).
        engine: LV2 symbol → value in the plugin's units.
    """

    track_id: str
    plugin_id: str
    values: dict[str, float]
    engine: dict[str, float]


class PluginResolver(Protocol):
    """Anything that maps a saved plugin key or URI back to a :class:`PluginType`."""

    def lookup(self, key: str) -> PluginType | None: ...


class Board:
    """Tracks and chains. Not thread-safe: the asyncio loop owns it."""

    def __init__(self, track_ids: Iterable[str]) -> None:
        self.tracks: dict[str, Track] = {tid: Track(tid) for tid in track_ids}
        self.next_number = 1
        #: Saved tracks that are no longer configured, kept as they were.
        self.orphans: list[dict[str, Any]] = []

    # -- lookups ---------------------------------------------------------

    def track(self, track_id: object) -> Track:
        _require_str("track_id", track_id)
        try:
            return self.tracks[track_id]  # type: ignore[index]
        except KeyError:
            raise UnknownTrack(f"no track {track_id!r}", {"track_id": track_id}) from None

    def plugin(self, track_id: object, plugin_id: object) -> PluginInstance:
        """A plugin in the track's chain, or one still starting there."""
        track = self.track(track_id)
        _require_str("plugin_id", plugin_id)
        for instance in (*track.chain, *track.starting):
            if instance.id == plugin_id:
                return instance
        raise UnknownPlugin(
            f"no plugin {plugin_id!r} on {track.id}", {"track_id": track.id, "plugin_id": plugin_id}
        )

    def position(self, track_id: str, plugin_id: str) -> int:
        return self.track(track_id).chain.index(self.plugin(track_id, plugin_id))

    def is_starting(self, track_id: str, plugin_id: str) -> bool:
        return any(p.id == plugin_id for p in self.track(track_id).starting)

    def instances(self) -> Iterable[tuple[Track, PluginInstance]]:
        for track in self.tracks.values():
            for instance in track.chain:
                yield track, instance

    # -- structure -------------------------------------------------------

    def new_instance(self, plugin_type: PluginType, name: str) -> PluginInstance:
        """Make (but do not place) a plugin with default values and a fresh id."""
        instance = PluginInstance(f"plugin_{self.next_number}", name, plugin_type, plugin_type.defaults())
        self.next_number += 1
        return instance

    def insert(self, track_id: str, instance: PluginInstance, position: int | None = None) -> int:
        chain = self.track(track_id).chain
        index = len(chain) if position is None else max(0, min(position, len(chain)))
        chain.insert(index, instance)
        return index

    def check_room(self, track_id: str) -> None:
        """Raises ChainFull when the track's chain (plugins starting included) is full."""
        track = self.track(track_id)
        if len(track.chain) + len(track.starting) >= MAX_CHAIN:
            raise ChainFull(
                f"{track.id} already holds {MAX_CHAIN} plugins", {"track_id": track.id, "limit": MAX_CHAIN}
            )

    def begin_insert(self, track_id: str, instance: PluginInstance) -> None:
        """A plugin is starting on the track: findable, not in the chain yet."""
        self.track(track_id).starting.append(instance)

    def finish_insert(self, track_id: str, instance: PluginInstance, position: int) -> int:
        """The starting plugin joined the chain at ``position``; its index."""
        self.track(track_id).starting.remove(instance)
        return self.insert(track_id, instance, position)

    def abandon(self, track_id: str, instance: PluginInstance) -> None:
        """The starting plugin did not make it."""
        self.track(track_id).starting.remove(instance)

    def check_position(self, track_id: str, position: object) -> int | None:
        if position is None:
            return None
        if isinstance(position, bool) or not isinstance(position, int):
            raise InvalidMessage("position must be an integer", {"field": "data.position"})
        return max(0, min(position, len(self.track(track_id).chain)))

    def make_dormant(self, track_id: str, plugin_id: str) -> None:
        """Take a plugin the engine could not load off the live chain, keeping it saved."""
        index = self.position(track_id, plugin_id)
        instance = self.remove(track_id, plugin_id)
        self.tracks[track_id].dormant.append((index, _saved(instance)))

    def remove(self, track_id: str, plugin_id: str) -> PluginInstance:
        instance = self.plugin(track_id, plugin_id)
        chain = self.tracks[track_id].chain
        if instance not in chain:
            raise UnknownPlugin(
                f"plugin {plugin_id!r} is still starting", {"track_id": track_id, "plugin_id": plugin_id}
            )
        chain.remove(instance)
        return instance

    def move(self, track_id: str, plugin_id: str, position: int) -> int:
        chain = self.track(track_id).chain
        instance = self.remove(track_id, plugin_id)
        index = max(0, min(position, len(chain)))
        chain.insert(index, instance)
        return index

    # -- values ----------------------------------------------------------

    def plan_parameters(
        self, track_id: object, plugin_id: object, values: Mapping[str, object] | Mapping[object, object]
    ) -> ParameterPlan:
        """Check every value first; one bad entry raises and nothing is planned.

        Raises:
            UnknownTrack, UnknownPlugin, UnknownParameter, InvalidValue.
        """
        instance = self.plugin(track_id, plugin_id)
        applied, engine = conform_values(instance.type, values)
        return ParameterPlan(str(track_id), instance.id, applied, engine)

    def commit(self, plan: ParameterPlan) -> None:
        self.plugin(plan.track_id, plan.plugin_id).values.update(plan.values)

    def set_bypass(self, track_id: str, plugin_id: str, bypass: object) -> PluginInstance:
        if not isinstance(bypass, bool):
            raise InvalidValue("bypass must be true or false", {"field": "bypass"})
        instance = self.plugin(track_id, plugin_id)
        instance.bypass = bypass
        return instance

    def rename_file(self, old: str, new: str) -> list[tuple[str, PluginInstance, str]]:
        """The player's file ``old`` is called ``new`` now: every plugin that loads it (dormant
        ones too) names the new one. The track id, plugin and file id of each playing one."""
        renamed = []
        for track, instance in self.instances():
            for file_id, name in instance.files.items():
                if name == old:
                    instance.files[file_id] = new
                    renamed.append((track.id, instance, file_id))
        kept = [saved for track in self.tracks.values() for _index, saved in track.dormant]
        rename_file_in({"tracks": [{"chain": kept}, *self.orphans]}, old, new)
        return renamed

    # -- saving ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The board as plain data, the form :class:`BoardStore` writes."""
        tracks: list[dict[str, Any]] = []
        for track in self.tracks.values():
            chain = [_saved(p) for p in track.chain]
            for index, saved in track.dormant:
                chain.insert(min(index, len(chain)), saved)
            tracks.append({"id": track.id, "chain": chain})
        return {
            "format": BOARD_FORMAT,
            "next_number": self.next_number,
            "tracks": tracks + self.orphans,
        }

    def restore(self, data: Mapping[str, Any], resolver: PluginResolver) -> list[str]:
        """Replace the chains with saved ones; tracks not in config are dropped.

        Plugins that no longer resolve are kept dormant (saved again as they
        were, see :class:`Track`) and tracks no longer configured are kept as
        orphans; values that no longer fit are dropped. All are reported, none
        is fatal.

        Returns:
            One sentence per thing that could not be restored, for the log.
        """
        problems: list[str] = []
        if data.get("format") != BOARD_FORMAT:
            raise ValueError(f"unknown board format {data.get('format')!r}")
        for track in self.tracks.values():
            track.chain.clear()
            track.dormant.clear()
        self.orphans = []
        highest = 0
        for saved_track in data.get("tracks", []):
            track_id = saved_track.get("id")
            if track_id not in self.tracks:
                problems.append(f"track {track_id!r} is no longer configured; its plugins were not loaded")
                self.orphans.append(saved_track)
                continue
            for index, saved in enumerate(saved_track.get("chain", [])):
                plugin_type = resolver.lookup(saved.get("plugin", "")) or resolver.lookup(
                    saved.get("uri", "")
                )
                plugin_id = str(saved.get("id", ""))
                if plugin_id.startswith("plugin_") and plugin_id[7:].isdigit():
                    highest = max(highest, int(plugin_id[7:]))
                if plugin_type is None:
                    name = saved.get("plugin")
                    problems.append(f"{plugin_id}: plugin {name!r} is not installed; kept in the saved board")
                    self.tracks[track_id].dormant.append((index, saved))
                    continue
                instance = PluginInstance(
                    plugin_id, str(saved.get("name", plugin_type.name)), plugin_type, plugin_type.defaults()
                )
                instance.bypass = bool(saved.get("bypass", False))
                for pid, value in dict(saved.get("values", {})).items():
                    try:
                        instance.values.update(conform_values(plugin_type, {pid: value})[0])
                    except (KeyError, ValueError, InvalidMessage) as exc:
                        problems.append(f"{plugin_id}: {exc}")
                for file_id, name in dict(saved.get("files", {})).items():
                    if isinstance(name, str) and any(f.id == file_id for f in plugin_type.files):
                        instance.files[file_id] = name
                    else:
                        problems.append(f"{plugin_id}: file {file_id!r} = {name!r} dropped")
                self.tracks[track_id].chain.append(instance)
        self.next_number = max(int(data.get("next_number", 1)), highest + 1)
        return problems


def rename_file_in(board: Mapping[str, Any], old: str, new: str) -> int:
    """Name the player's file ``old`` ``new`` in a board as plain data (:meth:`Board.to_dict`
    form, a pedalboard's), in place; how many plugins named it."""
    count = 0
    for track in board.get("tracks", []):
        for saved in track.get("chain", []) if isinstance(track, Mapping) else []:
            files = saved.get("files") if isinstance(saved, Mapping) else None
            if not isinstance(files, dict):
                continue
            for file_id, name in files.items():
                if name == old:
                    files[file_id] = new
                    count += 1
    return count


def _saved(instance: PluginInstance) -> dict[str, Any]:
    """One plugin as :meth:`Board.to_dict` writes it."""
    return {
        "id": instance.id,
        "name": instance.name,
        "plugin": instance.type.key,
        "uri": instance.type.uri,
        "bypass": instance.bypass,
        "values": {pid: instance.values[pid] for pid in sorted(instance.values)},
    } | ({"files": dict(sorted(instance.files.items()))} if instance.files else {})


def conform_values(
    plugin_type: PluginType, values: Mapping[str, object] | Mapping[object, object]
) -> tuple[dict[str, float], dict[str, float]]:
    """Check values for a plugin type, all or nothing.

    Returns:
        (canonical id → applied value, LV2 symbol → value in the plugin's units)

    Raises:
        InvalidMessage, UnknownParameter, InvalidValue.
    """
    applied: dict[str, float] = {}
    engine: dict[str, float] = {}
    for parameter_id, raw in values.items():
        _require_str("parameter_id", parameter_id)
        asked = plugin_type.parameter(parameter_id)  # type: ignore[arg-type]
        canonical = plugin_type.canonical(parameter_id)  # type: ignore[arg-type]
        engine_value = asked.to_engine(asked.conform(raw))
        applied[canonical.id] = canonical.from_engine(engine_value)
        engine[canonical.symbol] = engine_value
    return applied, engine


def _require_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidMessage(f"{name} must be a string", {"field": name})
