"""A backup of everything the player made, and its restore, on a real box with the rig.

What a player would notice if these broke: a backup without the change they made a moment
ago, a restore that brings back a different sound (or half of the old one and half of the
new), a wrong or damaged archive that wipes their pedalboards, or a box that does not come
back after the restore.

The archive's own rules (what is in it, every refusal, power cuts mid-restore) are checked
in tests/test_backup.py; here the whole path: the phone's upload and pick, the download,
a wiped card, the restore over HTTP, and the sound on the rig afterwards.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from appliance.engine.jack.server import JackServer
from tests.boxproc import BoxProcess
from tests.rig import Rig
from tests.test_box_e2e import (
    PROBE,
    REPLY_TIMEOUT,
    TOLERANCE_DB,
    _box,
    _config,
    _near,
    _one_track,
    _phone,
    _replay,
)
from tests.test_box_e2e import engine_kind as engine_kind  # the fixture: jalv, and Carla where installed
from tests.test_user_files import IR_GAIN_DB, heard, heard_as, write_impulse

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(180)]

#: How long the box may take to stop and start again with a restored backup.
BACK_TIMEOUT = 60.0


def _http(base: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request (POST when there is a body); the status and the body of the answer."""
    request = urllib.request.Request(base + path, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=REPLY_TIMEOUT) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _upload(base: str, path: Path) -> dict[str, Any]:
    status, body = _http(base, "/files?" + urllib.parse.urlencode({"name": path.name}), path.read_bytes())
    assert status == 201, body
    answer: dict[str, Any] = json.loads(body)
    return answer


