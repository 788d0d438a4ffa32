"""The HAT's mixer through ALSA, against a software control: no sound card needed.

This machine has no sound card (and its kernel no ALSA), so a softvol control
has no card to live on. ALSA's own ``pulse`` control plugin (libasound2-plugins)
gives real ALSA mixer controls, ``Master`` and ``Capture``, backed by a
PulseAudio null sink that the suite starts for itself: the box's mixer code
runs unchanged against it, through pyalsaaudio. What could not be tested here:
a real card's controls (dB ranges, a card that exists but is not the one
configured).

What a player would notice if these broke: the input gain or output volume
not following the phone, or forgetting its level at every restart; a box that
will not start on a laptop because it has no sound card.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.config import MixerConfig
from appliance.control.controller import Controller
from appliance.core.board import Board
from appliance.core.errors import ApplianceError, ConfigError
from appliance.core.protocol import Request
from appliance.engine import TrackPorts
from appliance.frontends.mixer import Mixer, MixerService
from appliance.plugins.catalog import Catalog
from tests.fakes import FakeEngine

DEVICE = "boxmixer"
CONTROLS = {"output_volume": "Master", "input_gain": "Capture"}
#: How long PulseAudio may take to come up.
START_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A PulseAudio with a null sink, and an ALSA config whose ``boxmixer`` control device is it.

    Yields the environment a process needs to see it (this one's is set too).
    """
    if shutil.which("pulseaudio") is None:
        pytest.fail("pulseaudio is not installed (scripts/setup --test installs it)")
    folder = tmp_path_factory.mktemp("pulse")
    runtime = folder / "run"
    runtime.mkdir(mode=0o700)
    asoundrc = folder / "asoundrc"
    asoundrc.write_text(f"ctl.{DEVICE} {{ type pulse }}\n")
    env = {
        "XDG_RUNTIME_DIR": str(runtime),
        "HOME": str(folder),
        "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{asoundrc}",
    }
    process = subprocess.Popen(
        [
            "pulseaudio",
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "--log-target=stderr",
            "-L",
            "module-null-sink sink_name=hat",
            "-L",
            "module-null-source source_name=hat_in",
            "-L",
            "module-native-protocol-unix",
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (runtime / "pulse" / "native").exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("PulseAudio did not start")
            time.sleep(0.05)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if process.poll() is None:
            process.kill()
            process.wait()


def _alsa_reads(control: str, capture: bool = False) -> list[int]:
    """What any other ALSA program reads of the control now."""
    import alsaaudio

    kind = alsaaudio.PCM_CAPTURE if capture else alsaaudio.PCM_PLAYBACK
    return list(alsaaudio.Mixer(control, device=DEVICE).getvolume(kind))


def test_the_mixer_reads_and_sets_real_alsa_controls(pulse: dict[str, str]) -> None:
    mixer = Mixer.open(MixerConfig(DEVICE, CONTROLS))
    assert mixer is not None
    assert mixer.set("output_volume", 42) == 42.0
    assert _alsa_reads("Master") == [42, 42]
    capture = mixer.channel("input_gain").capture
    assert mixer.set("input_gain", 70) == 70.0
    assert set(_alsa_reads("Capture", capture)) == {70}
    assert mixer.levels() == {"output_volume": 42.0, "input_gain": 70.0}


def test_a_control_the_device_lacks_names_the_key_and_what_there_is(pulse: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        Mixer.open(MixerConfig(DEVICE, {"output_volume": "Digital"}))
    assert caught.value.key == "mixer.controls.output_volume"
    assert "Master" in str(caught.value) and "Capture" in str(caught.value)


def test_without_any_sound_card_the_mixer_is_absent(caplog: pytest.LogCaptureFixture) -> None:
    """This machine has no card: a configured card is reported absent and nothing fails."""
    with caplog.at_level(logging.INFO, logger="appliance.frontends.mixer"):
        assert Mixer.open(MixerConfig("hw:CARD=sndrpihifiberry", CONTROLS)) is None
    assert any("mixer is absent" in r.getMessage() for r in caplog.records)


def _service(mixer: Mixer | None) -> tuple[Controller, MixerService, list[Any]]:
    controller = Controller(Board(["t"]), Catalog({}, []), FakeEngine([TrackPorts("t", ("a",), ("b",))]))
    saves: list[Any] = []
    return controller, MixerService(controller, mixer, lambda: saves.append(1)), saves


async def test_phones_set_the_mixer_and_every_client_is_told(pulse: dict[str, str]) -> None:
    controller, service, saves = _service(Mixer.open(MixerConfig(DEVICE, CONTROLS)))
    await service.start({"output_volume": 55})
    assert _alsa_reads("Master") == [55, 55], "the saved level was not put back at start"
    outcome = await controller.execute(Request("MIXER_SET", {"control": "output_volume", "value": 30}))
    assert outcome.broadcast[0][0] == "MIXER"
    assert {c["id"]: c["value"] for c in outcome.broadcast[0][1]["controls"]}["output_volume"] == 30.0
    assert _alsa_reads("Master") == [30, 30] and saves == [1]
    assert service.saved_state()["output_volume"] == 30.0
    assert ("MIXER", service.state()) in controller.replay()
    for bad in ({"control": "nope", "value": 1}, {"control": "output_volume", "value": "loud"}):
        with pytest.raises(ApplianceError):
            await controller.execute(Request("MIXER_SET", bad))
    assert _alsa_reads("Master") == [30, 30]


async def test_an_absent_mixer_says_so(pulse: dict[str, str]) -> None:
    controller, service, _ = _service(None)
    await service.start({"output_volume": 55})
    reply = await controller.execute(Request("MIXER_GET", {}))
    assert reply.reply == [("MIXER", {"present": False, "controls": []})]
    with pytest.raises(ApplianceError) as caught:
        await controller.execute(Request("MIXER_SET", {"control": "output_volume", "value": 3}))
    assert caught.value.code == "HARDWARE_UNAVAILABLE"


async def test_the_box_restores_its_mixer_level_after_a_restart(
    pulse: dict[str, str], tmp_path: Path
) -> None:
    """Over the real box: a level set from a phone is saved and set again at the next start."""
    from websockets.asyncio.client import connect

    from tests.boxproc import BoxProcess, virtual_config

    mixer = {"device": DEVICE, "controls": {"output_volume": "Master"}}
    config = virtual_config(tmp_path, demo=[], data_dir=tmp_path / "data", mixer=mixer)
    box = BoxProcess(config, env=pulse)
    await asyncio.to_thread(box.start)
    try:
        async with connect(box.ws_url) as phone:
            request = {"id": "m", "type": "MIXER_SET", "data": {"control": "output_volume", "value": 23}}
            await phone.send(json.dumps(request))
            while (message := json.loads(await asyncio.wait_for(phone.recv(), 10))).get("reply_to") != "m":
                pass
            assert message["type"] == "MIXER", message
    finally:
        await asyncio.to_thread(box.stop)
    import alsaaudio

    alsaaudio.Mixer("Master", device=DEVICE).setvolume(80)  # someone else turned it meanwhile
    box = BoxProcess(config, env=pulse)
    await asyncio.to_thread(box.start)
    try:
        assert _alsa_reads("Master") == [23, 23]
    finally:
        await asyncio.to_thread(box.stop)


async def test_an_encoder_turns_the_output_volume(pulse: dict[str, str]) -> None:
    """An encoder mapped to the mixer moves it 100/steps % a detent, as a phone would."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    from appliance.frontends import gpio, gpiomap

    controller, service, _ = _service(Mixer.open(MixerConfig(DEVICE, CONTROLS)))
    await service.start({"output_volume": 40})
    mapping = gpiomap.parse(
        {"encoders": [{"name": "volume", "pins": [17, 27], "steps": 50, "controls": [{"mixer": "output_volume"}]}]}
    )
    assert gpiomap.check_controls(mapping, controller.board, CONTROLS) == []
    factory = MockFactory()
    hardware = gpio.Hardware(mapping, controller, factory, clock=iter(range(0, 10_000, 1)).__next__)
    await hardware.start()
    try:
        a, b = factory.pin(17), factory.pin(27)
        for _ in range(5):
            for drive in (a.drive_low, b.drive_low, a.drive_high, b.drive_high):
                drive()
        await hardware.settled()
    finally:
        await hardware.stop()
        factory.reset()
        Device.pin_factory = None
    assert _alsa_reads("Master") == [50, 50]
    with pytest.raises(ConfigError) as caught:
        gpiomap.check_controls(mapping, controller.board, {"input_gain": "Capture"})
    assert caught.value.key == "gpio.encoders[0].controls[0].mixer"
