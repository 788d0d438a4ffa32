"""Encoders and footswitches on gpiozero's own mock pins, driving the box's control stack.

What a player would notice if these broke: a knob that does nothing, goes
the wrong way or jumps; a footswitch that double-fires on contact bounce,
does the short action on a long press, or waits; a phone that does not see
the change; a box that does not start because of a typo in the map, or
starts with a pin used twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from websockets.asyncio.client import connect

from appliance.app import pin_factory
from appliance.config import ServerConfig
from appliance.core.errors import ConfigError
from appliance.engine import Engine, OwnPlugins, TrackPorts
from appliance.engine.jack.server import JackServer
from appliance.frontends import gpio, gpiomap
from appliance.frontends.net import ControlServer
from appliance.frontends.readings import MeterFeed
from appliance.frontends.tempo import TempoService
from appliance.plugins.catalog import Catalog
from tests.boxproc import SERVER_PERIOD
from tests.engines import ENGINE_ADAPTERS
from tests.fakes import ControlStack
from tests.rig import Rig, fade_heard_frames, rms_db, sine

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
TRACK = "track_001"
A, B, PUSH, SWITCH, HOLD_SWITCH, NEXT, TUNE, TAP = 17, 27, 22, 23, 24, 25, 5, 6
HOLD = 0.15
#: The tuner footswitch silences the box within this many frames of the press, on the
#: recording's clock (the fade's steps, a period apart at least, then two periods; the tuner takes hundreds of ms
#: to start, and the box is silent before it does).
TUNER_SILENT_WITHIN = fade_heard_frames(48000, SERVER_PERIOD) + 2400
#: How long a test waits for what the loop does within a few turns before failing (a guard
#: against waiting for good, never a speed claim).
GUARD = 5.0


MAP = {
    "hold_time": HOLD,
    "bounce_time": 0.02,
    "encoders": [
        {
            "name": "knob",
            "pins": [A, B],
            "push": PUSH,
            "steps": 90,
            "controls": [
                {"track": TRACK, "position": 0, "parameter": "gain"},
                {"track": TRACK, "position": 1, "parameter": "drive"},
            ],
        }
    ],
    "footswitches": [
        {"name": "fs1", "pin": SWITCH, "press": {"action": "bypass", "track": TRACK, "position": 0}},
        {
            "name": "fs2",
            "pin": HOLD_SWITCH,
            "press": {"action": "bypass", "track": TRACK, "position": 1},
            "hold": {"action": "snapshot", "name": "solo"},
        },
        {"name": "fs3", "pin": NEXT, "press": {"action": "setlist_next"}},
        {"name": "fs4", "pin": TUNE, "press": {"action": "tuner"}},
        {"name": "fs5", "pin": TAP, "press": {"action": "tap_tempo"}},
    ],
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.reset()
    Device.pin_factory = None


class Clock:
    """The clock the hardware reads: moved by the test, so that speeds are exact."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Stack(ControlStack):
    """The control stack on the in-memory engine, and the hardware on mock pins."""

    def __init__(
        self, catalog: Catalog, factory: MockFactory, data: Path, engine: Engine | None = None
    ) -> None:
        super().__init__(catalog, data, TRACK, engine)
        self.clock = Clock()
        self.hardware = gpio.Hardware(gpiomap.parse(MAP), self.controller, factory, self.clock)
        self.tempo = TempoService(self.controller, self.clock)  # taps timed on the test's clock
        self.factory = factory

    def value(self, position: int, parameter: str) -> float:
        return self.controller.board.tracks[TRACK].chain[position].values[parameter]

    def bypassed(self, position: int) -> bool:
        return self.controller.board.tracks[TRACK].chain[position].bypass

    async def turn(self, detents: int, every: float = 0.1) -> None:
        """Turn the encoder ``detents`` (negative: counter-clockwise), ``every`` seconds apart."""
        a, b = self.factory.pin(A), self.factory.pin(B)
        first, second = (a, b) if detents > 0 else (b, a)
        for _ in range(abs(detents)):
            self.clock.now += every
            first.drive_low()
            second.drive_low()
            first.drive_high()
            second.drive_high()
        await self.hardware.settled()

    async def press(self, pin: int, hold: float = 0.0) -> None:
        switch = self.factory.pin(pin)
        self.clock.now += 1.0
        switch.drive_low()
        await asyncio.sleep(hold)
        self.clock.now += max(hold, 0.1)
        switch.drive_high()
        await self.hardware.settled()


