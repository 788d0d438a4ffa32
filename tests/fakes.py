"""In-memory stand-ins for tests of *other* parts (never what an engine is verified against),
and hand-written descriptions of two real plugins (eg-amp, the TS9) for tests that need no scan."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.control.controller import Controller, Event
from appliance.control.library import Library
from appliance.core.board import Board
from appliance.core.controls import Alias, Control, PluginType
from appliance.core.errors import EngineError, PluginLoadFailed, PluginNotAllowed
from appliance.core.protocol import Request
from appliance.engine import Engine, EngineInfo, TrackPorts
from appliance.frontends.mixer import MixerService
from appliance.frontends.readings import Tuner
from appliance.plugins.catalog import Catalog
from appliance.store.pedalboards import PedalboardStore


class FakeEngine(Engine):
    """Keeps chains and values in dicts; can be told to fail."""

    name = "fake"

    def __init__(self, tracks, on_event=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(tracks, on_event)
        self.chains: dict[str, list[str]] = {t: [] for t in self.tracks}
        self.values: dict[str, dict[str, float]] = {}
        self.bypassed: dict[str, bool] = {}
        self.running = False
        self.sample_rate = 48000
        self.fail_next_add = False
        self.down = False
        #: While set and not released, add_plugin waits: a plugin that takes its time to start.
        self.add_gate: asyncio.Event | None = None
        self.starting: set[str] = set()
        #: A board switch fails on the plugin with this id.
        self.fail_on_switch: str | None = None
        self.switches: list[float] = []
        self.dsp_load = 0.0
        self.tuning = False

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False

    def _check(self) -> None:
        if self.down:
            raise EngineError("engine is down")

    async def add_plugin(self, track_id, plugin_id, plugin_type, position, values, bypass=False):  # type: ignore[no-untyped-def]
        self._check()
        if self.fail_next_add:
            self.fail_next_add = False
            raise PluginLoadFailed(f"{plugin_type.uri} failed to load")
        self.values[plugin_id] = dict(values)
        self.bypassed[plugin_id] = bypass
        if self.add_gate is not None:
            self.starting.add(plugin_id)
            try:
                await self.add_gate.wait()
            finally:
                self.starting.discard(plugin_id)
        self.chains[track_id].insert(position, plugin_id)

    def _track_of(self, plugin_id: str) -> str:
        return next(t for t, chain in self.chains.items() if plugin_id in chain)

    async def remove_plugin(self, plugin_id: str) -> None:
        self._check()
        self.chains[self._track_of(plugin_id)].remove(plugin_id)

    async def move_plugin(self, plugin_id: str, position: int) -> None:
        chain = self.chains[self._track_of(plugin_id)]
        chain.remove(plugin_id)
        chain.insert(position, plugin_id)

    async def set_parameters(self, plugin_id: str, values: Mapping[str, float]) -> None:
        self._check()
        self.values[plugin_id].update(values)

    async def set_bypass(self, plugin_id: str, bypass: bool) -> None:
        self._check()
        self.bypassed[plugin_id] = bypass

    async def switch_board(self, plugins, spillover, commit):  # type: ignore[no-untyped-def]
        self._check()
        self.switches.append(spillover)
        for plugin in plugins:
            if plugin.plugin_id == self.fail_on_switch:
                error = PluginLoadFailed(f"{plugin.type.uri} failed to load")
                error.plugin_id = plugin.plugin_id
                raise error
        if self.add_gate is not None:
            await self.add_gate.wait()
        self.chains = {t: [] for t in self.tracks}
        for plugin in plugins:
            self.chains[plugin.track_id].append(plugin.plugin_id)
            self.values[plugin.plugin_id] = dict(plugin.values)
            self.bypassed[plugin.plugin_id] = plugin.bypass
        commit()

    def info(self) -> EngineInfo:
        return EngineInfo("fake", self.running and not self.down, self.sample_rate, 128, self.dsp_load)

    @property
    def is_tuning(self) -> bool:
        return self.tuning

    async def set_tuner(self, on: bool) -> None:
        self._check()
        self.tuning = on

    def chain(self, track_id: str) -> list[str]:
        return list(self.chains[track_id])


AMP = PluginType(
    key="gain",
    uri="http://lv2plug.in/plugins/eg-amp",
    name="Simple Amplifier",
    controls=(Control("gain", "Gain", -90.0, 24.0, 0.0, "dB"),),
    audio_inputs=("in",),
    audio_outputs=("out",),
)

TS9 = PluginType(
    key="overdrive",
    uri="http://guitarix.sourceforge.net/plugins/gxts9#ts9sim",
    name="GxTubeScreamer",
    controls=(
        Control("fslider0_", "Level", -20.0, 4.0, -16.0, "dB"),
        Control("fslider1_", "Tone", 100.0, 1000.0, 400.0, "Hz"),
        Control("fslider2_", "Drive", 0.0, 1.0, 0.5),
        Control("BYPASS", "BYPASS", 0.0, 1.0, 1.0, kind="toggle"),
    ),
    audio_inputs=("in",),
    audio_outputs=("out",),
    enable_symbol="BYPASS",
)

COMP = PluginType(
    key="compressor",
    uri="urn:test:comp",
    name="Compressor",
    controls=(
        Control("att", "Attack", 0.1, 100.0, 10.0, "ms"),
        Control("thr", "Threshold", -60.0, 0.0, -20.0, "dB"),
        Control("rat", "Ratio", 1.0, 20.0, 4.0),
        Control("steps", "Steps", 0.0, 8.0, 2.0, kind="integer"),
        Control("mode", "Mode", 0.0, 2.0, 0.0, kind="enum", labels=((0.0, "A"), (1.0, "B"), (2.0, "C"))),
        Control("on", "Sidechain", 0.0, 1.0, 0.0, kind="toggle"),
        Control("enable", "Enable", 0.0, 1.0, 1.0, kind="toggle"),
    ),
    audio_inputs=("in",),
    audio_outputs=("out",),
    aliases=(Alias("attack", "att", 1000.0, 0.0, "s"), Alias("threshold", "thr")),
    enable_symbol="enable",
)


class FakeCatalog:
    """Two plugin types, resolved by key or path stem like the real catalog."""

    def __init__(self) -> None:
        self.entries = {"gain": AMP, "compressor": COMP}

    def lookup(self, key: str) -> PluginType | None:
        return self.entries.get(key.lower()) or next((t for t in self.entries.values() if t.uri == key), None)

    def resolve(self, name: object, plugin_path: object) -> PluginType:
        for candidate in (name, plugin_path):
            if isinstance(candidate, str):
                stem = candidate.rsplit("/", 1)[-1].split(".", 1)[0]
                found = self.lookup(candidate) or self.lookup(stem)
                if found:
                    return found
        raise PluginNotAllowed(f"{name!r} is not in the catalog")

    def describe(self) -> list[dict[str, object]]:
        return [t.describe() for t in self.entries.values()]

    def installed(self) -> list[dict[str, object]]:
        return []


class ControlStack:
    """The box's control stack without a server: board, controller and library on a data folder.

    Requests go to :meth:`Controller.execute` as any frontend's do; every
    published event is kept in :attr:`events`, every change counted in :attr:`saves`.
    """

    def __init__(
        self,
        catalog: Catalog,
        data_dir: Path,
        track: str,
        engine: Engine | None = None,
        spillover: float = 0.0,
    ) -> None:
        self.track = track
        self.engine = engine or FakeEngine([TrackPorts(track, ("in",), ("out",))])
        self.board = Board([track])
        self.controller = Controller(self.board, catalog, self.engine, self._changed)
        self.store = PedalboardStore(data_dir)
        self.library = Library(self.controller, self.store, spillover)
        self.tuner = Tuner(self.controller)
        self.mixer = MixerService(self.controller, None)  # as on a machine without a sound card
        self.events: list[Event] = []
        self.controller.publishers.append(lambda events, reply_to, origin: self.events.extend(events))
        self.saves = 0

    def _changed(self) -> None:
        self.saves += 1
        self.library.board_changed()

    async def ask(self, kind: str, **data: Any) -> list[Event]:
        """Carry out a request; what it replied and broadcast."""
        outcome = await self.controller.execute(Request(kind, data))
        return outcome.reply + outcome.broadcast

    async def add(self, name: str, **values: float) -> str:
        """Add a plugin by catalog key at the end of the track, set ``values``; its id."""
        events = await self.ask("PLUGIN_ADD", track_id=self.track, name=name)
        plugin_id = str(events[0][1]["plugin_id"])
        for parameter, value in values.items():
            await self.set(plugin_id, parameter, value)
        return plugin_id

    async def set(self, plugin_id: str, parameter: str, value: float) -> None:
        await self.ask(
            "PLUGIN_PARAMETER",
            track_id=self.track,
            plugin_id=plugin_id,
            parameter_id=parameter,
            parameter_value=value,
        )
