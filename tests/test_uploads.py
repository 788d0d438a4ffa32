"""The player's uploads over HTTP (``POST /files``): a real server on loopback, real requests.

What a player would notice if these broke: an IR sent from the phone is not in their
files (or is, half of it), a second phone's list does not show it, a bad name writes
outside their folder, a file too large fills the card, a dropped upload leaves junk that
plugins could load, or a page from another site puts files on the box.

The engine is the in-memory FakeEngine: uploads never touch the sound; that a picked
upload is heard is checked on the rig (tests/test_user_files.py).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect

from appliance.app import health_report
from appliance.config import FilesConfig, ServerConfig
from appliance.control.backups import Backups
from appliance.control.playerfiles import PlayerFiles
from appliance.core.board import BOARD_FORMAT
from appliance.core.errors import ERROR_CODES
from appliance.core.pedalboards import Pedalboard
from appliance.frontends.net import ControlServer
from appliance.store.pedalboards import PedalboardStore
from appliance.store.userfiles import UserFiles
from tests.conftest import small_partition
from tests.fakes import ControlStack, FakeCatalog

TRACK = "track_001"
REPLY_TIMEOUT = 5.0
WAV = b"RIFF" + bytes(range(256)) * 64  # 16 KiB that a test can recognise


@dataclass
class Box:
    server: ControlServer
    files: Path
    restarts: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def tree(self) -> dict[str, bytes]:
        """Every file under the player's folder, hidden ones included, with its bytes."""
        return {
            p.relative_to(self.files).as_posix(): p.read_bytes()
            for p in sorted(self.files.rglob("*"))
            if p.is_file()
        }


async def make_box(tmp_path: Path, limits: FilesConfig | None = None, **server: Any) -> Box:
    stack = ControlStack(FakeCatalog(), tmp_path / "data", TRACK)
    await stack.engine.start()
    files = UserFiles(tmp_path / "data" / "files", limits)
    stack.controller.user_files = files
    player_files = PlayerFiles(stack.controller, stack.library, files)
    restarts: list[str] = []

    async def saved() -> None:
        pass

    backups = Backups(tmp_path / "data", limits or FilesConfig(), saved, restarts.append)
    config = ServerConfig(host="127.0.0.1", port=0, **server)
    started = time.monotonic()
    net = ControlServer(
        config,
        stack.controller,
        lambda: health_report(stack.engine, stack.board, time.monotonic() - started),
        token="sekrit",
        files=player_files,
        backups=backups,
    )
    await net.start()
    return Box(net, files.root, restarts)


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Box]:
    made = await make_box(tmp_path)
    yield made
    await made.server.stop()