@pytest_asyncio.fixture
async def stack(catalog: Catalog, factory: MockFactory, tmp_path: Path) -> AsyncIterator[Stack]:
    stack = Stack(catalog, factory, tmp_path)
    await stack.engine.start()
    await stack.library.start(None)
    await stack.hardware.start()
    try:
        yield stack
    finally:
        await stack.hardware.stop()


async def test_an_encoder_turns_its_control_both_ways_by_steps_of_its_range(stack: Stack) -> None:
    """gain spans −90..24 dB, 90 detents: slow turns move 114/90 dB a detent, each way."""
    await stack.add("gain", gain=0.0)
    await stack.turn(3)
    assert stack.value(0, "gain") == pytest.approx(3 * 114 / 90, abs=1e-6)
    await stack.turn(-5)
    assert stack.value(0, "gain") == pytest.approx(-2 * 114 / 90, abs=1e-6)
    assert stack.engine.values[stack.controller.board.tracks[TRACK].chain[0].id]["gain"] == pytest.approx(
        -2 * 114 / 90, abs=1e-6
    )


async def test_a_fast_turn_accelerates_up_to_five_times(stack: Stack) -> None:
    """Detents 10 ms apart move 4 steps each (after the first); 1 ms apart, 5 at most."""
    await stack.add("gain", gain=-50.0)
    await stack.turn(3, every=0.010)
    assert stack.value(0, "gain") == pytest.approx(-50.0 + (1 + 4 + 4) * 114 / 90, abs=1e-6)
    stack.clock.now += 1.0
    await stack.turn(3, every=0.001)
    assert stack.value(0, "gain") == pytest.approx(-50.0 + (9 + 1 + 4.9 + 4.9) * 114 / 90, abs=1e-6)
    assert gpio.acceleration(0.0) == gpio.ACCEL_MAX


async def test_turning_stops_at_the_ends_and_choices_move_one_at_a_time(catalog: Catalog) -> None:
    gain = catalog.lookup("gain")
    assert gain is not None
    parameter = gain.canonical("gain")
    assert gpio.turned(parameter, 23.5, 5.0, 90) == 24.0
    amp = catalog.lookup("amp")
    assert amp is not None
    enum = next(p for p in amp.parameters if p.control.kind == "enum" and len(p.control.labels) > 2)
    choices = sorted(enum.from_engine(v) for v, _label in enum.control.labels)
    assert gpio.turned(enum, choices[0], 4.0, 90) == choices[1], "a fast turn skipped a choice"
    assert gpio.turned(enum, choices[0], -1.0, 90) == choices[0]


async def test_the_push_switch_moves_the_encoder_on_and_phones_are_told(stack: Stack) -> None:
    await stack.add("gain", gain=0.0)
    await stack.add("overdrive", drive=0.5)
    await stack.press(PUSH)
    told = [data for kind, data in stack.events if kind == "HARDWARE_STATE"]
    assert told[-1]["encoders"][0]["parameter_id"] == "drive"
    assert told[-1]["encoders"][0]["plugin_id"] == stack.controller.board.tracks[TRACK].chain[1].id
    await stack.turn(9)
    assert stack.value(1, "drive") == pytest.approx(0.6, abs=1e-6)
    assert stack.value(0, "gain") == 0.0
    assert ("HARDWARE_STATE", stack.hardware.state()) in stack.controller.replay()


