"""The player's own files: a cabinet IR picked on a convolver is heard on the rig, and kept.

What a player would notice if these broke: the IR they picked is not the one
they hear (or none is), a file outside their folder is loaded, the board
comes back after a restart without its IR, or a second IR cuts the sound.

The convolver is the catalog's ``cabinet``, x42's convoLV2 (in Debian's
x42-plugins): zero latency, its output the input convolved with the file at
half gain (its fixed IR gain), so an impulse response that is one tap of
−6 dB 240 frames late is heard as the dry signal 240 frames later and 12 dB
down.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.core.board import BOARD_FORMAT
from appliance.core.controls import FileParameter
from appliance.core.errors import InvalidValue, NameTaken
from appliance.engine.jack.server import JackServer
from appliance.plugins import lilv
from appliance.store.pedalboards import PedalboardStore
from appliance.store.userfiles import UserFiles
from tests.boxproc import scan_cache
from tests.rig import Rig, gain_db, gaps, latency_frames, noise, sine
from tests.test_box_e2e import REPLY_TIMEOUT, TRACK, Phone, _box, _config, _one_track, _phone
from tests.test_box_e2e import engine_kind as engine_kind  # the fixture: jalv, and Carla where installed

pytestmark = [pytest.mark.timeout(120)]
on_a_loop = pytest.mark.asyncio(loop_scope="function")

CONVOLVER = "http://gareus.org/oss/lv2/convoLV2#Mono"
#: convoLV2 plays an impulse response at half gain.
IR_GAIN_DB = -6.0
#: A take for latency and level: 0.25 s of white noise at −20 dBFS.
NOISE = noise(12000, -20.0)
#: How many clean takes a newly picked file has to be heard in (it loads in the plugin's worker).
HEARD_WITHIN_TAKES = 20
#: How long a setlist's next pedalboard may take to load in warm standby.
WARM_WAIT = 3.0


def write_impulse(path: Path, delay: int, level_db: float, length: int = 1024) -> None:
    """A mono 48 kHz 16-bit WAV with one tap of ``level_db`` at frame ``delay``."""
    taps = np.zeros(length, dtype=np.int16)
    taps[delay] = min(32767, round(32768 * 10 ** (level_db / 20)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48000)
        out.writeframes(taps.tobytes())


async def heard(rig: Rig) -> tuple[int, float]:
    """(latency in frames, gain in dB) of the track on one clean take of noise."""
    reference, recorded = await rig.play_and_record(NOISE)
    rig.require_clean("a take of noise")
    out = recorded[:, 0]
    lag = latency_frames(out, reference, max_lag=4000)
    if lag <= 0:
        return lag, gain_db(out, reference)
    return lag, gain_db(out[lag:], reference[:-lag])


async def heard_as(rig: Rig, delay: int, level_db: float) -> tuple[int, float]:
    """Takes until the track is heard ``delay`` frames late at ``level_db`` (a file loading);
    the last reading."""
    reading = (0, 0.0)
    for _ in range(HEARD_WITHIN_TAKES):
        reading = await heard(rig)
        if reading[0] == delay and abs(reading[1] - level_db) < 0.1:
            break
    return reading


#: The length of ``late.wav``: 5 s (a room's, not a cabinet's), so that reading it takes a while.
LONG_IR = 5 * 48000


def _files(data: Path) -> None:
    write_impulse(data / "files" / "ir" / "late.wav", 240, -6.0, LONG_IR)
    write_impulse(data / "files" / "ir" / "direct.wav", 0, -12.0)


def _upload(base: str, path: Path) -> dict[str, object]:
    """Send ``path`` to the box as the phone's "Add files" does; the box's answer."""
    query = urllib.parse.urlencode({"name": path.name})
    request = urllib.request.Request(f"{base}/files?{query}", data=path.read_bytes(), method="POST")
    with urllib.request.urlopen(request, timeout=REPLY_TIMEOUT) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


async def _convolver(phone: Phone) -> str:
    added = await phone.request("PLUGIN_ADD", name="cabinet")
    plugin_id = str(added["data"]["plugin_id"])
    assert added["data"]["files"] == {"impulse": None}, "PLUGIN_ADD does not say the plugin loads a file"
    return plugin_id


# -- the folder ---------------------------------------------------------------------------


def test_a_file_is_named_inside_the_players_own_folder(tmp_path: Path) -> None:
    """Only a regular file of the right folder is ever handed to a plugin: no ``..``, no
    absolute path, no hidden file, no link that leads out, nothing missing."""
    root = tmp_path / "files"
    write_impulse(root / "ir" / "cab.wav", 0, 0.0)
    (root / "models").mkdir()
    (tmp_path / "secret.wav").write_bytes(b"x")
    (root / "ir" / "link.wav").symlink_to(tmp_path / "secret.wav")
    (root / "ir" / ".partial.wav").write_bytes(b"x")
    files = UserFiles(root)
    assert files.path("ir/cab.wav", ("ir",)) == (root / "ir" / "cab.wav").resolve()
    assert files.path("ir/cab.wav") == (root / "ir" / "cab.wav").resolve()  # no types: any folder
    for bad in (
        "../secret.wav",
        "ir/../../secret.wav",
        "/etc/passwd",
        "ir/link.wav",
        "ir/.partial.wav",
        "ir/missing.wav",
        "cab.wav",
        "ir\\cab.wav",
        "ir/cab.wav\x00",
        "",
        7,
    ):
        with pytest.raises(InvalidValue):
            files.path(bad)
    with pytest.raises(InvalidValue, match="takes them from models"):
        files.path("ir/cab.wav", ("nam",))
    # Neural Amp Modeler's LV2 plugin says "nam,nammodel": its models only, as the page offers them.
    nam = FileParameter("model", "urn:nam#model", "Neural Model", ("nam", "nammodel"))
    assert nam.describe()["folders"] == ["models"]
    with pytest.raises(InvalidValue, match="takes them from models"):
        files.path("ir/cab.wav", nam.file_types)
    assert FileParameter("impulse", "urn:ir", "impulse").describe()["folders"] == ["ir", "models", "other"]
    assert files.listing() == {"ir": ["ir/cab.wav", "ir/link.wav"], "models": [], "other": []}


# -- heard on the rig ---------------------------------------------------------------------


@pytest.mark.carla
@on_a_loop
async def test_a_picked_impulse_response_is_heard_and_comes_back_after_a_restart(
    jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """Under Carla: an IR of one tap at 240 frames and −6 dB picked on the convolver is heard
    as the dry signal 240 frames later and 6 dB down (and the convolver's own −6 dB); another
    (one tap at 0, −12 dB) replaces it while a tone plays with no gap in the sound; the board
    keeps the pick by name, and the box started again plays it. Both IRs reach the box as a
    phone sends them (``POST /files``).

    (convoLV2 starts a new file with no history: an IR whose sound starts late would be
    silent that long after the switch; a cabinet's starts at once, as ``direct.wav`` does.)"""
    config = _config(tmp_path, jack_server, "carla", _one_track(rig))
    data = tmp_path / "data"
    _files(tmp_path / "made")
    async with _box(config) as box:
        for made in ("late.wav", "direct.wav"):
            sent = await asyncio.to_thread(_upload, box.base, tmp_path / "made" / "files" / "ir" / made)
            assert sent == {"files": [f"ir/{made}"]}
        dry_lag, dry_gain = await heard(rig)
        assert dry_gain == pytest.approx(0.0, abs=0.1)
        async with _phone(box) as phone:
            convolver = await _convolver(phone)
            picked = await phone.request(
                "PLUGIN_FILE", plugin_id=convolver, file_id="impulse", file="ir/late.wav"
            )
            assert picked["type"] == "PLUGIN_FILE" and picked["data"]["file"] == "ir/late.wav"
            lag, gain = await heard_as(rig, dry_lag + 240, -6.0 + IR_GAIN_DB)
            assert (lag - dry_lag, round(gain, 1)) == (240, -6.0 + IR_GAIN_DB), (
                "the picked IR is not what is heard"
            )

            async def pick_direct() -> None:
                await phone.request(
                    "PLUGIN_FILE", plugin_id=convolver, file_id="impulse", file="ir/direct.wav"
                )

            tone = sine(1000.0, 48000, 48000, -12.0)
            _, recorded, _ = await rig.record_during(tone, pick_direct, lead_frames=9600)
            rig.require_clean("the take across the second pick")
            assert gaps(recorded[:, 0][dry_lag + 240 :]) == [], "the sound stopped while the second IR loaded"
            lag, gain = await heard_as(rig, dry_lag, -12.0 + IR_GAIN_DB)
            assert (lag - dry_lag, round(gain, 1)) == (0, -12.0 + IR_GAIN_DB)
        saved = await _saved_files(data)
        assert saved == {"impulse": "ir/direct.wav"}
    async with _box(config):
        lag, gain = await heard_as(rig, dry_lag, -12.0 + IR_GAIN_DB)
        assert (lag - dry_lag, round(gain, 1)) == (0, -12.0 + IR_GAIN_DB), (
            "the restarted box lost the board's IR"
        )


@on_a_loop
async def test_a_file_outside_the_folder_or_under_jalv_changes_nothing(
    jack_server: JackServer, rig: Rig, tmp_path: Path, engine_kind: str
) -> None:
    """A name that leaves the player's folder is refused under either engine; under jalv,
    which has no way to set a plugin's file, a good one is refused as UNSUPPORTED. Either
    way the plugin keeps its sound and the board names no file."""
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    data = tmp_path / "data"
    _files(data)
    (data / "secret.wav").write_bytes((data / "files" / "ir" / "late.wav").read_bytes())
    async with _box(config) as box:
        async with _phone(box) as phone:
            listed = await phone.request("FILE_LIST")
            assert listed["data"]["files"] == {
                "ir": ["ir/direct.wav", "ir/late.wav"],
                "models": [],
                "other": [],
            }
            convolver = await _convolver(phone)
            for name, code in [("../secret.wav", "INVALID_VALUE"), ("ir/missing.wav", "INVALID_VALUE")] + (
                [("ir/late.wav", "UNSUPPORTED")] if engine_kind == "jalv" else []
            ):
                refused = await phone.refused(
                    "PLUGIN_FILE", plugin_id=convolver, file_id="impulse", file=name
                )
                assert refused["data"]["code"] == code, (name, refused)
            refused = await phone.refused(
                "PLUGIN_FILE", plugin_id=convolver, file_id="cab", file="ir/late.wav"
            )
            assert refused["data"]["code"] == "UNKNOWN_PARAMETER"
            state = await phone.ask("BOARD_GET", "BOARD_STATE")
        (plugin,) = state["data"]["tracks"][0]["plugins"]
        assert plugin["files"] == {"impulse": None}
        lag, _gain = await heard(rig)
        assert lag <= 0 or _gain < -40.0, "the convolver sounds as if it had loaded a file"


async def _saved_files(data: Path, expected: dict[str, str] | None = None) -> dict[str, str] | None:
    """The convolver's files in board.json once the debounced save has written them (and,
    given ``expected``, once they are that)."""
    async with asyncio.timeout(REPLY_TIMEOUT):
        while True:
            board = json.loads((data / "board.json").read_text()) if (data / "board.json").exists() else {}
            chains = [t.get("chain", []) for t in board.get("tracks", []) if t.get("id") == TRACK]
            files = next(
                (p.get("files") for chain in chains for p in chain if p.get("uri") == CONVOLVER), None
            )
            if files and (expected is None or files == expected):
                return dict(files)
            await asyncio.sleep(0.1)


@pytest.mark.carla
@on_a_loop
async def test_a_pedalboard_keeps_its_ir_and_a_warm_switch_to_it_has_no_gap(
    jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """Under Carla: two pedalboards, the same cabinet with a different IR each. Loading the
    first plays its IR; the setlist's NEXT to the second (loaded beforehand in warm standby)
    plays the second's IR with no gap in a tone across the switch.

    Broken, the warm board would load without its file (or stand in for a board with
    another) and NEXT would load the board cold or play the wrong cabinet."""
    config = _config(tmp_path, jack_server, "carla", _one_track(rig))
    _files(tmp_path / "data")
    async with _box(config) as box:
        dry_lag, _ = await heard(rig)
        async with _phone(box) as phone:
            convolver = await _convolver(phone)
            await phone.request("PLUGIN_FILE", plugin_id=convolver, file_id="impulse", file="ir/direct.wav")
            await phone.ask("PEDALBOARD_SAVE", name="Direct")
            await phone.request("PLUGIN_FILE", plugin_id=convolver, file_id="impulse", file="ir/late.wav")
            await phone.ask("PEDALBOARD_SAVE", name="Late")
            await phone.ask("SETLIST_SET", entries=[{"pedalboard": "Direct"}, {"pedalboard": "Late"}])
            await phone.ask("SETLIST_GO", position=0)
            lag, gain = await heard_as(rig, dry_lag, -12.0 + IR_GAIN_DB)
            assert (lag - dry_lag, round(gain, 1)) == (0, -12.0 + IR_GAIN_DB), "the first pedalboard's IR"
            await asyncio.sleep(WARM_WAIT)  # the second loads in warm standby meanwhile

            async def next_board() -> None:
                await phone.ask("SETLIST_NEXT")

            tone = sine(1000.0, 48000, 48000, -12.0)
            _, recorded, _ = await rig.record_during(tone, next_board, lead_frames=9600)
            rig.require_clean("the take across NEXT")
            out = recorded[:, 0][dry_lag + 240 : len(tone) - 4800]
            assert gaps(out) == [], "the sound stopped as the warm pedalboard came in"
            lag, gain = await heard(rig)
            assert (lag - dry_lag, round(gain, 1)) == (240, -6.0 + IR_GAIN_DB), "the second pedalboard's IR"
            health = await phone.ask("HEALTH_GET", "HEALTH")
        assert health["data"].get("warm_switches", 0) >= 1, "the switch did not use warm standby"


@pytest.mark.carla
@on_a_loop
async def test_a_pedalboard_whose_file_has_gone_loads_without_it_and_says_which(
    jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """A pedalboard names an IR the player has since deleted: it loads (its other plugins and
    values as saved), every phone is told which file is missing, and the board keeps the
    name, so that the file put back is picked again by the next load."""
    config = _config(tmp_path, jack_server, "carla", _one_track(rig))
    data = tmp_path / "data"
    _files(data)
    async with _box(config) as box, _phone(box) as phone, _phone(box) as other:
        await other.replay()
        convolver = await _convolver(phone)
        await phone.request("PLUGIN_FILE", plugin_id=convolver, file_id="impulse", file="ir/direct.wav")
        await phone.ask("PEDALBOARD_SAVE", name="Direct")
        (data / "files" / "ir" / "direct.wav").unlink()
        await phone.ask("PEDALBOARD_LOAD", name="Direct")
        told = (await other.heard("ENGINE_EVENT"))["data"]
        assert told["kind"] == "file-missing" and "'ir/direct.wav'" in told["message"], told
        state = await phone.ask("BOARD_GET", "BOARD_STATE")
        (plugin,) = state["data"]["tracks"][0]["plugins"]
        assert plugin["plugin"] == "cabinet" and plugin["files"] == {"impulse": "ir/direct.wav"}


# -- rename and delete ----------------------------------------------------------------------


def test_a_file_gets_its_new_name_beside_the_old_one_and_loses_the_old_one_on_delete(tmp_path: Path) -> None:
    """A rename's first step: the file under both names (so a power cut loses neither); a
    name that is not a plain name, or is taken, changes nothing; delete takes one name away."""
    root = tmp_path / "files"
    write_impulse(root / "ir" / "cab.wav", 0, 0.0)
    write_impulse(root / "ir" / "other.wav", 0, 0.0)
    files = UserFiles(root)
    for bad in ("", " cab.wav", ".hidden.wav", "a/b.wav", "..", "x\\y.wav", "nul\x00.wav", "é" * 128, 7):
        with pytest.raises(InvalidValue):
            files.add_name("ir/cab.wav", bad)
    with pytest.raises(NameTaken):
        files.add_name("ir/cab.wav", "other.wav")
    with pytest.raises(InvalidValue):
        files.add_name("ir/missing.wav", "new.wav")
    assert files.listing()["ir"] == ["ir/cab.wav", "ir/other.wav"], "a refused rename changed the folder"
    assert files.add_name("ir/cab.wav", "4x12 V30.wav") == "ir/4x12 V30.wav"
    assert (root / "ir" / "4x12 V30.wav").samefile(root / "ir" / "cab.wav")
    files.delete("ir/cab.wav")
    assert files.listing()["ir"] == ["ir/4x12 V30.wav", "ir/other.wav"]
    with pytest.raises(InvalidValue):
        files.delete("ir/cab.wav")


def _seed_board(data: Path, files: dict[str, str]) -> None:
    """A saved board with one cabinet that loads ``files`` (as if picked before a restart)."""
    cabinet = {"id": "plugin_1", "name": "Cabinet", "plugin": "cabinet", "uri": CONVOLVER}
    chain = [cabinet | {"bypass": False, "values": {}, "files": files}]
    board = {"format": BOARD_FORMAT, "next_number": 2, "tracks": [{"id": TRACK, "chain": chain}]}
    (data / "board.json").write_text(json.dumps(board))


@on_a_loop
async def test_a_renamed_file_stays_picked_everywhere_and_a_deleted_one_is_told_missing(
    jack_server: JackServer, rig: Rig, tmp_path: Path, engine_kind: str
) -> None:
    """The cabinet plays ``ir/late.wav`` and the pedalboard "Late" names it. Renamed from one
    phone, the other phone is told the plugin's new file name and the new list; board.json
    and "Late" name the new one, the board does not read as changed, and (under Carla) the
    cabinet sounds the same, before and after "Late" is loaded again. Deleted, it leaves
    every phone's list, and loading "Late" says which file is missing.

    Broken, renaming an IR would drop it from every pedalboard that used it, unnoticed
    until the next gig."""
    carla = engine_kind == "carla"
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    data = tmp_path / "data"
    _files(data)
    if not carla:  # jalv cannot set a file: the board names it from before, as after a move from Carla
        _seed_board(data, {"impulse": "ir/late.wav"})
    new = "ir/4x12 late.wav"
    async with _box(config) as box, _phone(box) as phone, _phone(box) as other:
        convolver, dry_lag = "plugin_1", 0
        if carla:
            dry_lag, _ = await heard(rig)
            convolver = await _convolver(phone)
            await phone.request("PLUGIN_FILE", plugin_id=convolver, file_id="impulse", file="ir/late.wav")
            lag, gain = await heard_as(rig, dry_lag + 240, -6.0 + IR_GAIN_DB)
            assert (lag - dry_lag, round(gain, 1)) == (240, -6.0 + IR_GAIN_DB), "the picked IR is not heard"
        await other.replay()
        await phone.ask("PEDALBOARD_SAVE", name="Late")
        for bad, code in [
            ("direct.wav", "NAME_TAKEN"),
            ("../x.wav", "INVALID_VALUE"),
            (".x.wav", "INVALID_VALUE"),
        ]:
            refused = await phone.refused("FILE_RENAME", file="ir/late.wav", new_name=bad)
            assert refused["data"]["code"] == code, (bad, refused)
        listed = await phone.ask("FILE_RENAME", "FILE_LIST", file="ir/late.wav", new_name="4x12 late.wav")
        assert listed["data"]["files"]["ir"] == [new, "ir/direct.wav"]
        told = (await other.heard("PLUGIN_FILE"))["data"]
        assert (told["plugin_id"], told["file_id"], told["file"]) == (convolver, "impulse", new)
        assert (await other.heard("FILE_LIST"))["data"]["files"]["ir"] == [new, "ir/direct.wav"]
        assert PedalboardStore(data).read("Late").board["tracks"][0]["chain"][0]["files"] == {"impulse": new}
        assert (await _saved_files(data, {"impulse": new})) == {"impulse": new}
        state = await phone.ask("SETLIST_GET")
        assert state["data"]["modified"] is False, "a rename made the board read as changed"
        if carla:
            assert await heard(rig) == (dry_lag + 240, pytest.approx(-6.0 + IR_GAIN_DB, abs=0.1))
            await phone.ask("PEDALBOARD_LOAD", name="Late")
            lag, gain = await heard_as(rig, dry_lag + 240, -6.0 + IR_GAIN_DB)
            assert (lag - dry_lag, round(gain, 1)) == (240, -6.0 + IR_GAIN_DB), "'Late' lost its IR"
            (cabinet,) = (await phone.ask("BOARD_GET", "BOARD_STATE"))["data"]["tracks"][0]["plugins"]
            await phone.request(
                "PLUGIN_FILE", plugin_id=cabinet["plugin_id"], file_id="impulse", file="ir/direct.wav"
            )
            state = await phone.ask("SETLIST_GET")
            assert state["data"]["modified"] is True, "another IR picked: the board should read as changed"

        listed = await phone.ask("FILE_DELETE", "FILE_LIST", file=new)
        assert listed["data"]["files"]["ir"] == ["ir/direct.wav"]
        assert (await other.heard("FILE_LIST"))["data"]["files"]["ir"] == ["ir/direct.wav"]
        await phone.ask("PEDALBOARD_LOAD", name="Late")
        while (told := (await other.heard("ENGINE_EVENT"))["data"])["kind"] != "file-missing":
            pass
        assert repr(new) in told["message"], told


NAM = "http://github.com/mikeoliphant/neural-amp-modeler-lv2"


def write_nam_model(path: Path, delay: int) -> None:
    """A tiny WaveNet ``.nam`` model that is exactly linear: its output is the input ``delay``
    frames late at half the level (−6 dB). One layer of one channel whose LeakyReLU has a slope
    of 1 (the identity); the first tap of its kernel of 2, dilated by ``delay``, is the late
    one, the head's scale the level. NAM 0.2.3's engine (NeuralAudio) loads WaveNet and LSTM
    models, not the ``Linear`` architecture."""
    model = {
        "version": "0.7.0",
        "architecture": "WaveNet",
        "sample_rate": 48000,
        "config": {
            "layers": [
                {
                    "input_size": 1,
                    "condition_size": 1,
                    "channels": 1,
                    "head_size": 1,
                    "kernel_size": 2,
                    "dilations": [delay],
                    "activation": {"type": "LeakyReLU", "negative_slope": 1.0},
                    "gated": False,
                    "head_bias": False,
                }
            ],
            "head": None,
            "head_scale": 0.5,
        },
        # rechannel, conv (2 taps), conv bias, input mixin, 1x1, 1x1 bias, head rechannel, head scale
        "weights": [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.5],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model))


@pytest.mark.carla
@on_a_loop
async def test_an_amp_model_sent_from_the_phone_is_heard_where_nam_is_installed(
    jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """Under Carla, where Neural Amp Modeler is installed: a ``.nam`` model sent as the phone
    sends it goes to the amp models, the catalog's "Amp model (NAM)" loads it, and it is heard:
    its 5 frames late and 6 dB down; the box started again plays it."""
    if NAM not in lilv.load_plugins(cache=scan_cache()):
        pytest.skip(f"Neural Amp Modeler ({NAM}) is not installed here: it is not in Debian (README, Carla)")
    config = _config(tmp_path, jack_server, "carla", _one_track(rig))
    write_nam_model(tmp_path / "made" / "Late half.nam", 5)
    async with _box(config) as box:
        sent = await asyncio.to_thread(_upload, box.base, tmp_path / "made" / "Late half.nam")
        assert sent == {"files": ["models/Late half.nam"]}
        dry_lag, _ = await heard(rig)
        async with _phone(box) as phone:
            added = await phone.request("PLUGIN_ADD", name="amp_model")
            model = str(added["data"]["plugin_id"])
            assert added["data"]["files"] == {"model": None}
            await phone.request("PLUGIN_FILE", plugin_id=model, file_id="model", file="models/Late half.nam")
            await heard_as(rig, dry_lag + 5, -6.0)  # the model loads in the plugin's worker
            lag, gain = await heard(rig)  # and settles in a take or two more
            assert (lag - dry_lag, round(gain, 1)) == (5, -6.0), "the picked amp model is not what is heard"
    async with _box(config):
        await heard_as(rig, dry_lag + 5, -6.0)
        lag, gain = await heard(rig)
        assert (lag - dry_lag, round(gain, 1)) == (5, -6.0), "the restarted box lost the amp model"