async def post(
    box: Box, body: Any, headers: dict[str, str] | None = None, **query: str
) -> tuple[int, dict[str, Any]]:
    """POST /files with ``query``; the status and the JSON answer (a refused handshake's text)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{box.url}/files", params=query, data=body, headers=headers) as response,
    ):
        if response.content_type != "application/json":
            return response.status, {"text": await response.text()}
        return response.status, await response.json()


async def test_an_uploaded_file_is_kept_whole_and_every_phone_sees_it(box: Box) -> None:
    """An IR sent from one phone is in the player's folder byte for byte, under its name, and
    a second phone's list shows it without asking."""
    async with connect(box.url.replace("http", "ws") + "/ws") as other:
        status, answer = await post(box, WAV, name="Cab 4x12 V30.wav")
        assert (status, answer) == (201, {"files": ["ir/Cab 4x12 V30.wav"]})
        async with asyncio.timeout(REPLY_TIMEOUT):
            while (message := json.loads(await other.recv()))["type"] != "FILE_LIST":
                pass
        assert "ir/Cab 4x12 V30.wav" in message["data"]["files"]["ir"]
    assert box.tree() == {"ir/Cab 4x12 V30.wav": WAV}
    status, answer = await post(box, b"{}", name="lead.nam")
    assert (status, answer["files"]) == (201, ["models/lead.nam"]), "a .nam model is not an amp model"
    status, answer = await post(box, b"x", name="notes.txt", folder="other")
    assert (status, answer["files"]) == (201, ["other/notes.txt"])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"name": "../board.json"}, "name"),
        ({"name": "ir/../../board.json"}, "name"),
        ({"name": ".hidden.wav"}, "name"),
        ({"name": "nul\x00.wav"}, "name"),
        ({"name": " "}, "name"),
        ({}, "name"),
        ({"name": "cab.wav", "folder": ".."}, "folder"),
        ({"name": "cab.wav", "folder": "pedalboards"}, "folder"),
    ],
)
async def test_a_bad_name_or_folder_is_refused_and_writes_nothing(
    box: Box, query: dict[str, str], field: str
) -> None:
    """A name with a folder, a hidden name, NUL, or a folder that is not one of the player's:
    INVALID_VALUE naming the field, and nothing written anywhere."""
    before = box.tree()
    status, answer = await post(box, WAV, **query)
    assert (status, answer["code"], answer["details"]["field"]) == (400, "INVALID_VALUE", field)
    assert box.tree() == before
    assert not (box.files.parent / "board.json").exists()


async def test_a_taken_name_is_refused_and_the_old_file_kept(box: Box) -> None:
    """Sending a second file under a name the folder has: NAME_TAKEN (409), the first file
    untouched (a rename or a delete is the player's choice, never an upload's)."""
    await post(box, WAV, name="cab.wav")
    status, answer = await post(box, b"other bytes", name="cab.wav")
    assert (status, answer["code"]) == (409, "NAME_TAKEN")
    assert box.tree() == {"ir/cab.wav": WAV}


async def test_a_file_over_the_cap_or_the_quota_is_refused_and_nothing_kept(tmp_path: Path) -> None:
    """Over ``files.max_file_mb``: TOO_LARGE (413), said before the body is read when its
    length is given and as soon as it passes the cap when not; over ``files.quota_mb``:
    NO_SPACE (507). Neither leaves a byte behind."""
    made = await make_box(tmp_path, FilesConfig(max_file_mb=1, quota_mb=2))
    try:
        big = b"\x00" * ((1 << 20) + 1)
        status, answer = await post(made, big, name="big.wav")
        assert (status, answer["code"]) == (413, "TOO_LARGE")

        async def streamed() -> AsyncIterator[bytes]:  # chunked: no length said
            for _ in range(40):
                yield b"\x00" * 65536

        status, answer = await post(made, streamed(), name="big.wav")
        assert (status, answer["code"]) == (413, "TOO_LARGE")
        assert made.tree() == {}
        kept = b"\x01" * (900 << 10)
        assert (await post(made, kept, name="a.wav"))[0] == 201
        assert (await post(made, kept, name="b.wav"))[0] == 201
        status, answer = await post(made, kept, name="c.wav")
        assert (status, answer["code"]) == (507, "NO_SPACE"), "the player's folder went past its quota"
        assert made.tree() == {"ir/a.wav": kept, "ir/b.wav": kept}
    finally:
        await made.server.stop()


async def test_an_upload_cut_short_never_appears_as_a_file(box: Box) -> None:
    """A phone that walks out of Wi-Fi half way through: no file under the name, no temporary
    left, and the same name can be sent again."""
    _, writer = await asyncio.open_connection("127.0.0.1", box.server.port)
    writer.write(
        b"POST /files?name=cab.wav HTTP/1.1\r\nHost: box\r\nContent-Length: 100000\r\n\r\n" + WAV[:5000]
    )
    await writer.drain()
    async with asyncio.timeout(REPLY_TIMEOUT):
        while not any(p.name.startswith(".incoming-") for p in box.files.rglob("*")):
            await asyncio.sleep(0.01)  # the box has started writing it
    writer.close()
    async with asyncio.timeout(REPLY_TIMEOUT):
        while box.tree():
            await asyncio.sleep(0.01)
    assert (await post(box, WAV, name="cab.wav"))[0] == 201
    assert box.tree() == {"ir/cab.wav": WAV}