async def _back(box: BoxProcess, watching: Any) -> None:
    """Wait for the box to stop (``watching``, a phone connected before, is closed) and to
    answer again with a running engine."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(BACK_TIMEOUT):
            while True:
                await watching.ws.recv()
    async with asyncio.timeout(BACK_TIMEOUT):
        while True:
            try:
                status, body = await asyncio.to_thread(_http, box.base, "/healthz")
                if status == 200 and json.loads(body).get("running"):
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)


async def test_a_backup_restored_on_a_wiped_card_brings_back_the_same_board_and_sound(
    engine_kind: str, jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """The player's evening: a gain at −9 dB (under Carla, a cabinet IR uploaded from the phone
    and picked on the convolver: heard 240 frames late), saved as a pedalboard; a backup
    downloaded a moment later; the card wiped; the backup restored from the phone: the box
    starts again by itself with the same board, pedalboard, files and sound."""
    config = _config(tmp_path, jack_server, engine_kind, _one_track(rig))
    data = tmp_path / "data"
    write_impulse(tmp_path / "made" / "late.wav", 240, -6.0)
    carla = engine_kind == "carla"
    async with _box(config) as box, _phone(box) as phone:
        await phone.replay()
        dry_lag = 0
        assert await asyncio.to_thread(_upload, box.base, tmp_path / "made" / "late.wav") == {
            "files": ["ir/late.wav"]
        }
        gain = await phone.add("gain", gain=-9.0)
        if carla:
            dry_lag = (await heard(rig))[0]
            convolver = str((await phone.request("PLUGIN_ADD", name="cabinet"))["data"]["plugin_id"])
            await phone.request("PLUGIN_FILE", plugin_id=convolver, file_id="impulse", file="ir/late.wav")
        await phone.ask("PEDALBOARD_SAVE", name="Gig")
        await phone.set(gain, "gain", -9.5)  # a moment later, not saved in the pedalboard
        status, archive = await asyncio.to_thread(_http, box.base, "/backup")
        assert status == 200
        expected = -9.5 + (-6.0 + IR_GAIN_DB if carla else 0.0)
        sound = await _heard(rig, carla, dry_lag, expected)
        before = await _replay(box)
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        names = set(zipped.namelist())
    assert {"backup.json", "board.json", "pedalboards/Gig.json", "files/ir/late.wav"} <= names
    assert json.loads(zipfile.ZipFile(io.BytesIO(archive)).read("board.json"))["tracks"][0]["chain"][0][
        "values"
    ] == {"gain": -9.5}, "the backup missed the change made a moment before it"

    shutil.rmtree(data)
    # What a power cut leaves of a backup being made and of an upload: swept at the start.
    cut = [data / ".incoming-backup-0123.zip", data / "..incoming-backup-0123.zip.77.tmp"]
    cut.append(data / "files" / "ir" / ".incoming-abcd.part")
    for path in cut:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PK half")
    async with _box(config) as box:
        assert [p for p in cut if p.exists()] == [], "a cut-short temporary stayed on the card"
        async with _phone(box) as phone:
            assert await phone.replay() == [], "the wiped box is not empty"
            assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
            status, body = await asyncio.to_thread(_http, box.base, "/restore", archive)
            assert status == 200, body
            assert json.loads(body)["restored"]["pedalboards"] == 1
            await _back(box, phone)
        async with _phone(box) as phone:
            assert await phone.replay() == before, "the restored board is not the one backed up"
            assert [
                p["name"] for p in (await phone.ask("PEDALBOARD_LIST", "PEDALBOARDS"))["data"]["pedalboards"]
            ] == ["Gig"]
            assert (await phone.ask("FILE_LIST", "FILE_LIST"))["data"]["files"]["ir"] == ["ir/late.wav"]
        assert await _heard(rig, carla, dry_lag, expected) == pytest.approx(sound, abs=TOLERANCE_DB), (
            "the restored box does not sound the same"
        )
    assert (data / "files" / "ir" / "late.wav").read_bytes() == (tmp_path / "made" / "late.wav").read_bytes()
    assert not (data / ".restore").exists()


async def _heard(rig: Rig, carla: bool, dry_lag: int, level_db: float) -> tuple[int, float]:
    """(frames late, dB) the track is heard at once it settles at ``level_db`` (and, under
    Carla, the IR's 240 frames); the same sound twice is the same lag and within
    ``TOLERANCE_DB`` (rounding both would split readings either side of a boundary)."""
    if carla:
        lag, gain = await heard_as(rig, dry_lag + 240, level_db)
        return lag - dry_lag, gain
    gain = await rig.gain_until(_near(level_db), PROBE)
    return 0, gain


async def test_a_refused_backup_changes_nothing_and_the_box_plays_on(
    jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """A zip that is not a backup (a vendor's IR pack sent to the wrong place) and a backup
    whose pedalboard is damaged are refused with the reason, before anything is replaced:
    the board, its sound and the pedalboards stay, and the box does not start again."""
    config = _config(tmp_path, jack_server, "jalv", _one_track(rig))
    async with _box(config) as box, _phone(box) as phone:
        await phone.replay()
        await phone.add("gain", gain=-6.0)
        await phone.ask("PEDALBOARD_SAVE", name="Gig")
        status, good = await asyncio.to_thread(_http, box.base, "/backup")
        assert status == 200
        pack = io.BytesIO()
        with zipfile.ZipFile(pack, "w") as zipped:
            zipped.writestr("V30.wav", b"RIFF")
        damaged = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(good)) as source, zipfile.ZipFile(damaged, "w") as zipped:
            for name in source.namelist():
                zipped.writestr(name, b"{not json" if name.startswith("pedalboards/") else source.read(name))
        for archive, reason in (
            (pack.getvalue(), "not a backup"),
            (damaged.getvalue(), "pedalboards/Gig.json"),
        ):
            status, body = await asyncio.to_thread(_http, box.base, "/restore", archive)
            assert status == 400 and reason in json.loads(body)["error"], body
        assert sorted(p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".")) == []
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        await phone.ask("PING", "PONG")  # the same connection, still served
    assert "starting again" not in box.log_tail(100_000)


@pytest.mark.carla
async def test_a_pedalboard_shared_with_another_box_sounds_the_same_there(
    jack_server: JackServer, rig: Rig, tmp_path: Path
) -> None:
    """Under Carla: a pedalboard with a cabinet IR uploaded from the phone, shared as one file
    and imported on a box that never had the IR, loads there and is heard as on the first:
    the IR's tap 240 frames late."""
    write_impulse(tmp_path / "made" / "late.wav", 240, -6.0)
    first = _config(tmp_path / "one", jack_server, "carla", _one_track(rig))
    async with _box(first) as box, _phone(box) as phone:
        await phone.replay()
        await asyncio.to_thread(_upload, box.base, tmp_path / "made" / "late.wav")
        dry_lag = (await heard(rig))[0]
        convolver = str((await phone.request("PLUGIN_ADD", name="cabinet"))["data"]["plugin_id"])
        await phone.request("PLUGIN_FILE", plugin_id=convolver, file_id="impulse", file="ir/late.wav")
        sound = await _heard(rig, True, dry_lag, -6.0 + IR_GAIN_DB)
        await phone.ask("PEDALBOARD_SAVE", name="Cab")
        status, shared = await asyncio.to_thread(_http, box.base, "/pedalboards/share?name=Cab")
        assert status == 200
    other = _config(tmp_path / "other", jack_server, "carla", _one_track(rig))
    async with _box(other) as box, _phone(box) as phone:
        await phone.replay()
        assert (await heard(rig))[0] == dry_lag, "the other box does not start dry"
        status, body = await asyncio.to_thread(_http, box.base, "/pedalboards/import", shared)
        assert status == 201 and json.loads(body)["files"] == ["ir/late.wav"], body
        await phone.ask("PEDALBOARD_LOAD", name="Cab")
        assert await _heard(rig, True, dry_lag, -6.0 + IR_GAIN_DB) == pytest.approx(
            sound, abs=TOLERANCE_DB
        ), "the shared pedalboard sounds different"
