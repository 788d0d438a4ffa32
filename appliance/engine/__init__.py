"""The engine port: the one interface the board drives, whatever hosts the plugins.

Adapters: :class:`appliance.engine.jalv.engine.JalvEngine` (each plugin a ``jalv``
process on JACK, chained by JACK connections, Debian packages only) and
:class:`appliance.engine.carla.engine.CarlaEngine` (each track's chain in one
Carla host process in rack mode: one JACK client, one realtime callback). Only
:mod:`appliance.app` chooses one. Every method is called from the asyncio
loop's thread; adapters do their blocking work elsewhere.

Values cross this boundary in the plugins' own units, keyed by LV2 symbol.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..core.controls import PluginType
from ..core.errors import ApplianceError, HardwareError, UnknownPlugin, UnknownTrack, Unsupported

__all__ = [
    "ENGINE_START_TIMEOUT",
    "NO_OWN_PLUGINS",
    "PLUGIN_START_TIMEOUT",
    "Engine",
    "EngineEvent",
    "EngineInfo",
    "EventSink",
    "OwnPlugins",
    "SavedPlugin",
    "TrackPorts",
    "find_chain",
    "find_plugin",
]

P = TypeVar("P")
C = TypeVar("C")

#: How long a structural change (plugin start, rewiring) may take.
PLUGIN_START_TIMEOUT = 10.0
#: How long engine start (server, connections) may take.
ENGINE_START_TIMEOUT = 15.0


@dataclass(frozen=True)
class TrackPorts:
    """A track's fixed endpoints: full JACK port names (``system:capture_1``)."""

    id: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class EngineInfo:
    """What the engine reports for health and meters."""

    name: str
    running: bool
    sample_rate: int = 0
    buffer_size: int = 0
    dsp_load: float = 0.0
    xruns: int = 0
    details: Mapping[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "engine": self.name,
            "running": self.running,
            "sample_rate": self.sample_rate,
            "buffer_size": self.buffer_size,
            "dsp_load": round(self.dsp_load, 2),
            "xruns": self.xruns,
            **dict(self.details),
        }


@dataclass(frozen=True)
class EngineEvent:
    """Something that happened inside the engine, for the loop to act on.

    kinds: ``plugin-died`` (message says why), ``plugin-restored``,
    ``parameter`` (symbol/value changed inside the engine), ``engine-died``,
    ``engine-stalled`` (the JACK server runs no cycle), ``engine-restored``
    (message says how long the tracks played dry).

    ``needs_restart`` (with ``engine-died``): the engine cannot come back by
    itself (its JACK server went away); whoever owns it stops and starts it
    again, and loads the board, once the server is back.
    """

    kind: str
    plugin_id: str | None = None
    message: str = ""
    values: Mapping[str, float] = field(default_factory=dict)
    needs_restart: bool = False


EventSink = Callable[[EngineEvent], None]


@dataclass(frozen=True)
class OwnPlugins:
    """The plugins an engine hosts for the box itself, never on a board (None: not installed).

    Attributes:
        fader: fades board switches (:mod:`appliance.engine.faders`); without
            it a switch cuts.
        meter: measures each track's levels (:mod:`appliance.engine.meters`);
            without it there are no level meters.
        tuner: the stage tuner; without it the tuner cannot be turned on.
    """

    fader: PluginType | None = None
    meter: PluginType | None = None
    tuner: PluginType | None = None


#: An engine that hosts nothing of the box's own (tests, benchmarks).
NO_OWN_PLUGINS = OwnPlugins()


@dataclass(frozen=True)
class SavedPlugin:
    """One plugin of a saved board, for :meth:`Engine.load_board`."""

    track_id: str
    plugin_id: str
    type: PluginType
    values: Mapping[str, float]
    bypass: bool = False
    files: Mapping[str, str] = field(default_factory=dict)  # file parameter URI → real path