async def test_a_stalled_upload_is_given_up_and_leaves_nothing(tmp_path: Path) -> None:
    """A phone that stops sending without hanging up: STALLED (408) after
    ``server.upload_timeout``, nothing kept; the box goes on serving."""
    made = await make_box(tmp_path, upload_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", made.server.port)
        writer.write(b"POST /files?name=cab.wav HTTP/1.1\r\nHost: box\r\nContent-Length: 100000\r\n\r\nRIFF")
        status = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        assert status.startswith(b"HTTP/1.1 408"), status
        writer.close()
        assert made.tree() == {}
        assert (await post(made, WAV, name="cab.wav"))[0] == 201
    finally:
        await made.server.stop()


async def test_uploads_follow_the_websockets_rules(tmp_path: Path) -> None:
    """With ``auth: token`` an upload needs the token (401 without, by query or header with);
    a page from another site is refused (403) whatever the mode: it could not put files on
    the box from a player's browser."""
    made = await make_box(tmp_path, auth="token")
    try:
        status, answer = await post(made, WAV, name="a.wav")
        assert (status, answer["code"]) == (401, "UNAUTHORIZED")
        status, _ = await post(made, WAV, {"Origin": "http://evil.example"}, name="a.wav", token="sekrit")
        assert status == 403
        assert made.tree() == {}
        assert (await post(made, WAV, name="a.wav", token="sekrit"))[0] == 201
        assert (await post(made, WAV, {"Authorization": "Bearer sekrit"}, name="b.wav"))[0] == 201
        own = {"Origin": made.url}
        assert (await post(made, WAV, {**own, "Authorization": "Bearer sekrit"}, name="c.wav"))[0] == 201
    finally:
        await made.server.stop()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def test_a_zip_is_unpacked_into_the_folders_its_files_belong_to(box: Box) -> None:
    """A vendor's IR pack (a .zip with folders inside) puts each file in its folder by kind,
    under its own name; a zip with a member that climbs out is refused whole, nothing written."""
    pack = _zip({"Pack/Celestion/V30 SM57.wav": WAV, "Pack/lead.nam": b"{}", "Pack/readme.txt": b"hi"})
    status, answer = await post(box, pack, name="pack.zip")
    assert status == 201 and sorted(answer["files"]) == [
        "ir/V30 SM57.wav",
        "models/lead.nam",
        "other/readme.txt",
    ]
    assert box.tree() == {"ir/V30 SM57.wav": WAV, "models/lead.nam": b"{}", "other/readme.txt": b"hi"}
    before = box.tree()
    status, answer = await post(box, _zip({"good.wav": WAV, "../../board.json": b"{}"}), name="evil.zip")
    assert (status, answer["code"]) == (400, "INVALID_VALUE")
    assert box.tree() == before
    assert not (box.files.parent / "board.json").exists()


async def test_every_refusal_is_a_documented_code(box: Box) -> None:
    """What an upload can answer is in the protocol's table of codes (docs/protocol.md)."""
    for query in ({"name": "../x"}, {"name": "a.wav"}, {"name": "a.wav"}):
        status, answer = await post(box, WAV, **query)
        if status != 201:
            assert answer["code"] in ERROR_CODES and isinstance(answer["error"], str)


async def test_backup_and_restore_follow_the_same_rules(tmp_path: Path) -> None:
    """A backup is the player's whole data, so it needs the token (401 without) and a page
    from another site can neither read one nor restore one (403); a restore of something that
    is not a backup is refused (400) with nothing changed and no restart."""
    made = await make_box(tmp_path, auth="token")
    try:
        url = made.url
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/backup") as response:
                assert response.status == 401
            async with http.get(
                f"{url}/backup", headers={"Origin": "http://evil.example"}, params={"token": "sekrit"}
            ) as response:
                assert response.status == 403
            async with http.post(
                f"{url}/restore", data=b"PK", headers={"Origin": "http://evil.example"}
            ) as response:
                assert response.status == 403
            async with http.post(
                f"{url}/restore", data=b"PK\x03\x04junk", params={"token": "sekrit"}
            ) as response:
                answer = await response.json()
                assert (response.status, answer["code"]) == (400, "INVALID_VALUE"), answer
            async with http.get(f"{url}/backup", params={"token": "sekrit"}) as response:
                assert response.status == 200 and response.content_type == "application/zip"
                assert "attachment" in response.headers["Content-Disposition"]
                with zipfile.ZipFile(io.BytesIO(await response.read())) as archive:
                    assert archive.namelist()[0] == "backup.json"
        assert made.restarts == []
        assert sorted(p.name for p in made.files.parent.iterdir()) == [], (
            "a refused restore or a backup left files"
        )
    finally:
        await made.server.stop()


async def test_a_full_card_refuses_an_upload_cleanly(tmp_path: Path) -> None:
    """On a card with no room left: NO_SPACE (507), said up front for a file whose length is
    given and when the card fills for one that is not, and nothing of it left."""
    with small_partition(tmp_path / "data", "80m"):
        made = await make_box(tmp_path)
        try:
            status, answer = await post(made, b"\x00" * (20 << 20), name="big.wav")
            assert (status, answer["code"]) == (507, "NO_SPACE"), "64 MB of the card are the board's"

            async def streamed() -> AsyncIterator[bytes]:
                for _ in range(20 * 16):
                    yield b"\x00" * 65536

            status, answer = await post(made, streamed(), name="big.wav")
            assert (status, answer["code"]) == (507, "NO_SPACE")
            assert made.tree() == {}
            assert (await post(made, WAV, name="small.wav"))[0] == 201
        finally:
            await made.server.stop()


def _pedalboard(data: Path, name: str, chain: list[dict[str, Any]]) -> None:
    """A saved pedalboard whose one track holds ``chain`` (as the box writes one)."""
    board = {"format": BOARD_FORMAT, "tracks": [{"id": TRACK, "chain": chain}]}
    PedalboardStore(data).write(Pedalboard(name, board))


async def _share(box: Box, name: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{box.url}/pedalboards/share", params={"name": name}) as response,
    ):
        return response.status, await response.read()


async def _import(box: Box, archive: bytes) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{box.url}/pedalboards/import", data=archive) as response,
    ):
        return response.status, await response.json()


