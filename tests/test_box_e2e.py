"""The whole box, end to end: ``python -m appliance run``, phones on WebSocket, real audio.

Each test starts its own JACK dummy server (conftest's ``jack_server``) and
the virtual rig on it, then runs the box as a user does (:mod:`tests.boxproc`)
with its config aimed at that server: ``engine.jack.server`` is the test's
server, ``engine.jack.dummy`` is removed (connect, don't start one), the
track reads the rig's player and feeds its recorder, no demo board, and a
fresh data folder::

    rig-play:play_1 ──▶ box (jalv processes or Carla) ──▶ rig-rec:rec_1
          └──────────────────────────────────────────────▶ rig-rec:ref_1

Clients are real ``websockets`` clients; every audio claim is a level or a
latency read from recorded samples against the rig's dry reference, off a
take during which the server had no xrun (:meth:`tests.rig.Rig.require_clean`:
a spoiled take fails its test, never retaken). The tests are parametrised
over the engine kinds; one that cannot run here is skipped with the reason
printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect

from appliance.engine.carla import HIDE_CARLA_ENV
from appliance.engine.jack.server import JackServer
from tests.boxproc import SERVER_PERIOD, BoxProcess, virtual_config
from tests.conftest import small_partition
from tests.notify import received
from tests.rig import (
    MidiController,
    Rig,
    fade_heard_frames,
    gain_db,
    gaps,
    latency_frames,
    longest_gap,
    noise,
    repeat_after,
    rms_db,
    sine,
    window_gains,
)

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(120)]

TRACK = "track_001"
#: Tolerance of every gain claim, in dB.
TOLERANCE_DB = 0.1
#: How closely the same overdrive must read under the two engines, in dB.
ENGINES_AGREE_DB = 0.5
#: Two takes in a row this close (dB) mean a plugin's filters have settled.
STEADY_DB = 0.05
#: The probe for gain claims: 0.1 s of 1 kHz at −12 dBFS.
PROBE = sine(1000.0, 4800, 48000, -12.0)
#: A probe well under the compressor's −25 dB threshold, so it reads as unity.
QUIET_PROBE = sine(1000.0, 4800, 48000, -40.0)
#: How long a reply to a request may take (a plugin load included).
REPLY_TIMEOUT = 30.0
#: How long the debounced save may take to reach board.json.
SAVE_TIMEOUT = 10.0
#: Takes before a level is called unsteady.
LEVEL_TRIES = 40
#: The recording of a box's crash: 4 s of 1 kHz at −12 dBFS, the kill 0.2 s in.
CRASH_TONE = sine(1000.0, 4 * 48000, 48000, -12.0)
CRASH_AT = 9600
#: After a crash the track sounds dry within this many frames of the kill, on the recording's
#: clock (README: "a few ms to about a second"): JACK dropping the dead box's clients, then
#: the dry-path keeper's connections.
DRY_WITHIN = 2 * 48000
#: How long past its length the crash's recording may take (JACK's graph standing still).
CRASH_STALL = 30.0
#: How close to 0 dB a 10 ms window must read to count as dry.
DRY_DB = 0.5

#: One plugin as a client or the board file sees it: (plugin_id, catalog key, values, bypass).
PluginState = tuple[str, str, dict[str, float], bool]


# -- engines --------------------------------------------------------------------------


@pytest.fixture(params=["jalv", "carla"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    """The ``engine.kind`` under test (conftest skips ``carla`` where Carla is absent)."""
    return str(request.param)


def _config(
    tmp: Path,
    server: JackServer,
    kind: str,
    tracks: list[dict[str, Any]],
    scanned: bool = True,
    **overrides: Any,
) -> Path:
    """virtual.yaml aimed at the test's running server, with these tracks, no demo (and
    ``overrides`` as :func:`tests.boxproc.virtual_config` takes them)."""
    return virtual_config(
        tmp,
        jack_server=server.name,
        dummy=False,
        scanned=scanned,
        engine=kind,
        tracks=tracks,
        demo=[],
        data_dir=tmp / "data",
        **overrides,
    )


def _one_track(rig: Rig) -> list[dict[str, Any]]:
    return [{"id": TRACK, "inputs": rig.play_ports, "outputs": rig.rec_ports}]


@contextlib.asynccontextmanager
async def _box(config: Path, env: dict[str, str] | None = None) -> AsyncIterator[BoxProcess]:
    """The box running on ``config``; SIGTERM on exit, unless a test stopped it already."""
    box = BoxProcess(config, env=env)
    await asyncio.to_thread(box.start)
    try:
        yield box
    except BaseException:
        print(f"the box's log, its last lines:\n{box.log_tail()}")  # shown beside the failure
        raise
    finally:
        await asyncio.to_thread(box.stop)


# -- a phone ----------------------------------------------------------------------------


class Phone:
    """A WebSocket client of the box that waits for the answer to each request."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._sent = 0
        self.states: dict[str, dict[str, Any]] = {}

    async def _receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await self.ws.recv())
        return message

    async def replay(self) -> list[dict[str, Any]]:
        """The board replayed on connect: every plugin message before the answer to a PING,
        ids dropped (the states that follow them, pedalboards and mixer, are kept in
        :attr:`states` by type)."""
        self._sent += 1
        mark = f"sync_{self._sent}"
        await self.ws.send(json.dumps({"id": mark, "type": "PING"}))
        replayed = []
        async with asyncio.timeout(REPLY_TIMEOUT):
            while (message := await self._receive()).get("reply_to") != mark:
                message.pop("id", None)
                if message["type"].startswith("PLUGIN_"):
                    replayed.append(message)
                else:
                    self.states[message["type"]] = message["data"]
        return replayed

    async def _answer(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Send one request on the test's track; the first message answering it."""
        self._sent += 1
        mark = f"msg_{self._sent}"
        await self.ws.send(json.dumps({"id": mark, "type": kind, "data": {"track_id": TRACK, **data}}))
        async with asyncio.timeout(REPLY_TIMEOUT):
            while (message := await self._receive()).get("reply_to") != mark:
                pass
        return message

    async def request(self, kind: str, **data: Any) -> dict[str, Any]:
        """Send one request; the first message answering it (an ERROR fails the test)."""
        message = await self._answer(kind, data)
        assert message["type"] == kind, f"{kind} {data} was refused: {message}"
        return message

    async def refused(self, kind: str, **data: Any) -> dict[str, Any]:
        """Send one request that must be refused; the ERROR answering it."""
        message = await self._answer(kind, data)
        assert message["type"] == "ERROR", f"{kind} {data} was not refused: {message}"
        return message

    async def ask(self, kind: str, answer: str = "PEDALBOARD_STATE", **data: Any) -> dict[str, Any]:
        """Send one request; the message of type ``answer`` among those answering it."""
        self._sent += 1
        mark = f"msg_{self._sent}"
        await self.ws.send(json.dumps({"id": mark, "type": kind, "data": data}))
        async with asyncio.timeout(REPLY_TIMEOUT):
            while True:
                message = await self._receive()
                if message.get("reply_to") != mark:
                    continue
                assert message["type"] != "ERROR", f"{kind} {data} was refused: {message}"
                if message["type"] == answer:
                    return message

    async def heard(self, kind: str) -> dict[str, Any]:
        """The next message of type ``kind`` this phone is sent (whoever caused it)."""
        async with asyncio.timeout(REPLY_TIMEOUT):
            while (message := await self._receive())["type"] != kind:
                pass
        return message

    async def add(self, plugin: str, track_id: str = TRACK, **values: float) -> str:
        """Add ``plugin`` by catalog key, set ``values``; its plugin_id."""
        added = await self.request("PLUGIN_ADD", track_id=track_id, name=plugin)
        plugin_id = str(added["data"]["plugin_id"])
        for parameter_id, value in values.items():
            await self.set(plugin_id, parameter_id, value, track_id)
        return plugin_id

    async def set(self, plugin_id: str, parameter_id: str, value: float, track_id: str = TRACK) -> None:
        """Set one parameter; checks the broadcast value is the one sent."""
        echo = await self.request(
            "PLUGIN_PARAMETER",
            track_id=track_id,
            plugin_id=plugin_id,
            parameter_id=parameter_id,
            parameter_value=value,
        )
        assert echo["data"]["parameter_value"] == pytest.approx(value)

    async def bypass(self, plugin_id: str, bypass: bool) -> None:
        await self.request("PLUGIN_BYPASS", plugin_id=plugin_id, bypass=bypass)


@contextlib.asynccontextmanager
async def _phone(box: BoxProcess) -> AsyncIterator[Phone]:
    async with connect(box.ws_url, open_timeout=REPLY_TIMEOUT, close_timeout=5) as ws:
        yield Phone(ws)


async def _replay(box: BoxProcess) -> list[dict[str, Any]]:
    """What a client that connects now is sent as the board."""
    async with _phone(box) as phone:
        return await phone.replay()


def _chain(replay: list[dict[str, Any]], track_id: str = TRACK) -> list[PluginState]:
    """Each plugin of ``track_id`` in a replay, in chain order."""
    chain: dict[str, PluginState] = {}
    for message in replay:
        data = message["data"]
        if data["track_id"] != track_id:
            continue
        if message["type"] == "PLUGIN_ADD":
            chain[data["plugin_id"]] = (data["plugin_id"], data["plugin"], data["parameters"], False)
        elif message["type"] == "PLUGIN_BYPASS":
            plugin_id, key, values, _ = chain[data["plugin_id"]]
            chain[data["plugin_id"]] = (plugin_id, key, values, bool(data["bypass"]))
    positions = {m["data"]["plugin_id"]: m["data"]["position"] for m in replay if m["type"] == "PLUGIN_ADD"}
    return sorted(chain.values(), key=lambda plugin: positions[plugin[0]])


# -- audio --------------------------------------------------------------------------------


def _near(target_db: float) -> Callable[[float], bool]:
    return lambda gain: abs(gain - target_db) <= TOLERANCE_DB


async def _levels(rig: Rig, probe: np.ndarray = PROBE) -> list[float]:
    """One clean take: each channel's gain against the dry reference, in dB."""
    reference, recorded = await rig.play_and_record(probe)
    rig.require_clean("a level probe")
    return [gain_db(recorded[:, channel], reference) for channel in range(rig.channels)]


async def _steady_levels(rig: Rig, first_db: float) -> list[float]:
    """Takes until channel 0 reads ``first_db`` and every channel reads as the take before."""
    before = await _levels(rig)
    for _ in range(LEVEL_TRIES):
        now = await _levels(rig)
        if abs(now[0] - first_db) <= TOLERANCE_DB and all(
            abs(a - b) <= STEADY_DB for a, b in zip(now, before, strict=True)
        ):
            return now
        before = now
    return now


async def _latency(rig: Rig) -> int:
    reference, recorded = await rig.play_and_record(noise(4800), extra_frames=512)
    rig.require_clean("a latency probe")
    return latency_frames(recorded[:, 0], reference, max_lag=512)


async def _saved(data_dir: Path, accept: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """board.json once ``accept`` says it holds the change (the save is debounced)."""
    path = data_dir / "board.json"
    board: dict[str, Any] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SAVE_TIMEOUT):
            while True:
                with contextlib.suppress(FileNotFoundError, ValueError):
                    board = json.loads(await asyncio.to_thread(path.read_text))
                    if accept(board):
                        return board
                await asyncio.sleep(0.05)
    raise AssertionError(f"board.json never held the change; last read: {board}")


def _saved_chain(board: dict[str, Any], track_id: str = TRACK) -> list[PluginState]:
    """Each plugin of ``track_id`` in board.json, in chain order."""
    track = next(t for t in board["tracks"] if t["id"] == track_id)
    return [(p["id"], p["plugin"], p["values"], p["bypass"]) for p in track["chain"]]


# -- the tests ------------------------------------------------------------------------------


async def test_gain_bypass_and_remove_over_websocket(
    engine_kind: str, jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """Gain −6 over WebSocket reads −6.0 dB, 0 frames late; bypass and remove read 0 dB (dry)."""
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    async with _box(config) as box, _phone(box) as phone:
        assert await phone.replay() == []
        assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)

        gain = await phone.add("gain", gain=-6.0)
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        assert await _latency(rig) == 0

        await phone.bypass(gain, True)
        assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
        await phone.bypass(gain, False)
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)

        await phone.request("PLUGIN_REMOVE", plugin_id=gain)
        assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
        assert await _latency(rig) == 0