async def test_a_footswitch_bypasses_at_once_and_ignores_contact_bounce(stack: Stack) -> None:
    await stack.add("gain")
    switch = stack.factory.pin(SWITCH)
    switch.drive_low()  # pressed: acts now, not on release
    await stack.hardware.settled()
    assert stack.bypassed(0) is True
    for _ in range(3):  # the contacts bounce, 2 ms an edge, within the 20 ms bounce time
        stack.clock.now += 0.002
        switch.drive_high()
        stack.clock.now += 0.002
        switch.drive_low()
    stack.clock.now += 0.5
    switch.drive_high()  # released
    await stack.hardware.settled()
    assert stack.bypassed(0) is True, "contact bounce toggled the bypass again"
    await stack.press(SWITCH)
    assert stack.bypassed(0) is False


async def test_a_tap_footswitch_sets_the_tempo_from_its_presses(stack: Stack) -> None:
    """Presses 0.5 s apart: 120 BPM from the second on, told to phones; a pause of seconds
    starts over (its first press changes nothing)."""
    switch = stack.factory.pin(TAP)
    for _ in range(4):
        stack.clock.now += 0.5
        switch.drive_low()  # the tap is timed as the box takes it, at once
        await stack.hardware.settled()
        switch.drive_high()
        await stack.hardware.settled()
    assert (stack.tempo.bpm, stack.tempo.source) == (120.0, "tap")
    assert stack.engine.tempo == 120.0
    assert ("TEMPO", {"bpm": 120.0, "source": "tap"}) in stack.events
    stack.clock.now += 10.0
    switch.drive_low()
    switch.drive_high()
    await stack.hardware.settled()
    assert stack.tempo.bpm == 120.0


async def test_short_and_long_presses_do_different_things(stack: Stack) -> None:
    """fs2: a short press bypasses position 1; a hold recalls snapshot "solo" instead."""
    await stack.add("gain", gain=-6.0)
    drive = await stack.add("overdrive")
    await stack.ask("PEDALBOARD_SAVE", name="song")
    await stack.ask("PLUGIN_BYPASS", track_id=TRACK, plugin_id=drive, bypass=True)
    await stack.ask("SNAPSHOT_SAVE", name="solo")
    await stack.ask("PLUGIN_BYPASS", track_id=TRACK, plugin_id=drive, bypass=False)
    await stack.press(HOLD_SWITCH, hold=HOLD * 3)
    assert stack.bypassed(1) is True and stack.library.snapshot == "solo"
    await stack.press(HOLD_SWITCH)
    assert stack.bypassed(1) is False, "a short press did not bypass"
    assert stack.library.snapshot == "solo"


async def test_a_mapping_waits_for_its_plugin(stack: Stack) -> None:
    """Nothing at position 0 yet: turns and presses change nothing; once a plugin is there, they do."""
    await stack.turn(3)
    await stack.press(SWITCH)
    assert stack.controller.board.tracks[TRACK].chain == []
    await stack.add("gain", gain=0.0)
    await stack.turn(1)
    assert stack.value(0, "gain") == pytest.approx(114 / 90, abs=1e-6)


async def _until(condition: Callable[[], bool], why: str) -> None:
    """Let the loop turn until ``condition()``; fail with ``why`` if it has not after
    :data:`GUARD` seconds (a guard against waiting for good, never a speed claim)."""
    try:
        async with asyncio.timeout(GUARD):
            while not condition():
                await asyncio.sleep(0)
    except TimeoutError:
        pytest.fail(why)