CAB = {
    "id": "plugin_1",
    "plugin": "gain",
    "name": "Cab",
    "values": {},
    "bypass": False,
    "files": {"impulse": "ir/cab.wav"},
}


async def test_a_pedalboard_shared_from_one_box_comes_with_its_files_to_another(tmp_path: Path) -> None:
    """A pedalboard shared from one box is one zip with the IR it loads; another box takes it
    whole, its phones see the new pedalboard and file. Imported again it comes in beside the
    first (``Gig (2)``) using the same file; a different file of the same name on the other
    box is kept and the newcomer takes ``cab (2).wav``, which its pedalboard then names."""
    one, other = await make_box(tmp_path / "one"), await make_box(tmp_path / "other")
    try:
        await post(one, WAV, name="cab.wav")
        _pedalboard(one.files.parent, "Gig", [CAB])
        status, shared = await _share(one, "Gig")
        assert status == 200
        with zipfile.ZipFile(io.BytesIO(shared)) as archive:
            assert sorted(archive.namelist()) == ["files/ir/cab.wav", "pedalboard.json"]
        async with connect(other.url.replace("http", "ws") + "/ws") as phone:
            status, answer = await _import(other, shared)
            assert (status, answer) == (
                201,
                {"name": "Gig", "files": ["ir/cab.wav"], "reused": [], "renamed": {}},
            )
            told = set()
            async with asyncio.timeout(REPLY_TIMEOUT):
                while told != {"PEDALBOARD_STATE", "FILE_LIST"}:
                    message = json.loads(await phone.recv())
                    if message["type"] == "PEDALBOARD_STATE" and "Gig" in message["data"]["pedalboards"]:
                        told.add("PEDALBOARD_STATE")
                    if message["type"] == "FILE_LIST" and message["data"]["files"]["ir"] == ["ir/cab.wav"]:
                        told.add("FILE_LIST")
        assert other.tree() == {"ir/cab.wav": WAV}
        assert PedalboardStore(other.files.parent).read("Gig").board["tracks"][0]["chain"][0]["files"] == {
            "impulse": "ir/cab.wav"
        }
        status, answer = await _import(other, shared)
        assert (status, answer["name"], answer["reused"], answer["files"]) == (
            201,
            "Gig (2)",
            ["ir/cab.wav"],
            [],
        )
        (other.files / "ir" / "cab.wav").unlink()
        (other.files / "ir" / "cab.wav").write_bytes(b"RIFF another cabinet")
        status, answer = await _import(other, shared)
        assert (status, answer["name"], answer["renamed"]) == (
            201,
            "Gig (3)",
            {"ir/cab.wav": "ir/cab (2).wav"},
        )
        assert other.tree() == {"ir/cab.wav": b"RIFF another cabinet", "ir/cab (2).wav": WAV}
        assert PedalboardStore(other.files.parent).read("Gig (3)").board["tracks"][0]["chain"][0][
            "files"
        ] == {"impulse": "ir/cab (2).wav"}
    finally:
        await one.server.stop()
        await other.server.stop()


