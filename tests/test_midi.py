"""MIDI controllers: mappings, learn, and a real JACK MIDI client driving the box.

What a player would notice if these broke: an expression pedal that does
nothing, moves the wrong control or the wrong way; a footswitch that toggles
twice (press and release); a program change that does not pick its
pedalboard; a learn that maps the wrong message or is forgotten at the next
start; a controller plugged in while playing that is not heard; a pedal
sweeping fast that stalls the box or makes the sound drop out; a stray
message that changes something nobody mapped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from appliance.core.errors import InvalidValue, UnknownMapping
from appliance.engine import TrackPorts
from appliance.engine.jack.server import JackServer
from appliance.frontends import midimap
from appliance.frontends.midi import MidiService, read_line
from appliance.frontends.midimap import MidiEvent
from appliance.frontends.tempo import CLOCKS_PER_BEAT, TempoService
from appliance.plugins.catalog import Catalog
from tests.boxproc import SERVER_PERIOD
from tests.engines import ENGINE_ADAPTERS
from tests.fakes import ControlStack
from tests.rig import MidiController, Rig, gaps, sine

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
TRACK = "track_001"
#: A JACK server no test starts: the service finds no MIDI there and the box plays on.
NO_SERVER = "midi-test-no-such-server"
PROBE = sine(1000.0, 4800, 48000, -12.0)
#: How long the last of a flood of messages may take to reach the box once it is sent, seconds.
LAST_VALUE_TIMEOUT = 5.0


def cc(number: int, value: int, channel: int = 1) -> MidiEvent:
    return MidiEvent("cc", channel, number, value)


def pc(program: int, channel: int = 1) -> MidiEvent:
    return MidiEvent("pc", channel, program, 127)


# -- the map, pure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"message": "cc", "number": 7}, "action"),
        ({"message": "cc", "number": 7, "action": "parameter", "plugin_id": "plugin_1"}, "parameter_id"),
        ({"message": "cc", "number": 200, "action": "tuner"}, "number"),
        ({"message": "cc", "action": "tuner"}, "number"),
        ({"message": "cc", "number": 7, "channel": 17, "action": "tuner"}, "channel"),
        ({"message": "sysex", "number": 7, "action": "tuner"}, "message"),
        ({"message": "cc", "number": 7, "action": "mixer", "control": "out", "curve": "wobbly"}, "curve"),
        ({"message": "cc", "number": 7, "action": "mixer", "control": "out", "minimum": True}, "minimum"),
        ({"message": "cc", "number": 7, "action": "setlist_go"}, "position"),
        ({"message": "cc", "number": 7, "action": "launch_rockets"}, "action"),
    ],
)
def test_a_mapping_that_cannot_work_is_refused_naming_its_field(mapping: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidValue) as refused:
        midimap.from_dict(mapping)
    assert refused.value.details == {"field": field}


def test_a_pedal_moves_a_control_across_its_range_by_its_curve_and_can_turn_round() -> None:
    """Heel to toe is the mapped range; a minimum above the maximum is an inverted pedal; an
    exp curve is a volume pedal's (slow at the heel)."""
    straight = midimap.from_dict({"message": "cc", "number": 7, "action": "mixer", "control": "out"})
    assert straight.scaled(0, -90.0, 24.0) == -90.0 and straight.scaled(127, -90.0, 24.0) == 24.0
    ranged = midimap.from_dict(
        {"message": "cc", "number": 7, "action": "mixer", "control": "out", "minimum": -20, "maximum": 0}
    )
    assert ranged.scaled(0, -90, 24) == -20.0 and ranged.scaled(127, -90, 24) == 0.0
    inverted = midimap.from_dict(
        {"message": "cc", "number": 7, "action": "mixer", "control": "out", "minimum": 10, "maximum": 0}
    )
    assert inverted.scaled(0, 0, 1) == 10.0 and inverted.scaled(127, 0, 1) == 0.0
    volume = midimap.from_dict(
        {"message": "cc", "number": 7, "action": "mixer", "control": "out", "curve": "exp"}
    )
    assert volume.scaled(64, 0.0, 100.0) == pytest.approx(100 * (64 / 127) ** 2)
    assert volume.scaled(64, 0.0, 100.0) < straight.scaled(64, 0.0, 100.0)