async def test_a_setlist_footswitch_never_holds_up_a_bypass(stack: Stack) -> None:
    """While the setlist's next pedalboard loads (held up: its plugins take their time), the
    bypass footswitch acts on the board that plays, without waiting for the load."""
    await stack.add("gain")
    await stack.ask("PEDALBOARD_SAVE", name="one")
    await stack.add("overdrive")
    await stack.ask("PEDALBOARD_SAVE", name="two")
    await stack.ask("PEDALBOARD_LOAD", name="one")
    await stack.ask("SETLIST_SET", entries=[{"pedalboard": "one"}, {"pedalboard": "two"}], position=0)
    playing = stack.controller.board.tracks[TRACK].chain[0].id
    switches = len(stack.engine.switches)  # type: ignore[attr-defined]
    gate = asyncio.Event()
    stack.engine.add_gate = gate  # type: ignore[attr-defined]
    try:
        stack.factory.pin(NEXT).drive_low()  # no hold action: NEXT acts on the press
        await _until(lambda: len(stack.engine.switches) > switches, "the next pedalboard never started loading")  # type: ignore[attr-defined]
        stack.factory.pin(SWITCH).drive_low()  # press(): its settled() would wait for the load
        await _until(lambda: stack.engine.bypassed[playing], "the bypass waited for the pedalboard load")  # type: ignore[attr-defined]
        assert stack.library.current is not None and stack.library.current.name == "one", "the load was not held"
        assert stack.controller.board.tracks[TRACK].chain[0].bypass is True
    finally:
        gate.set()
        stack.factory.pin(SWITCH).drive_high()
        stack.factory.pin(NEXT).drive_high()
        await stack.hardware.settled()
    assert stack.library.setlist.position == 1
    assert stack.library.current is not None and stack.library.current.name == "two"
    assert [p.type.key for p in stack.controller.board.tracks[TRACK].chain] == ["gain", "overdrive"]


async def test_a_phone_sees_a_knob_turn_at_once(
    catalog: Catalog, factory: MockFactory, tmp_path: Path
) -> None:
    """A phone is told of a knob turn as soon as the board has it: before the box's answer to
    anything the phone asks after the turn, and with the value the board holds."""
    stack = Stack(catalog, factory, tmp_path)
    await stack.engine.start()
    await stack.hardware.start()
    server = ControlServer(ServerConfig(host="127.0.0.1", port=0), stack.controller, lambda: (True, {}))
    await server.start()
    try:
        plugin_id = await stack.add("gain", gain=0.0)
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as phone:

            async def until_reply(request_id: str) -> list[dict[str, Any]]:
                """Every message up to the answer to ``request_id`` (which is left out)."""
                await phone.send(json.dumps({"id": request_id, "type": "PING"}))
                seen = []
                while (message := json.loads(await asyncio.wait_for(phone.recv(), GUARD))).get(
                    "reply_to"
                ) != request_id:
                    seen.append(message)
                return seen

            await until_reply("before")
            await stack.turn(2)  # returns once the board has the turn
            told = [m for m in await until_reply("after") if m["type"] == "PLUGIN_PARAMETER"]
        assert told, "the phone's next answer came before the news of the knob turn"
        assert all(m["data"]["plugin_id"] == plugin_id for m in told)
        assert told[-1]["data"]["parameter_value"] == pytest.approx(stack.value(0, "gain"), abs=1e-6)
        assert stack.value(0, "gain") == pytest.approx(2 * 114 / 90, abs=1e-6)
        assert told[-1]["origin"] == {"user_id": "gpio", "session_id": "knob"}
    finally:
        await server.stop()
        await stack.hardware.stop()


async def test_a_footswitch_bypass_is_heard(
    catalog: Catalog, factory: MockFactory, tmp_path: Path, jack_server: JackServer, rig: Rig
) -> None:
    """On the jalv engine and the rig: the footswitch takes the −6 dB amp out (0 dB) and back."""
    engine = ENGINE_ADAPTERS["jalv"](jack_server.name)(
        [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], print
    )
    await engine.start()
    stack = Stack(catalog, factory, tmp_path, engine)
    await stack.hardware.start()
    probe = sine(1000.0, 4800, 48000, -12.0)
    try:
        await stack.add("gain", gain=-6.0)
        assert await rig.gain_until(lambda g: abs(g + 6.0) <= 0.1, probe) == pytest.approx(-6.0, abs=0.1)
        await stack.press(SWITCH)
        assert await rig.gain_until(lambda g: abs(g) <= 0.1, probe) == pytest.approx(0.0, abs=0.1)
        await stack.press(SWITCH)
        assert await rig.gain_until(lambda g: abs(g + 6.0) <= 0.1, probe) == pytest.approx(-6.0, abs=0.1)
    finally:
        await stack.hardware.stop()
        await engine.stop()


