"""One tempo for the box: typed, tapped or followed from MIDI clock, and heard in a synced delay.

The audio tests play an impulse through ``a-delay`` with *sync* on (a quarter
note: its repeat comes 60/BPM seconds after the note) under both engines, and
read the repeat's distance in the recording: what a guitarist hears as the
delay keeping time with the band.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jack  # type: ignore[import-untyped]
import pytest
import pytest_asyncio

from appliance.core.controls import PluginType
from appliance.core.errors import InvalidValue
from appliance.engine import Engine, SavedPlugin, TrackPorts
from appliance.engine.jack.server import JackServer
from appliance.engine.jack.tempo import checked_bpm
from appliance.frontends.tempo import CLOCKS_PER_BEAT, ClockFollower, TapTempo, TempoService
from appliance.plugins.catalog import Catalog
from tests.boxproc import scan_cache
from tests.engines import ENGINE_ADAPTERS, EngineFactory
from tests.fakes import ControlStack
from tests.rig import Rig, repeat_after

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
TRACK = "guitar"
DELAY = "urn:ardour:a-delay"
RATE = 48000
GX_DELAY = "http://guitarix.sourceforge.net/plugins/gx_digital_delay_#_digital_delay_"
#: Guitarix's delay synced to its host's tempo: a quarter note, plain, one repeat. NOTES 5 is the
#: quarter note (measured: 400 ms at 150 BPM); the bundle's labels are one off (it calls 5
#: "1/4notetriplets", and 4, which plays a dotted quarter, "1/4note").
GX_SYNCED = {
    "SYNC": 1.0, "NOTES": 5.0, "MODE": 0.0, "FEEDBACK": 1.0, "LEVEL": 100.0, "HIGHPASS": 20.0, "HOWPASS": 20000.0
}
#: The synced delay: a quarter note (div 4), only the first repeat (no feedback), as loud as the note.
SYNCED = {"sync": 1.0, "div": 4.0, "feedback": 0.0, "drywet": 50.0, "lpf": 20000.0, "time": 900.0}


def test_taps_give_the_tempo_of_their_intervals() -> None:
    """Two taps half a second apart are 120 BPM; more taps average; a long pause starts over."""
    taps = TapTempo()
    assert taps.tap(10.0) is None
    assert taps.tap(10.5) == 120.0
    assert taps.tap(11.1) == pytest.approx(60 / 0.55, abs=0.01)
    assert taps.tap(20.0) is None  # 8.9 s later: a new run
    assert taps.tap(20.4) == 150.0
    assert taps.tap(20.4) is None  # the same instant twice: starts over, never divides by zero


def test_a_beat_of_midi_clock_gives_its_tempo() -> None:
    """24 clocks a beat: 1,000 frames apart at 48 kHz is 120 BPM; a clock that paused starts over."""
    follower = ClockFollower()
    readings = [follower.clock(500 + 1000 * i, RATE) for i in range(CLOCKS_PER_BEAT + 1)]
    assert readings[:-1] == [None] * CLOCKS_PER_BEAT and readings[-1] == 120.0
    assert follower.clock(500 + 1000 * CLOCKS_PER_BEAT + 800, RATE) == pytest.approx(60 * RATE / 23800, abs=0.01)
    assert follower.clock(10 * RATE, RATE) is None  # seconds later: the controller stopped


@pytest.mark.parametrize("bad", [19.9, 300.5, "120", None, True, float("nan")])
def test_a_tempo_out_of_range_or_not_a_number_is_refused(bad: object) -> None:
    with pytest.raises(InvalidValue):
        checked_bpm(bad)
    assert checked_bpm(96.456) == 96.46


class Clock:
    """The tempo's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


async def test_each_pedalboard_brings_back_its_tempo_unless_a_clock_runs(tmp_path: Path) -> None:
    """Songs saved at 90 and 140 BPM: loading each sets its tempo and tells the phones; one saved
    before pedalboards kept a tempo leaves it alone; while a drum machine's clock runs, the clock
    keeps the tempo whatever loads. Broken, the next song's synced delay plays the last song's time."""
    stack = ControlStack(Catalog.load(ROOT / "config" / "plugins.yaml", scan=False), tmp_path, TRACK)
    clock = Clock()
    tempo = TempoService(stack.controller, clock)
    stack.library.attach(tempo)
    await stack.engine.start()
    await stack.library.start(None)
    tempo.start(None)
    await stack.add("gain")
    await stack.ask("TEMPO_SET", bpm=90)
    await stack.ask("PEDALBOARD_SAVE", name="slow")
    await stack.ask("TEMPO_SET", bpm=140)
    await stack.ask("PEDALBOARD_SAVE", name="fast")
    old = stack.store.read("fast")
    stack.store.write(dataclasses.replace(old, name="old", parts={}))  # as saved before this
    await stack.ask("PEDALBOARD_LOAD", name="slow")
    assert (tempo.bpm, tempo.source, stack.engine.tempo) == (90.0, "pedalboard", 90.0)
    assert ("TEMPO", {"bpm": 90.0, "source": "pedalboard"}) in stack.events
    await stack.ask("PEDALBOARD_LOAD", name="old")
    assert tempo.bpm == 90.0
    for i in range(CLOCKS_PER_BEAT + 1):  # 100 BPM of clock
        tempo.clock_tick(i * 1200)
    assert (tempo.bpm, tempo.source) == (100.0, "midi-clock")
    await stack.ask("PEDALBOARD_LOAD", name="fast")
    assert (tempo.bpm, tempo.source) == (100.0, "midi-clock"), "a pedalboard overruled the running clock"
    clock.now += 5.0  # the clock stopped
    await stack.ask("PEDALBOARD_LOAD", name="slow")
    assert (tempo.bpm, tempo.source) == (90.0, "pedalboard")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    """The box's catalog and every installed plugin (the suite's one LV2 scan)."""
    return Catalog.load(ROOT / "config" / "plugins.yaml", cache=scan_cache())