def test_what_a_controller_sends_is_an_event_or_is_ignored() -> None:
    assert midimap.parse(bytes([0xB2, 7, 100])) == MidiEvent("cc", 3, 7, 100)
    assert midimap.parse(bytes([0xC0, 5])) == MidiEvent("pc", 1, 5, 127)
    assert midimap.parse(bytes([0x90, 60, 0])) == MidiEvent("note", 1, 60, 0)
    assert midimap.parse(bytes([0x80, 60, 64])) == MidiEvent("note", 1, 60, 0)
    for junk in ([0xB0, 200, 1], [0xF8], [0xF0, 1, 2, 0xF7], [0xB0], [], [0x07, 0x40]):
        assert midimap.parse(bytes(junk)) is None, junk
    # jack_midi_dump's lines: the frame, the bytes, its own description
    line = "  47104: b0 07 64 control change (channel  0): controller   7, value 100"
    assert read_line(line) == (47104, bytes([0xB0, 7, 100]))
    assert read_line("  47104: c1 05") == (47104, bytes([0xC1, 5]))
    assert read_line("Cannot connect to server socket err = No such file or directory") is None


# -- the service on the control stack ---------------------------------------------------


class Stack(ControlStack):
    def __init__(self, catalog: Catalog, data: Path) -> None:
        super().__init__(catalog, data, TRACK)
        self.midi = MidiService(self.controller, data / "midi.json", NO_SERVER)
        self.midi.board_kept = self.library.attach(self.midi)
        #: Who each published event came from, as phones are told (``user_id``).
        self.origins: list[tuple[str, str | None]] = []
        self.controller.publishers.append(
            lambda events, reply_to, origin: self.origins.extend(
                (k, (origin or {}).get("user_id")) for k, _ in events
            )
        )

    def state(self) -> dict[str, Any]:
        return [data for kind, data in self.events if kind == "MIDI_STATE"][-1]

    async def map(self, **mapping: Any) -> str:
        await self.ask("MIDI_MAP_SET", mapping=mapping)
        return str(self.state()["mappings"][-1]["id"])

    async def play(self, *events: MidiEvent) -> None:
        for event in events:
            self.midi.handle(event)
        await self.midi.settled()

    def gain(self, plugin_id: str) -> float:
        return float(self.board.plugin(TRACK, plugin_id).values["gain"])


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)


@pytest_asyncio.fixture
async def stack(catalog: Catalog, tmp_path: Path) -> AsyncIterator[Stack]:
    stack = Stack(catalog, tmp_path)
    await stack.engine.start()
    await stack.library.start(None)
    await stack.midi.start()
    try:
        yield stack
    finally:
        await stack.midi.stop()


async def test_a_box_whose_jack_server_has_no_midi_plays_on_and_says_so(stack: Stack) -> None:
    state = (await stack.ask("MIDI_GET"))[0][1]
    assert state == {"present": False, "inputs": [], "mappings": [], "learning": None}


async def test_a_cc_drives_its_control_across_the_mapped_range_and_phones_see_it(stack: Stack) -> None:
    amp = await stack.add("gain", gain=0.0)
    await stack.map(
        message="cc", number=7, action="parameter", plugin_id=amp, parameter_id="gain", minimum=-20, maximum=0
    )
    await stack.play(cc(7, 0))
    assert stack.gain(amp) == -20.0
    await stack.play(cc(7, 127))
    assert stack.gain(amp) == 0.0
    told = [d for kind, d in stack.events if kind == "PLUGIN_PARAMETER"]
    assert told[-1]["parameter_value"] == 0.0
    assert [who for kind, who in stack.origins if kind == "PLUGIN_PARAMETER"][-1] == "midi"


async def test_nothing_a_controller_sends_changes_what_it_is_not_mapped_to(stack: Stack) -> None:
    """Another controller number, another channel, a program change, a note, junk: nothing moves."""
    amp = await stack.add("gain", gain=-3.0)
    await stack.map(message="cc", number=7, channel=2, action="parameter", plugin_id=amp, parameter_id="gain")
    before = (stack.board.to_dict(), len(stack.events))
    await stack.play(cc(8, 0, channel=2), cc(7, 0, channel=1), pc(7, channel=2), MidiEvent("note", 2, 7, 100))
    assert (stack.board.to_dict(), len(stack.events)) == before
    await stack.play(cc(7, 0, channel=2))
    assert stack.gain(amp) == -90.0  # the mapped one still works