async def test_the_tuner_footswitch_silences_the_box_and_the_phone_reads_the_note(
    catalog: Catalog,
    factory: MockFactory,
    tmp_path: Path,
    jack_server: JackServer,
    rig: Rig,
    own_plugins: OwnPlugins,
) -> None:
    """On jalv and the rig, an A string playing: the tuner footswitch silences the box within
    :data:`TUNER_SILENT_WITHIN` frames of the press and it stays silent from the moment a phone
    is told the tuner is on (the recording's frame clock, not the wall clock); the phone reads
    A2 in its meters; a second press brings the sound back."""
    engine = ENGINE_ADAPTERS["jalv"](jack_server.name)(
        [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], print, own=own_plugins
    )
    await engine.start()
    stack = Stack(catalog, factory, tmp_path, engine)
    await stack.hardware.start()
    server = ControlServer(ServerConfig(host="127.0.0.1", port=0), stack.controller, lambda: (True, {}))
    await server.start()
    feed = asyncio.create_task(MeterFeed(engine, server.metering, server.send_meters).run())
    string = sine(110.0, 3 * 48000, 48000, -12.0)
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as phone:
            await phone.send(json.dumps({"id": "m", "type": "METERS_SUBSCRIBE", "data": {"on": True}}))

            async def press_and_read() -> tuple[int, int | None, list[dict[str, Any]]]:
                pressed = rig.position()
                stack.factory.pin(TUNE).drive_low()  # no hold action: acts on the press
                told: int | None = None
                seen: list[dict[str, Any]] = []
                while not any(m["type"] == "METERS" and m["data"]["tuner"] for m in seen):
                    seen.append(json.loads(await asyncio.wait_for(phone.recv(), 3)))
                    if told is None and seen[-1]["type"] == "TUNER" and seen[-1]["data"] == {"on": True}:
                        told = rig.position()
                stack.factory.pin(TUNE).drive_high()
                return pressed, told, seen

            _, recorded, outcome = await rig.record_during(string, press_and_read, lead_frames=24000)
            rig.require_clean("the tuner's recording")
            assert isinstance(outcome, tuple), outcome
            pressed, told, seen = outcome
            assert told is not None, f"the phone was not told the tuner is on: {seen}"
            reading = next(m["data"]["tuner"] for m in seen if m["type"] == "METERS" and m["data"]["tuner"])
            assert (reading["note"], reading["octave"]) == ("A", 2), reading
            out = recorded[:, 0]
            assert rms_db(out[pressed - 4800 : pressed]) > -20.0, "the string was not heard before the press"
            silent = out[told:]
            assert rms_db(silent) < -90.0, (
                f"the box sounded after the phone was told it tunes ({rms_db(silent):.1f} dBFS)"
            )
            sounding = np.flatnonzero(np.abs(out[pressed:told]) > 1e-4)
            silent_after = int(sounding[-1]) + 1 if sounding.size else 0
            print(f"silent {silent_after / 48:.1f} ms after the press, told {(told - pressed) / 48:.1f} ms after it")
            assert silent_after <= TUNER_SILENT_WITHIN, (
                f"the box sounded for {silent_after} frames after the press (the tuner mutes at once, "
                f"before it starts: within {TUNER_SILENT_WITHIN} frames)"
            )
            await stack.press(TUNE)
            assert await told_tuner_off(phone)
        probe = sine(1000.0, 4800, 48000, -12.0)
        assert await rig.gain_until(lambda g: abs(g) <= 0.1, probe) == pytest.approx(0.0, abs=0.1)
    finally:
        feed.cancel()
        await server.stop()
        await stack.hardware.stop()
        await engine.stop()