@pytest.fixture(scope="module")
def delay_type(catalog: Catalog) -> PluginType:
    found = catalog.lookup(DELAY)
    assert found is not None, f"{DELAY} is not installed (scripts/setup installs it)"
    return found


@pytest.fixture(params=list(ENGINE_ADAPTERS))
def engine_factory(request: pytest.FixtureRequest, jack_server: JackServer) -> EngineFactory:
    return ENGINE_ADAPTERS[str(request.param)](jack_server.name)


@contextlib.asynccontextmanager
async def _started(engine_factory: EngineFactory, rig: Rig, timebase_master: bool) -> AsyncIterator[Engine]:
    engine = engine_factory([TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], lambda event: None)
    if timebase_master:
        engine.follow_tempo()
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


@pytest_asyncio.fixture
async def engine(engine_factory: EngineFactory, rig: Rig) -> AsyncIterator[Engine]:
    """An engine whose tempo is on JACK's transport (``transport_master`` on)."""
    async with _started(engine_factory, rig, timebase_master=True) as engine:
        yield engine


async def test_a_synced_delay_keeps_the_box_tempo_as_it_changes(
    engine: Engine, rig: Rig, delay_type: PluginType
) -> None:
    """A delay synced to the host repeats a quarter note later: 500 ms at 120 BPM; the box's tempo
    set to 150 makes it 400 ms, and 90 makes it 666.7 ms, with the plugin left loaded. Broken, the
    player's delay runs at its own time and drifts against the band."""
    await engine.load_board([SavedPlugin(TRACK, "echo", delay_type, SYNCED)])
    engine.set_tempo(120.0)
    assert await repeat_after(rig, 120.0) == pytest.approx(500.0, abs=2.0)
    for bpm in (150.0, 90.0):
        engine.set_tempo(bpm)
        assert await repeat_after(rig, bpm) == pytest.approx(60000 / bpm, abs=2.0), f"at {bpm:g} BPM"


async def test_a_tempo_set_before_the_board_loads_is_the_one_it_plays(
    engine: Engine, rig: Rig, delay_type: PluginType
) -> None:
    """The box puts its saved tempo on the transport before it loads the board: the first note
    after a restart already repeats at it."""
    engine.set_tempo(100.0)
    await engine.load_board([SavedPlugin(TRACK, "echo", delay_type, SYNCED)])
    assert await repeat_after(rig, 100.0) == pytest.approx(600.0, abs=2.0)



@pytest_asyncio.fixture
async def untimed_engine(engine_factory: EngineFactory, rig: Rig) -> AsyncIterator[Engine]:
    """An engine with no timebase master on JACK (``transport_master`` off, the default)."""
    async with _started(engine_factory, rig, timebase_master=False) as engine:
        yield engine


@pytest.mark.parametrize("engine_factory", ["carla"], indirect=True)
async def test_carla_plays_the_box_tempo_to_a_synced_delay_with_no_timebase_master(
    untimed_engine: Engine, jack_server: JackServer, rig: Rig, delay_type: PluginType
) -> None:
    """Under Carla the box's tempo reaches a delay synced to its host by default: each rack's
    host puts it on Carla's own transport, so 150 BPM repeats at 400 ms with no timebase
    master on JACK (no client more woken each cycle). Broken, the delay keeps Carla's 120 BPM
    whatever the player taps."""
    untimed_engine.set_tempo(150.0)
    await untimed_engine.load_board([SavedPlugin(TRACK, "echo", delay_type, SYNCED)])
    assert await repeat_after(rig, 150.0) == pytest.approx(400.0, abs=2.0)
    untimed_engine.set_tempo(90.0)
    assert await repeat_after(rig, 90.0) == pytest.approx(60000 / 90.0, abs=2.0)
    assert "beats_per_minute" not in await asyncio.to_thread(_transport_position, jack_server.name)


async def test_a_delay_with_a_host_tempo_control_follows_the_box_tempo(
    untimed_engine: Engine, rig: Rig, catalog: Catalog
) -> None:
    """Guitarix's digital delay takes its host's tempo on a control (``HOSTBPM``, designated
    ``time:beatsPerMinute``), not from the transport: synced to a quarter note, it repeats at
    400 ms once the box's tempo is 150, and at 600 ms at 100, under both engines and with no
    timebase master. The control is the box's, not the player's: it is not a parameter."""
    delay = catalog.lookup(GX_DELAY)
    assert delay is not None, f"{GX_DELAY} is not installed (scripts/setup installs guitarix-lv2)"
    assert delay.tempo_symbol == "HOSTBPM" and "HOSTBPM" not in {p.id for p in delay.parameters}
    untimed_engine.set_tempo(150.0)
    await untimed_engine.load_board([SavedPlugin(TRACK, "echo", delay, GX_SYNCED)])
    assert await repeat_after(rig, 150.0) == pytest.approx(400.0, abs=2.0)
    untimed_engine.set_tempo(100.0)
    assert await repeat_after(rig, 100.0) == pytest.approx(600.0, abs=2.0)


def _transport_position(server: str) -> dict[str, Any]:
    """JACK's transport position as a client reads it (a tempo only if a timebase master gives one)."""
    client = jack.Client("tempo-probe", servername=server, no_start_server=True)
    try:
        return dict(client.transport_query()[1])
    finally:
        client.close()