async def test_a_foot_controller_learned_from_a_phone_drives_the_gain_heard_while_two_phones_watch(
    engine_kind: str, jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """A controller plugged in while the box plays; one phone starts a learn on the amp's gain,
    the controller's pedal moves, and the other phone sees the mapping appear; it narrows the
    range to −20..0 dB, and the pedal's heel and toe are heard at −20 and 0 dB, told to both."""
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    pedal = MidiController(jack_server.name)
    async with _box(config) as box, _phone(box) as player, _phone(box) as watcher:
        await player.replay()
        await watcher.replay()
        gain = await player.add("gain", gain=-6.0)
        await pedal.open()
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                while pedal.port not in (await player.ask("MIDI_GET", "MIDI_STATE"))["data"]["inputs"]:
                    await asyncio.sleep(0.05)
            learning = {"action": "parameter", "plugin_id": gain, "parameter_id": "gain"}
            await player.ask("MIDI_LEARN", "MIDI_STATE", mapping=learning)
            assert (await watcher.heard("MIDI_STATE"))["data"]["learning"]["plugin_id"] == gain
            await pedal.cc(7, 100, channel=3)
            learned = (await watcher.heard("MIDI_LEARNED"))["data"]["mapping"]
            assert (learned["message"], learned["number"], learned["channel"]) == ("cc", 7, 3)
            narrowed = {**learned, "minimum": -20.0, "maximum": 0.0}
            await watcher.ask("MIDI_MAP_SET", "MIDI_STATE", mapping=narrowed)
            for value, level in ((0, -20.0), (127, 0.0)):
                await pedal.cc(7, value, channel=3)
                told = await player.heard("PLUGIN_PARAMETER")
                assert told["data"]["parameter_value"] == pytest.approx(level), told
                heard = await rig.gain_until(_near(level), PROBE)
                assert heard == pytest.approx(level, abs=TOLERANCE_DB)
        finally:
            await pedal.close()


async def test_a_tempo_tapped_on_a_midi_footswitch_is_the_one_a_synced_delay_repeats_at(
    engine_kind: str, jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """A delay synced to a quarter note; a MIDI footswitch mapped to ``tap_tempo`` is tapped
    three times about 300 ms apart: the other phone is told each tapped tempo, and the repeat
    then comes 60/BPM seconds after the note. Under Carla by default; under jalv with
    ``transport_master`` on (its timebase master). Broken, the player taps the song's tempo
    and the delay stays at its old time."""
    master = engine_kind == "jalv"  # Carla's racks have the tempo on their own transport
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig), transport_master=master)
    switch = MidiController(jack_server.name)
    async with _box(config) as box, _phone(box) as player, _phone(box) as watcher:
        await player.replay()
        await watcher.replay()
        await player.add("delay", sync=1.0, div=4.0, feedback=0.0, wet_dry=0.5, lpf=20000.0, time=900.0)
        assert await repeat_after(rig, 120.0) == pytest.approx(500.0, abs=2.0)  # the box's 120 BPM
        await switch.open()
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                while switch.port not in (await player.ask("MIDI_GET", "MIDI_STATE"))["data"]["inputs"]:
                    await asyncio.sleep(0.05)
            tap = {"message": "cc", "number": 64, "action": "tap_tempo"}
            await player.ask("MIDI_MAP_SET", "MIDI_STATE", mapping=tap)
            for _ in range(3):
                await switch.cc(64, 127)
                await switch.cc(64, 0)
                await asyncio.sleep(0.3)
            tapped: list[float] = []  # the second tap sets a tempo, the third refines it
            while len(tapped) < 2:
                if (told := (await watcher.heard("TEMPO"))["data"])["source"] == "tap":
                    tapped.append(told["bpm"])
        finally:
            await switch.close()
        bpm = tapped[-1]
        assert abs(bpm - 120.0) > 10.0, f"taps 300 ms apart read {bpm} BPM: too near the old tempo to tell"
        assert await repeat_after(rig, bpm) == pytest.approx(60000 / bpm, abs=2.0), f"at {bpm:g} BPM"