async def test_a_shared_pedalboard_that_cannot_play_here_is_refused_whole(box: Box, tmp_path: Path) -> None:
    """A pedalboard using a plugin this box lacks is refused naming it (PLUGIN_NOT_ALLOWED,
    ``details.missing``); a backup or an IR pack sent to the import, or a shared pedalboard
    whose file climbs out of its folder, is refused (INVALID_VALUE). Nothing is written."""
    missing = {**CAB, "plugin": "Fuzz Face", "uri": "http://example.org/fuzz-face", "name": "Fuzz Face"}
    shared = io.BytesIO()
    with zipfile.ZipFile(shared, "w") as archive:
        pedalboard = Pedalboard(
            "Fuzz", {"format": BOARD_FORMAT, "tracks": [{"id": TRACK, "chain": [missing]}]}
        )
        archive.writestr(
            "pedalboard.json",
            json.dumps({"format": "appliance-pedalboard", "version": 1, "pedalboard": pedalboard.to_dict()}),
        )
        archive.writestr("files/ir/cab.wav", WAV)
    status, answer = await _import(box, shared.getvalue())
    assert (status, answer["code"]) == (400, "PLUGIN_NOT_ALLOWED")
    assert answer["details"]["missing"] == [{"name": "Fuzz Face", "uri": "http://example.org/fuzz-face"}]
    climbing = io.BytesIO()
    with zipfile.ZipFile(climbing, "w") as archive:
        archive.writestr("pedalboard.json", b"{}")
        archive.writestr("files/ir/../../board.json", b"{}")
    for archive_bytes, reason in (
        (_zip({"backup.json": b"{}", "board.json": b"{}"}), "not part of a shared pedalboard"),
        (_zip({"V30.wav": WAV}), "V30.wav"),
        (climbing.getvalue(), ".."),
    ):
        status, answer = await _import(box, archive_bytes)
        assert (status, answer["code"]) == (400, "INVALID_VALUE") and reason in answer["error"], answer
    assert box.tree() == {}
    assert not (box.files.parent / "pedalboards").exists()