async def test_a_pedal_flood_sets_the_latest_value_without_a_backlog(stack: Stack) -> None:
    """1,000 values at once (an expression pedal at 1 kHz): the control ends at the last, and
    the box carried out far fewer changes than it was sent (coalesced, as a phone's are)."""
    amp = await stack.add("gain", gain=0.0)
    await stack.map(message="cc", number=11, action="parameter", plugin_id=amp, parameter_id="gain")
    sent = [cc(11, v % 128) for v in range(1000)] + [cc(11, 64)]
    await stack.play(*sent)
    assert stack.gain(amp) == pytest.approx(
        midimap.from_dict({"message": "cc", "number": 11, "action": "mixer", "control": "x"}).scaled(
            64, -90.0, 24.0
        )
    )
    changes = [d for kind, d in stack.events if kind == "PLUGIN_PARAMETER"]
    assert 1 <= len(changes) < 10, len(changes)


async def test_taps_read_all_at_once_keep_the_tempo_they_were_tapped_at(stack: Stack) -> None:
    """Three presses of a tap footswitch 0.4 s apart by their frames, which a busy box reads in
    one burst: the tempo is 150 BPM, timed by the frames, and the phones are told; its
    releases do nothing. Broken (timed when read), it reads 300 BPM, the ceiling."""
    tempo = TempoService(stack.controller, asyncio.get_running_loop().time)
    tempo.start(None)
    stack.midi.on_tap = tempo.midi_tap
    await stack.map(message="cc", number=64, action="tap_tempo")
    for frame in (96000, 115200, 134400):  # 2.0, 2.4 and 2.8 s into the monitor's clock
        stack.midi.handle(MidiEvent("cc", 1, 64, 127), frame)
        stack.midi.handle(MidiEvent("cc", 1, 64, 0), frame + 4800)
    await stack.midi.settled()
    assert (tempo.bpm, tempo.source) == (150.0, "tap")
    assert ("TEMPO", {"bpm": 150.0, "source": "tap"}) in stack.events


async def test_a_footswitch_toggles_bypass_on_its_press_only_or_follows_it_when_momentary(
    stack: Stack,
) -> None:
    amp = await stack.add("gain", gain=0.0)
    drive = await stack.add("gain", gain=0.0)
    await stack.map(message="cc", number=80, action="bypass", plugin_id=amp)
    await stack.map(message="cc", number=81, action="bypass", plugin_id=drive, momentary=True)
    bypassed = lambda plugin_id: stack.board.plugin(TRACK, plugin_id).bypass  # noqa: E731
    await stack.play(cc(80, 127), cc(80, 0))  # press, release
    assert bypassed(amp)
    await stack.play(cc(80, 127), cc(80, 0))
    assert not bypassed(amp)
    await stack.play(cc(81, 127))  # held: on
    assert not bypassed(drive)
    await stack.play(cc(81, 0))  # let go: off
    assert bypassed(drive)


async def test_a_program_change_picks_its_pedalboard_and_any_program_picks_the_setlist_entry(
    stack: Stack,
) -> None:
    await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="Verse")
    await stack.set(stack.board.tracks[TRACK].chain[0].id, "gain", -12.0)
    await stack.ask("PEDALBOARD_SAVE", name="Chorus")
    await stack.map(message="pc", number=3, action="pedalboard", name="Verse")
    await stack.play(pc(3))
    assert stack.library.state()["pedalboard"] == "Verse"
    await stack.ask("SETLIST_SET", entries=[{"pedalboard": "Verse"}, {"pedalboard": "Chorus"}])
    await stack.map(message="pc", number=None, channel=16, action="setlist_go")
    await stack.play(pc(1, channel=16))
    assert stack.library.state()["pedalboard"] == "Chorus"
    await stack.play(pc(0, channel=16))
    assert stack.library.state()["pedalboard"] == "Verse"