async def told_tuner_off(phone: Any) -> bool:
    """Read until the box says the tuner is off."""
    while True:
        message = json.loads(await asyncio.wait_for(phone.recv(), 3))
        if message["type"] == "TUNER" and message["data"] == {"on": False}:
            return True


# -- the map --------------------------------------------------------------------------------


def _broken(change: dict[str, Any]) -> str:
    document = json.loads(json.dumps(MAP))
    for path, value in change.items():
        target: Any = document
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        last = keys[-1]
        target[int(last) if last.isdigit() else last] = value
    with pytest.raises(ConfigError) as caught:
        gpiomap.parse(document)
    return caught.value.key


def test_mistakes_in_the_map_name_their_key() -> None:
    assert _broken({"encoders.0.pins": [17, 99]}) == "gpio.encoders[0].pins[1]"
    assert _broken({"footswitches.0.pin": 27}) == "gpio.footswitches[0].pin"  # the encoder's B pin
    assert _broken({"footswitches.2.press": {"action": "looper"}}) == "gpio.footswitches[2].press.action"
    assert _broken({"encoders.0.controls": []}) == "gpio.encoders[0].controls"
    assert _broken({"encoders.0.controls.0": {"parameter": "gain"}}) == "gpio.encoders[0].controls[0]"
    assert _broken({"hold_time": "long"}) == "gpio.hold_time"


def test_the_shipped_example_map_is_valid() -> None:
    example = gpiomap.load(ROOT / "config" / "gpio.yaml")
    assert len(example.encoders) == 4 and len(example.footswitches) == 3
    assert all(e.push is not None for e in example.encoders)


async def test_a_board_the_map_does_not_fit_is_played_not_refused(stack: Stack) -> None:
    """The knob's first control is a gain at position 0; the player switches to a board with
    an overdrive there (no gain). The box still starts on that board (a refusal would keep it
    down after a restart: systemd does not restart a config error) and turning the knob does
    nothing to the overdrive; the other mapping waits for its plugin."""
    await stack.add("overdrive")
    drive = stack.value(0, "drive")
    idle = gpiomap.check_controls(gpiomap.parse(MAP), stack.controller.board)
    assert any("has no control 'gain'" in sentence for sentence in idle), idle
    assert any("position" in sentence for sentence in idle), idle  # nothing at position 1 yet
    await stack.turn(3)
    assert stack.value(0, "drive") == drive


def test_without_gpio_the_box_runs_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="appliance.app"):
        assert pin_factory() is None
    assert [r.getMessage() for r in caplog.records if "no GPIO" in r.getMessage()]


async def test_gpio_test_prints_every_turn_and_press(factory: MockFactory) -> None:
    """``appliance gpio-test``: what the wiring does, one line an event."""
    said: list[str] = []
    watching = asyncio.ensure_future(gpio.watch(gpiomap.parse(MAP), factory, said.append))
    await asyncio.sleep(0.01)
    a, b = factory.pin(A), factory.pin(B)
    for drive in (a.drive_low, b.drive_low, a.drive_high, b.drive_high):
        drive()
    factory.pin(NEXT).drive_low()
    factory.pin(NEXT).drive_high()
    await asyncio.sleep(0.01)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    assert said[1:] == ["knob: +1 (clockwise)", "fs3: pressed", "fs3: released"]


def test_gpio_test_says_there_is_no_gpio_here(tmp_path: Path) -> None:
    from appliance.__main__ import main

    config = tmp_path / "box.yaml"
    config.write_text(
        f"gpio: {ROOT / 'config' / 'gpio.yaml'}\ntracks: [{{id: t, inputs: [a:b], outputs: [c:d]}}]\n"
    )
    assert main(["gpio-test", "--config", str(config)]) == 1