class Engine(abc.ABC):
    """Hosts the plugins of every track as serial chains.

    Plugins are named by the box's stable plugin ids; the adapter maps them to
    whatever it uses inside. All methods run on the loop's thread.
    """

    name: str = "engine"

    def __init__(self, tracks: Sequence[TrackPorts], on_event: EventSink | None = None) -> None:
        self.tracks = {t.id: t for t in tracks}
        self.on_event: EventSink = on_event or (lambda event: None)
        #: The box's tempo in BPM, for plugins that follow their host's (kept across restarts).
        self.tempo = 120.0
        #: Whether the tempo goes on the backend's transport (:meth:`follow_tempo`).
        self.follows_tempo = False

    def set_tempo(self, bpm: float) -> None:
        """The box's tempo from the next cycle on (already checked: 20..300 BPM)."""
        self.tempo = bpm

    def follow_tempo(self) -> None:
        """From the next start on, put the tempo on the audio backend's transport, for plugins
        that follow their host's tempo (an engine without one only notes it)."""
        self.follows_tempo = True

    @abc.abstractmethod
    async def start(self) -> None:
        """Start or connect to the audio backend and wire every track dry.

        Raises:
            EngineError: the backend cannot be reached or started.
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop every plugin and release the backend. Safe to call twice."""

    @abc.abstractmethod
    async def add_plugin(
        self,
        track_id: str,
        plugin_id: str,
        plugin_type: PluginType,
        position: int,
        values: Mapping[str, float],
        bypass: bool = False,
    ) -> None:
        """Instantiate a plugin at ``position`` in the track's chain, with values.

        Raises:
            PluginLoadFailed: the plugin could not be instantiated; the chain
                is left as it was.
        """

    @abc.abstractmethod
    async def remove_plugin(self, plugin_id: str) -> None:
        """Take the plugin out of its chain and rewire the chain around it."""

    @abc.abstractmethod
    async def move_plugin(self, plugin_id: str, position: int) -> None:
        """Move a plugin to ``position`` in its own track's chain."""

    @abc.abstractmethod
    async def set_parameters(self, plugin_id: str, values: Mapping[str, float]) -> None:
        """Set control values (symbol → value, already clamped by the board)."""

    @abc.abstractmethod
    async def set_bypass(self, plugin_id: str, bypass: bool) -> None:
        """True bypass: the track hears the dry signal at that point, never silence."""

    #: True when :meth:`set_file` works (and :class:`SavedPlugin` files are loaded).
    sets_files = False

    async def set_file(self, plugin_id: str, uri: str, path: str) -> None:
        """Have the plugin load a file (its ``atom:Path`` parameter ``uri``), playing on meanwhile.

        Raises:
            UnknownPlugin: no such plugin.
            Unsupported: this engine cannot set a plugin's file.
        """
        raise Unsupported(f"the {self.name} engine cannot set a plugin's file")

    @abc.abstractmethod
    def info(self) -> EngineInfo:
        """Rate, buffer, DSP load, xruns and whether the engine runs. Never blocks."""

    async def load_board(self, plugins: Sequence[SavedPlugin]) -> dict[str, ApplianceError]:
        """Add a saved board's plugins, each at the end of its track, in order.

        A plugin that fails is left out and the others still load; adapters
        may load faster than one :meth:`add_plugin` after another.

        Returns:
            plugin id → why it could not be loaded.
        """
        failed: dict[str, ApplianceError] = {}
        for plugin in plugins:
            position = len(self.chain(plugin.track_id))
            try:
                await self.add_plugin(
                    plugin.track_id, plugin.plugin_id, plugin.type, position, plugin.values, plugin.bypass
                )
            except ApplianceError as exc:
                failed[plugin.plugin_id] = exc
        return failed

    @abc.abstractmethod
    async def switch_board(
        self, plugins: Sequence[SavedPlugin], spillover: float, commit: Callable[[], None]
    ) -> None:
        """Replace every track's chain with a saved board's, without a gap.

        The new plugins start while the old board plays on; once all have,
        the signal moves over and ``commit`` runs (in the same loop step, so
        the caller's board changes with the sound). With ``spillover`` above
        0 the old board's tails ring on for that many seconds.

        Raises:
            PluginLoadFailed: a plugin could not start (its ``plugin_id``
                says which); nothing changed and the old board plays on.
            EngineError: the engine is not running; nothing changed.
        """

    def chain(self, track_id: str) -> list[str]:
        """Plugin ids of a track in order, as the engine holds them."""
        raise NotImplementedError

    def prepare(self, boards: Sequence[Sequence[SavedPlugin]]) -> None:
        """Boards a :meth:`switch_board` may ask for next (the setlist's neighbours).

        An engine that can keeps them loaded and idle (no DSP), so that the
        switch is heard within a period and a fade; the plugin ids in them
        are placeholders. Never waits; the default does nothing.
        """
        return None

    # -- what the box hears: meters and the tuner ---------------------------------

    @property
    def is_tuning(self) -> bool:
        """True while the stage tuner is on (the outputs are silent)."""
        return False

    def request_readings(self) -> None:
        """Ask the hosts for fresh output-control readings; they arrive later. Never blocks."""
        return None

    def readings(self) -> dict[str, dict[str, float]]:
        """The latest output-control readings of the board's plugins, by plugin id and symbol."""
        return {}

    def levels(self) -> dict[str, dict[str, float]]:
        """Each track's peak level in dBFS, ``{"in": …, "out": …}``; empty without meters."""
        return {}

    async def set_tuner(self, on: bool) -> None:
        """Turn the stage tuner on (the outputs fall silent) or off (they sound again).

        Raises:
            HardwareError: this engine has no tuner.
        """
        raise HardwareError(f"the {self.name} engine has no tuner")

    def tuner(self) -> dict[str, object] | None:
        """What the tuner hears (note, octave, cents, frequency); None when off or no note."""
        return None


def find_plugin(plugins: Mapping[str, P], plugin_id: str) -> P:
    """``plugins[plugin_id]``, or :class:`UnknownPlugin` naming it. Adapters' lookups."""
    try:
        return plugins[plugin_id]
    except KeyError:
        raise UnknownPlugin(f"no plugin {plugin_id!r}", {"plugin_id": plugin_id}) from None


def find_chain(chains: Mapping[str, C], track_id: str) -> C:
    """``chains[track_id]``, or :class:`UnknownTrack` naming it. Adapters' lookups."""
    try:
        return chains[track_id]
    except KeyError:
        raise UnknownTrack(f"no track {track_id!r}", {"track_id": track_id}) from None