async def test_a_pedalboard_keeps_its_knobs_mappings_and_the_box_keeps_its_own(stack: Stack) -> None:
    """The same pedal drives the amp of Verse and the other amp of Chorus; loading each
    pedalboard brings its mappings, the setlist's program change stays throughout, and a
    pedalboard saved before the box had MIDI leaves only the box's own."""
    setlist = await stack.map(message="pc", number=None, channel=16, action="setlist_go")
    verse_amp = await stack.add("gain", gain=0.0)
    await stack.map(message="cc", number=7, action="parameter", plugin_id=verse_amp, parameter_id="gain")
    await stack.ask("PEDALBOARD_SAVE", name="Verse")
    await stack.ask("PLUGIN_REMOVE", track_id=TRACK, plugin_id=verse_amp)
    chorus_amp = await stack.add("gain", gain=0.0)
    await stack.map(message="cc", number=7, action="parameter", plugin_id=chorus_amp, parameter_id="gain")
    await stack.ask("PEDALBOARD_SAVE", name="Chorus")

    def mapped() -> set[tuple[str, Any, Any]]:
        return {(m.message, m.number, m.plugin_id) for m in stack.midi.mappings.values()}

    def amp() -> str:  # a loaded board's plugins play under new ids (the old board plays on beside)
        return stack.board.tracks[TRACK].chain[0].id

    await stack.ask("PEDALBOARD_LOAD", name="Verse")
    assert mapped() == {("pc", None, None), ("cc", 7, amp())}
    assert setlist in stack.midi.mappings and stack.state()["mappings"] == [
        m.to_dict() for m in stack.midi.mappings.values()
    ], "phones are told"
    await stack.play(cc(7, 0))
    assert stack.gain(amp()) == -90.0
    await stack.ask("PEDALBOARD_LOAD", name="Chorus")
    assert mapped() == {("pc", None, None), ("cc", 7, amp())}
    await stack.play(cc(7, 127))
    assert stack.gain(amp()) == 24.0
    old = dataclasses.replace(stack.store.read("Chorus"), name="Old", parts={})  # saved before MIDI
    await asyncio.to_thread(stack.store.write, old)
    await stack.ask("PEDALBOARD_LOAD", name="Old")
    assert mapped() == {("pc", None, None)}


async def test_a_mapping_learned_while_a_pedalboard_plays_is_kept_with_it(stack: Stack) -> None:
    """Learn on Verse, switch to Chorus and back without saving: the pedal still drives
    Verse's amp (kept at once, as a snapshot is); forgotten on Verse, it stays forgotten."""
    await stack.add("gain", gain=0.0)
    await stack.ask("PEDALBOARD_SAVE", name="Verse")
    await stack.ask("PEDALBOARD_SAVE", name="Chorus")
    await stack.ask("PEDALBOARD_LOAD", name="Verse")
    amp = stack.board.tracks[TRACK].chain[0].id
    await stack.ask("MIDI_LEARN", mapping={"action": "parameter", "plugin_id": amp, "parameter_id": "gain"})
    await stack.play(cc(9, 127))
    await stack.ask("PEDALBOARD_LOAD", name="Chorus")
    assert stack.midi.mappings == {}
    await stack.ask("PEDALBOARD_LOAD", name="Verse")
    await stack.play(cc(9, 0))
    assert stack.gain(stack.board.tracks[TRACK].chain[0].id) == -90.0
    (mapping_id,) = stack.midi.mappings
    await stack.ask("MIDI_MAP_DELETE", id=mapping_id)
    await stack.ask("PEDALBOARD_LOAD", name="Chorus")
    await stack.ask("PEDALBOARD_LOAD", name="Verse")
    assert stack.midi.mappings == {}