async def _build_board(phone: Phone) -> tuple[str, str, str]:
    """gain −6, overdrive bypassed, compressor threshold −25; their plugin ids."""
    gain = await phone.add("gain", gain=-6.0)
    drive = await phone.add("overdrive", drive=1.0)
    await phone.bypass(drive, True)
    compressor = await phone.add("compressor", threshold=-25.0)
    return gain, drive, compressor


async def test_board_survives_a_restart(
    engine_kind: str, jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """After SIGTERM and a new start on the same data_dir, the board replays the same and reads
    −6 dB, at the tempo it was set to."""
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    async with _box(config) as box:
        async with _phone(box) as phone:
            gain, drive, compressor = await _build_board(phone)
            assert (await phone.ask("TEMPO_SET", "TEMPO", bpm=96.5))["data"] == {"bpm": 96.5, "source": "phone"}
        assert await rig.gain_until(_near(-6.0), QUIET_PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        before = await _replay(box)
    assert box.returncode == 0, box.log_tail()
    assert box.leftovers == [], "the box left processes behind after SIGTERM"
    assert "did not end when asked" not in box.log_tail(100_000), "plugins killed: JACK was held up as the box stopped"

    chain = _chain(before)
    assert [(p[0], p[1], p[3]) for p in chain] == [
        (gain, "gain", False),
        (drive, "overdrive", True),
        (compressor, "compressor", False),
    ]
    assert chain[0][2]["gain"] == -6.0
    assert chain[1][2]["drive"] == 1.0
    assert chain[2][2]["threshold"] == -25.0

    async with _box(config) as box:
        async with _phone(box) as phone:
            assert await phone.replay() == before
            assert phone.states["TEMPO"] == {"bpm": 96.5, "source": "saved"}
        assert await rig.gain_until(_near(-6.0), QUIET_PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


async def test_saved_change_survives_kill_9(
    engine_kind: str, jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """A change that reached board.json is there after SIGKILL and a new start."""
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    async with _box(config) as box:
        async with _phone(box) as phone:
            gain = await phone.add("gain", gain=-6.0)
        before = await _replay(box)
        saved = [(gain, "gain", {"gain": -6.0}, False)]
        await _saved(tmp_path / "data", lambda board: _saved_chain(board) == saved)
        await asyncio.to_thread(box.stop, signal.SIGKILL)
    assert box.returncode == -signal.SIGKILL

    async with _box(config) as box:
        assert await _replay(box) == before
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


@pytest.mark.carla
async def test_board_is_portable_between_engines(jack_server: JackServer, tmp_path: Path) -> None:
    """A board saved under jalv loads under Carla and back, and reads the same levels under both."""
    rig = Rig(jack_server.name, channels=2)
    await rig.open()
    try:
        tracks = [
            {"id": TRACK, "inputs": rig.play_ports[:1], "outputs": rig.rec_ports[:1]},
            {"id": "track_002", "inputs": rig.play_ports[1:], "outputs": rig.rec_ports[1:]},
        ]

        # jalv: track_001 gain −6; track_002 gain −20 into an overdrive driven hard.
        async with _box(_config(tmp_path, jack_server, "jalv", tracks)) as box:
            async with _phone(box) as phone:
                await phone.add("gain", gain=-6.0)
                await phone.add("gain", "track_002", gain=-20.0)
                await phone.add("overdrive", "track_002", drive=1.0)
            jalv_levels = await _steady_levels(rig, -6.0)
            jalv_board = await _replay(box)
        assert jalv_levels[0] == pytest.approx(-6.0, abs=TOLERANCE_DB)
        assert jalv_levels[1] > -60.0, "the overdrive track is silent"

        # Carla loads it and sounds the same; then it changes track_001 to −9.
        async with _box(_config(tmp_path, jack_server, "carla", tracks)) as box:
            assert await _replay(box) == jalv_board
            carla_levels = await _steady_levels(rig, -6.0)
            assert carla_levels[0] == pytest.approx(-6.0, abs=TOLERANCE_DB)
            assert carla_levels[1] == pytest.approx(jalv_levels[1], abs=ENGINES_AGREE_DB)
            async with _phone(box) as phone:
                await phone.set(_chain(jalv_board)[0][0], "gain", -9.0)
            assert await rig.gain_until(_near(-9.0), PROBE) == pytest.approx(-9.0, abs=TOLERANCE_DB)
            carla_board = await _replay(box)

        # And back: jalv loads Carla's board and sounds the same.
        async with _box(_config(tmp_path, jack_server, "jalv", tracks)) as box:
            assert await _replay(box) == carla_board
            back_levels = await _steady_levels(rig, -9.0)
            assert back_levels[0] == pytest.approx(-9.0, abs=TOLERANCE_DB)
            assert back_levels[1] == pytest.approx(carla_levels[1], abs=ENGINES_AGREE_DB)
    finally:
        await rig.close()


async def test_auto_runs_jalv_where_carla_is_hidden(
    jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """engine: auto with APPLIANCE_NO_CARLA=1 plays through jalv and logs why Carla was not used."""
    config = _config(tmp_path, jack_server, "auto", _one_track(rig))
    async with _box(config, env={HIDE_CARLA_ENV: "1"}) as box, _phone(box) as phone:
        health = await asyncio.to_thread(_get_json, box.base + "/healthz")
        assert health["engine"] == "jalv"
        await phone.add("gain", gain=-6.0)
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    assert f"engine: jalv (Carla not used: Carla is hidden by {HIDE_CARLA_ENV}=1)" in box.log_tail(100_000)


def _command_lines() -> list[str]:
    """Every running process's command line."""
    lines = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit():
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=REPLY_TIMEOUT) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


#: 8 s of 1 kHz at −12 dBFS: long enough to step through a whole setlist while recording.
SONG = sine(1000.0, 10 * 48000, 48000, -12.0)


async def _save_three_pedalboards(phone: Phone) -> None:
    """one: gain (snapshots a −9, b −3); two: gain −3, gain −2 (a: the second bypassed, b: both);
    three: gain (a −1, b −4)."""
    first = await phone.add("gain", gain=-6.0)
    await phone.ask("PEDALBOARD_SAVE", name="one")
    await phone.set(first, "gain", -9.0)
    await phone.ask("SNAPSHOT_SAVE", name="a")
    await phone.set(first, "gain", -3.0)
    await phone.ask("SNAPSHOT_SAVE", name="b")
    second = await phone.add("gain", gain=-2.0)
    await phone.ask("PEDALBOARD_SAVE", name="two")
    await phone.bypass(second, True)
    await phone.ask("SNAPSHOT_SAVE", name="a")
    await phone.bypass(second, False)
    await phone.ask("SNAPSHOT_SAVE", name="b")
    await phone.request("PLUGIN_REMOVE", plugin_id=second)
    await phone.set(first, "gain", 0.0)
    await phone.ask("PEDALBOARD_SAVE", name="three")
    await phone.set(first, "gain", -1.0)
    await phone.ask("SNAPSHOT_SAVE", name="a")
    await phone.set(first, "gain", -4.0)
    await phone.ask("SNAPSHOT_SAVE", name="b")


async def test_a_setlist_of_three_pedalboards_plays_through_without_a_gap(
    engine_kind: str, jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """Three pedalboards with two snapshots each, in a setlist, stepped through over the
    protocol while the rig records: never a gap, and each step sounds as it was saved."""
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    steps = [("one", "a", -9.0), ("one", "b", -3.0), ("two", "a", -3.0), ("two", "b", -5.0)]
    steps += [("three", "a", -1.0), ("three", "b", -4.0)]
    entries = [{"pedalboard": board, "snapshot": snapshot} for board, snapshot, _db in steps]
    async with _box(config) as box, _phone(box) as phone:
        await phone.replay()
        await _save_three_pedalboards(phone)
        await phone.ask("SETLIST_SET", entries=entries)  # from the top
        marks: list[tuple[int, int]] = []

        async def step_through() -> None:
            for _ in steps:
                start = rig.position()
                state = await phone.ask("SETLIST_NEXT")
                marks.append((start, rig.position()))
                assert state["data"]["modified"] is False
                await asyncio.sleep(0.45)

        reference, recorded, outcome = await rig.record_during(SONG, step_through, lead_frames=24000)
        rig.require_clean("the setlist's recording")
        assert outcome is None, outcome
    out = recorded[:, 0]
    silent = gaps(out[480:-480], offset=480)
    assert not silent, f"gaps (start, samples) {silent} (steps at {marks})"
    ends = [start for start, _done in marks[1:]] + [len(out) - 4800]
    settled = fade_heard_frames(48000, SERVER_PERIOD) + 960
    for (board, snapshot, db), (_start, done), end in zip(steps, marks, ends, strict=True):
        window = slice(done + settled, end)  # once the step's fade is heard through, to the next step
        level = gain_db(out[window], reference[window])
        assert level == pytest.approx(db, abs=0.2), f"{board}/{snapshot} read {level:.2f} dB, saved {db}"


async def test_meters_and_the_tuner_over_websocket(
    engine_kind: str, jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """A phone that asks for meters reads the track's levels and the compressor's gain
    reduction while a tone plays, and a phone that did not ask gets none; the tuner one
    phone turns on is told to every phone, also to one that connects later, and the box
    is silent until it is off again."""
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    async with _box(config) as box, _phone(box) as metering, _phone(box) as other:
        await metering.replay()
        await other.replay()
        compressor = await metering.add("compressor", threshold=-30.0)
        subscribed = await metering.ask("METERS_SUBSCRIBE", answer="METERS_SUBSCRIBE", on=True)
        assert subscribed["data"] == {"on": True, "rate": 15.0}

        async def frames() -> list[dict[str, Any]]:
            seen: list[dict[str, Any]] = []
            async with asyncio.timeout(REPLY_TIMEOUT):
                while len(seen) < 15:
                    message = await metering._receive()
                    if message["type"] == "METERS":
                        seen.append(message["data"])
            return seen

        _, _, seen = await rig.record_during(sine(1000.0, 3 * 48000, 48000, -12.0), frames, lead_frames=24000)
        rig.require_clean("the tone the meters read")
        assert isinstance(seen, list), seen
        last = seen[-1]
        assert last["tracks"][TRACK]["in"] == pytest.approx(-12.0, abs=1.0), last
        assert last["tracks"][TRACK]["out"] < last["tracks"][TRACK]["in"], f"no gain reduction: {last}"
        assert last["monitors"][compressor]["gr"] > 1.0, f"the compressor's reading is missing: {last}"
        assert last["tuner"] is None
        # The frames came while the rig recorded without an xrun: the box's count stood still.
        counts = [frame["xruns"] for frame in seen]
        assert all(isinstance(c, int) for c in counts) and len(set(counts)) == 1, f"xruns in METERS: {counts}"
        health = await asyncio.to_thread(_get_json, box.base + "/healthz")
        assert health["xruns"] >= counts[-1], (health["xruns"], counts)
        await other.replay()
        assert "METERS" not in other.states, "a phone that never asked was sent meters"

        told = await other.ask("TUNER_SET", answer="TUNER", on=True)
        assert told["data"] == {"on": True}
        async with _phone(box) as late:
            await late.replay()
            assert late.states["TUNER"] == {"on": True}
        _, recorded = await rig.play_and_record(PROBE)
        rig.require_clean("the probe while tuning")
        assert rms_db(recorded[:, 0]) < -90.0, "the box sounded while tuning"
        await other.ws.send(json.dumps({"id": "bad", "type": "TUNER_SET", "data": {"on": "yes"}}))
        while (refused := await other._receive()).get("reply_to") != "bad":
            pass
        assert refused["type"] == "ERROR" and refused["data"]["code"] == "INVALID_VALUE"
        await other.ask("TUNER_SET", answer="TUNER", on=False)
        assert await rig.gain_until(_near(0.0), QUIET_PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)


async def test_a_crashed_virtual_box_leaves_no_jack_server_behind(tmp_path: Path) -> None:
    """kill -9 of a virtual box: its private JACK server ends by itself (cleanly, so that
    JACK frees its slot; eight leaked slots and no server starts on the machine), and the
    box started again on the same data folder runs a server of the same name."""
    config = virtual_config(tmp_path, own_server_name=True, demo=[])
    box = BoxProcess(config)
    await asyncio.to_thread(box.start)
    first = await asyncio.to_thread(_get_json, box.base + "/healthz")
    await asyncio.to_thread(box.stop, signal.SIGKILL)
    assert box.leftovers == [], f"processes outlived the crashed box: {box.leftovers}"
    server = f"jackd -n {first['server']} "
    async with asyncio.timeout(5):  # jackd leads a process group of its own: look for it by name
        while any(server in line for line in _command_lines()):
            await asyncio.sleep(0.05)
    async with _box(config) as again:
        second = await asyncio.to_thread(_get_json, again.base + "/healthz")
    assert second["running"] and second["server"] == first["server"], (first, second)



@pytest.mark.quiet  # beside the other worker, the dead box's clients took up to 3.8 s to leave JACK
async def test_a_crashed_box_leaves_the_guitar_dry_not_silent(jack_server: JackServer, rig: Rig, tmp_path: Path) -> None:
    """On a JACK server that outlives the box (the Pi's), kill -9 of the box while a −6 dB
    board plays: the track sounds dry (0 dB) within :data:`DRY_WITHIN` frames of the kill in
    the recording, and stays dry until the box is back and plays its board again (−6 dB, the
    dry path gone). The silence between is printed.

    The recording of the crash may hold xruns (JACK dropping the dead box's clients): it is
    about what the player hears through them."""
    config = _config(tmp_path, jack_server, "jalv", _one_track(rig))
    box = BoxProcess(config)
    await asyncio.to_thread(box.start)
    try:
        async with _phone(box) as phone:
            await phone.replay()
            gain = await phone.add("gain", gain=-6.0)
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        await _saved(tmp_path / "data", lambda board: _saved_chain(board) == [(gain, "gain", {"gain": -6.0}, False)])

        async def crash() -> None:
            # The box alone: its children end by themselves (the dry-path keeper once it has
            # wired the dry path, however long JACK takes); box.stop() would kill what is left
            # of its group after a second.
            assert box.proc is not None
            os.kill(box.proc.pid, signal.SIGKILL)
            await asyncio.to_thread(box.proc.wait)

        try:
            reference, recorded, _ = await rig.record_during(
                CRASH_TONE, crash, lead_frames=CRASH_AT, timeout=len(CRASH_TONE) / 48000 + CRASH_STALL
            )
        except TimeoutError:
            pytest.fail(f"the rig's recorder stalled for over {CRASH_STALL:g} s after the kill (JACK's graph stood still)")
        out, kill = recorded[:, 0], rig.last_action_frame
        gap, start = longest_gap(out)
        gains = window_gains(out, reference)
        heard = window_gains(reference, np.ones_like(reference))  # a window the recorder missed is silent here too
        wet = np.flatnonzero((np.abs(gains[:-1]) > DRY_DB) | (heard[:-1] < -40.0))  # not dry (the last may be cut)
        dry_from = (int(wet[-1]) + 1) * 480 if wet.size else 0
        print(
            f"silence from {(start - kill) / 48:.1f} ms after the kill, {gap / 48:.1f} ms long; dry "
            f"{(dry_from - kill) / 48:.1f} ms after the kill; {rig.last_take_xruns} xruns in the recording"
        )
        assert dry_from - kill <= DRY_WITHIN, (
            f"not dry within {DRY_WITHIN / 48000:g} s of the kill: dry from {(dry_from - kill) / 48000:.2f} s "
            f"(10 ms windows from the kill on: {np.round(gains[kill // 480 :][:40], 1).tolist()} …)"
        )
        dry = await rig.measure_gain(PROBE)
        assert dry == pytest.approx(0.0, abs=TOLERANCE_DB), f"not dry after the crash ({dry:.1f} dB)"
    finally:
        await asyncio.to_thread(box.stop, signal.SIGKILL)
    async with _box(config):
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


async def test_a_full_disk_keeps_the_box_playing_and_loses_nothing_once_there_is_room(
    jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """The data partition fills up: a knob change still sounds, /healthz says the box cannot
    save, and once there is room again the change is saved without anyone asking."""
    with small_partition(tmp_path / "data", "512k") as data:
        # no copy of the LV2 scan: it would fill this partition before the test does
        config = _config(tmp_path, jack_server, "jalv", _one_track(rig), scanned=False)
        async with _box(config) as box, _phone(box) as phone:
            await phone.replay()
            gain = await phone.add("gain", gain=-6.0)
            await _saved(data, lambda board: _saved_chain(board) == [(gain, "gain", {"gain": -6.0}, False)])
            filler = data / "filler"
            with contextlib.suppress(OSError), filler.open("wb") as fill:
                while True:
                    fill.write(bytes(4096))
                    fill.flush()
            await phone.set(gain, "gain", -3.0)
            assert await rig.gain_until(_near(-3.0), PROBE) == pytest.approx(-3.0, abs=TOLERANCE_DB)
            async with asyncio.timeout(SAVE_TIMEOUT):
                while not (await asyncio.to_thread(_get_json, box.base + "/healthz"))["saving"].startswith("failing"):
                    await asyncio.sleep(0.1)
            filler.unlink()
            await _saved(data, lambda board: _saved_chain(board) == [(gain, "gain", {"gain": -3.0}, False)])
            assert (await asyncio.to_thread(_get_json, box.base + "/healthz"))["saving"] == "ok"


# -- the JACK server stalls or goes away --------------------------------------------------


async def _engine_event(phone: Phone, kind: str, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
    """The next ``ENGINE_EVENT`` of ``kind`` a phone is sent."""
    async with asyncio.timeout(timeout):
        while True:
            message = await phone._receive()
            if message["type"] == "ENGINE_EVENT" and message["data"]["kind"] == kind:
                return message


def _health_status(base: str) -> int:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=REPLY_TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_a_stalled_jack_server_is_told_to_phones_and_starves_the_watchdog(
    engine_kind: str, jack_server: JackServer, rig: Rig, tmp_path: Path, notify_socket: socket.socket
) -> None:
    """JACK stops running cycles (SIGSTOP: a hung driver or a client that froze the graph):
    the phones are told (ENGINE_EVENT engine-stalled), /healthz answers 503 and the box stops
    petting systemd's watchdog, which would restart it; once JACK runs again the phones are
    told, the watchdog is petted again and the board sounds as before."""
    env = {"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "1000000"}
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    pid = jack_server.pid
    assert pid is not None
    async with _box(config, env) as box, _phone(box) as phone:
        await phone.replay()
        gain = await phone.add("gain", gain=-6.0)
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        assert any("WATCHDOG=1" in d for d in received(notify_socket)), "the watchdog was never petted"
        os.kill(pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            await _engine_event(phone, "engine-stalled")
            print(f"stall told to the phone {(time.monotonic() - stopped) * 1000:.0f} ms after SIGSTOP")
            assert await asyncio.to_thread(_health_status, box.base) == 503
            received(notify_socket)
            await asyncio.sleep(2.0)  # four watchdog intervals
            starved = received(notify_socket)
            assert not [d for d in starved if "WATCHDOG=1" in d], f"petted while stalled: {starved}"
        finally:
            os.kill(pid, signal.SIGCONT)
        await _engine_event(phone, "engine-restored")
        assert await asyncio.to_thread(_health_status, box.base) == 200
        async with asyncio.timeout(REPLY_TIMEOUT):
            while not any("WATCHDOG=1" in d for d in received(notify_socket)):
                await asyncio.sleep(0.1)
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        assert _chain(await _replay(box)) == [(gain, "gain", {"gain": -6.0}, False)]


async def test_a_killed_jack_server_brings_the_box_back_with_its_board_when_it_returns(
    engine_kind: str, jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """The JACK server dies (kill -9) under a playing board: the phones are told, /healthz
    answers 503; when the server is started again (systemd restarts appliance-jack) the box
    starts its engine on it by itself, tells the phones and plays the same board."""
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    async with _box(config) as box, _phone(box) as phone:
        await phone.replay()
        gain = await phone.add("gain", gain=-6.0)
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        pid = jack_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await _engine_event(phone, "engine-died")
        assert await asyncio.to_thread(_health_status, box.base) == 503
        await jack_server.stop()
        with contextlib.suppress(Exception):
            await rig.close()
        await jack_server.start()
        started = time.monotonic()
        await rig.open()
        await _engine_event(phone, "engine-restored")
        print(f"the box played again {(time.monotonic() - started) * 1000:.0f} ms after JACK was back")
        assert await asyncio.to_thread(_health_status, box.base) == 200
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        assert _chain(await _replay(box)) == [(gain, "gain", {"gain": -6.0}, False)]


async def test_a_box_started_before_its_jack_server_waits_for_it(
    jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """On the Pi the box may start before JACK answers (appliance-jack still starting, or
    restarting): the box serves the phones meanwhile (/healthz 503) instead of exiting, and
    plays its saved board as soon as the server is there."""
    config = _config(tmp_path, jack_server, "jalv", _one_track(rig))
    async with _box(config) as box, _phone(box) as phone:
        await phone.replay()
        gain = await phone.add("gain", gain=-6.0)
        await _saved(tmp_path / "data", lambda board: _saved_chain(board) == [(gain, "gain", {"gain": -6.0}, False)])
    await rig.close()
    await jack_server.stop()
    box = BoxProcess(config)
    await asyncio.to_thread(box.start, False)
    try:
        assert await asyncio.to_thread(_health_status, box.base) == 503
        async with _phone(box) as phone:
            await phone.replay()
            await jack_server.start()
            await rig.open()
            await _engine_event(phone, "engine-restored")
        assert await asyncio.to_thread(_health_status, box.base) == 200
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        assert _chain(await _replay(box)) == [(gain, "gain", {"gain": -6.0}, False)]
    finally:
        await asyncio.to_thread(box.stop)