async def test_learn_maps_the_next_message_keeps_it_and_every_phone_sees_it(
    stack: Stack, catalog: Catalog, tmp_path: Path
) -> None:
    """A learn takes the next message (a release after a press is not the next), on its own
    channel; the mapping is in midi.json before any phone is told, and a new start has it."""
    amp = await stack.add("gain", gain=0.0)
    await stack.ask("MIDI_LEARN", mapping={"action": "parameter", "plugin_id": amp, "parameter_id": "gain"})
    assert stack.state()["learning"] == {
        "channel": None,
        "action": "parameter",
        "plugin_id": amp,
        "parameter_id": "gain",
        "curve": "linear",
    }
    await stack.play(cc(21, 127, channel=5))
    assert stack.gain(amp) == 0.0, "the learning message must not also drive the control"
    learned = [d for kind, d in stack.events if kind == "MIDI_LEARNED"]
    assert learned and learned[-1]["mapping"]["number"] == 21 and learned[-1]["mapping"]["channel"] == 5
    assert stack.state()["learning"] is None
    await stack.play(cc(21, 0, channel=5))
    assert stack.gain(amp) == -90.0
    kept = json.loads((tmp_path / "midi.json").read_text())["mappings"]
    assert [(m["message"], m["number"], m["channel"]) for m in kept] == [("cc", 21, 5)]
    again = Stack(catalog, tmp_path)
    await again.midi.start()
    try:
        assert list(again.midi.mappings.values()) == list(stack.midi.mappings.values())
    finally:
        await again.midi.stop()


async def test_a_bad_mapping_or_delete_changes_nothing(stack: Stack, tmp_path: Path) -> None:
    amp = await stack.add("gain", gain=0.0)
    mapping_id = await stack.map(
        message="cc", number=7, action="parameter", plugin_id=amp, parameter_id="gain"
    )
    saved = (tmp_path / "midi.json").read_text()
    with pytest.raises(InvalidValue):
        await stack.ask(
            "MIDI_MAP_SET", mapping={"id": mapping_id, "message": "cc", "number": 7, "action": "x"}
        )
    with pytest.raises(UnknownMapping):
        await stack.ask("MIDI_MAP_DELETE", id="midi_404")
    assert (tmp_path / "midi.json").read_text() == saved and list(stack.midi.mappings) == [mapping_id]
    await stack.ask("MIDI_MAP_DELETE", id=mapping_id)
    assert stack.state()["mappings"] == []
    await stack.play(cc(7, 0))
    assert stack.gain(amp) == 0.0


# -- a real controller on the box's JACK server --------------------------------------------


async def _plugged_in(controller: MidiController, midi: MidiService) -> None:
    """Open the controller (hot-plugged) and wait until the box listens to it."""
    await controller.open()
    for _ in range(100):
        if controller.port in midi.inputs:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the box never listened to {controller.port}: {midi.inputs}")


async def test_a_controller_plugged_in_while_playing_moves_the_gain_heard_and_a_flood_stays_clean(
    catalog: Catalog, tmp_path: Path, jack_server: JackServer, rig: Rig
) -> None:
    """On the jalv engine and the rig: the box listens before the controller exists; the
    controller appears (hot-plugged), its CC 7 sets the amp to −20 dB and then 0 dB, as heard;
    a 20-messages-a-period sweep of it plays on without a gap or an xrun."""
    engine = ENGINE_ADAPTERS["jalv"](jack_server.name)(
        [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], print
    )
    await engine.start()
    stack = ControlStack(catalog, tmp_path, TRACK, engine)
    midi = MidiService(
        stack.controller, tmp_path / "midi.json", jack_server.name, str(getattr(engine, "prefix", ""))
    )
    controller = MidiController(jack_server.name)
    await midi.start()
    try:
        assert midi.patch is not None and midi.inputs == [] and midi.monitor is None  # none yet: no client
        amp = await stack.add("gain", gain=-6.0)
        await stack.ask(
            "MIDI_MAP_SET",
            mapping={
                "message": "cc",
                "number": 7,
                "action": "parameter",
                "plugin_id": amp,
                "parameter_id": "gain",
                "minimum": -20,
                "maximum": 0,
            },
        )
        await _plugged_in(controller, midi)
        await controller.cc(7, 0)
        assert await rig.gain_until(lambda g: abs(g + 20.0) <= 0.1, PROBE) == pytest.approx(-20.0, abs=0.1)
        await controller.cc(7, 127)
        assert await rig.gain_until(lambda g: abs(g) <= 0.1, PROBE) == pytest.approx(0.0, abs=0.1)
        sweep = [bytes([0xB0, 7, 64 + (i % 64)]) for i in range(2000)]
        _, recorded, _ = await rig.record_during(
            sine(1000.0, 48000 * 2, 48000, -12.0), lambda: controller.send(*sweep, per_cycle=20)
        )
        rig.require_clean("the sweep")
        assert gaps(recorded[:, 0]) == [], "the sound dropped out while a pedal swept"
        # The last messages may still be on their way from JACK (jack_midi_dump's pipe) when the
        # sweep's take ends: the box must come to the last value, whatever came before.
        last = -20 + 20 * sweep[-1][2] / 127
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LAST_VALUE_TIMEOUT):
                while stack.board.plugin(TRACK, amp).values["gain"] != pytest.approx(last):
                    await midi.settled()
                    await asyncio.sleep(0.02)
        assert stack.board.plugin(TRACK, amp).values["gain"] == pytest.approx(last)
        # a 4 KB SysEx (a patch dump), bytes no parser takes: heard, ignored, and the pedal still
        # works (a 16 KB one was dropped by jack_midi_dump before the box: docs/protocol.md §18)
        junk = [bytes([0xF0, *([0x11] * 4000), 0xF7]), bytes([0xB0, 0x80, 0x01]), bytes([0xF7]), bytes([0xFE])]
        await controller.send(*junk, bytes([0xB0, 7, 127]))
        assert await rig.gain_until(lambda g: abs(g) <= 0.1, PROBE) == pytest.approx(0.0, abs=0.1)
        for _ in range(100):
            if midi.ignored >= len(junk):
                break
            await asyncio.sleep(0.02)
        assert midi.ignored == len(junk), "the junk never reached the box: the test would prove nothing"
        assert await rig.gain_until(lambda g: abs(g) <= 0.1, PROBE) == pytest.approx(0.0, abs=0.1)
    finally:
        await controller.close()
        await midi.stop()
        await engine.stop()


async def test_the_box_follows_a_controllers_midi_clock_and_a_tap_footswitch(
    catalog: Catalog, tmp_path: Path, jack_server: JackServer
) -> None:
    """A drum machine's clock, one a period (1,024 frames at 48 kHz, the suite's period: 117.2 BPM), sets the box's
    tempo, told to every phone as ``midi-clock``; a MIDI footswitch mapped to ``tap_tempo`` then
    taps a new one. Broken, a delay synced to the box drifts against the drummer."""
    stack = ControlStack(catalog, tmp_path, TRACK)
    tempo = TempoService(stack.controller, asyncio.get_running_loop().time)
    tempo.start(None)
    midi = MidiService(stack.controller, tmp_path / "midi.json", jack_server.name)
    midi.on_clock = tempo.clock_tick
    midi.on_tap = tempo.midi_tap
    controller = MidiController(jack_server.name)
    await midi.start()
    try:
        await _plugged_in(controller, midi)
        await controller.send(*[bytes([0xF8])] * (CLOCKS_PER_BEAT * 2), per_cycle=1)
        for _ in range(100):
            if tempo.source == "midi-clock":
                break
            await asyncio.sleep(0.02)
        assert (tempo.bpm, tempo.source) == (round(60 * 48000 / (CLOCKS_PER_BEAT * SERVER_PERIOD), 1), "midi-clock")
        assert stack.engine.tempo == tempo.bpm
        assert ("TEMPO", {"bpm": tempo.bpm, "source": "midi-clock"}) in stack.events

        await stack.ask("MIDI_MAP_SET", mapping={"message": "cc", "number": 64, "action": "tap_tempo"})
        pressed = []
        for _ in range(3):  # three presses (and releases) about 400 ms apart: about 150 BPM
            pressed.append(asyncio.get_running_loop().time())
            await controller.cc(64, 127)
            await controller.cc(64, 0)
            await asyncio.sleep(0.4)
        await midi.settled()
        tapped = 60.0 * 2 / (pressed[-1] - pressed[0])
        assert tempo.source == "tap" and tempo.bpm == pytest.approx(tapped, rel=0.05), (tempo.bpm, tapped)
    finally:
        await controller.close()
        await midi.stop()
