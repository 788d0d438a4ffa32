"""The HTTP endpoints that take the player's bytes, fuzzed over a real socket: uploads
(``POST /files``), shared pedalboards (``POST /pedalboards/import``) and restores
(``POST /restore``).

What a player would notice if this broke: an odd file from the phone (a truncated zip, a
zip of thousands of tiny files, a name with ``..`` or NUL or emoji) writes outside their
folder, leaves half a file, wipes something, or takes the box down for every phone.

Each example sends a batch of fuzzed requests to the box's server on the in-memory
engine, then checks: every answer is 201/200 or a documented error code (never
``INTERNAL``), nothing was written outside the player's folder but what an accepted
request writes (a pedalboard for an import), no temporary is left anywhere, and the box
still answers a phone.
"""

from __future__ import annotations

import asyncio
import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from appliance.config import FilesConfig
from appliance.core.controls import FILE_FOLDERS
from appliance.core.errors import ERROR_CODES
from tests.test_uploads import make_box

#: Names as a phone, a script or a hostile page could send them.
NAMES = st.one_of(
    st.sampled_from(
        [
            "cab.wav",
            "../cab.wav",
            "../../etc/passwd",
            "/abs.wav",
            "a/b.wav",
            "a\\b.wav",
            ".hidden",
            "nul\x00.wav",
            "🎸 Marshall 1960.wav",
            "x" * 300,
            "pack.zip",
            "..",
            ".",
            "",
        ]
    ),
    st.text(min_size=0, max_size=40),
)
MEMBER_NAMES = st.one_of(
    st.sampled_from(
        [
            "pedalboard.json",
            "backup.json",
            "board.json",
            "files/ir/cab.wav",
            "files/ir/../../../x.wav",
            "files/../board.json",
            "/etc/x",
            "files/ir/.hidden.wav",
            "files/models/🎸.nam",
            "pedalboards/Gig.json",
            "__MACOSX/._cab.wav",
            "dir/",
        ]
    ),
    st.text(min_size=1, max_size=30),
)


@st.composite
def zips(draw: Any) -> bytes:
    """A zip of fuzzed members (many small ones, sometimes), sometimes truncated."""
    buffer = io.BytesIO()
    count = draw(st.sampled_from([0, 1, 2, 5, 300]))
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(count):
            name = draw(MEMBER_NAMES) if n < 10 else f"files/ir/{n}.wav"
            data = draw(
                st.sampled_from(
                    [b"", b"{}", b"RIFF", b'{"format": "appliance-pedalboard", "version": 1}', bytes(4096)]
                )
            )
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a name twice: wanted here
                    archive.writestr(name, data)
            except (ValueError, UnicodeEncodeError, IndexError):
                continue  # a name zipfile itself cannot write
    body = buffer.getvalue()
    if draw(st.booleans()):
        body = body[: draw(st.integers(min_value=0, max_value=max(0, len(body) - 1)))]
    return body


BODIES = st.one_of(st.binary(max_size=2048), zips())
REQUESTS = st.tuples(
    st.sampled_from(["/files", "/pedalboards/import", "/restore"]),
    NAMES,
    st.one_of(st.none(), st.sampled_from(["ir", "models", "other", "..", "pedalboards", ""])),
    BODIES,
)


def _players(path: str) -> bool:
    """Is ``path`` (under the data folder) one of the player's files or pedalboards?"""
    parts = path.split("/")
    if parts[0] == "pedalboards":
        return len(parts) == 2 and parts[1].endswith(".json")
    return len(parts) == 3 and parts[0] == "files" and parts[1] in FILE_FOLDERS


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


async def fuzz_once(batch: list[tuple[str, str, str | None, bytes]], folder: Path) -> None:
    box = await make_box(folder, FilesConfig(max_file_mb=1, quota_mb=2))
    data = box.files.parent
    try:
        async with aiohttp.ClientSession() as http:
            for path, name, kind, body in batch:
                query = {"name": name} | ({"folder": kind} if kind is not None else {})
                try:
                    async with http.post(box.url + path, params=query, data=body) as response:
                        text = await response.text()
                        status = response.status
                except (aiohttp.InvalidURL, ValueError):
                    continue  # the client library itself refuses this name in a URL
                assert status in (200, 201, 400, 401, 403, 404, 408, 409, 413, 507), (
                    path,
                    query,
                    status,
                    text,
                )
                if status >= 400 and response.content_type == "application/json":
                    answer = json.loads(text)
                    assert answer["code"] in ERROR_CODES and answer["code"] != "INTERNAL", (
                        path,
                        query,
                        answer,
                    )
                outside = {p for p in _tree(folder) if not p.startswith("data/")}
                assert outside == set(), f"written outside the data folder: {outside}"
                written = {p for p in _tree(data) if not _players(p)}
                assert written == set(), f"written beside the player's data: {written}"
                hidden = [p for p in _tree(data) if any(part.startswith(".") for part in p.split("/"))]
                assert hidden == [], f"left behind: {hidden}"
        async with connect(box.url.replace("http", "ws") + "/ws") as phone:
            await phone.send('{"type": "PING", "id": "p"}')
            async with asyncio.timeout(5):
                while (answer := json.loads(await phone.recv())).get("reply_to") != "p":
                    pass
            assert answer["type"] == "PONG"
    finally:
        await box.server.stop()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(batch=st.lists(REQUESTS, min_size=5, max_size=20))
def test_fuzzed_uploads_imports_and_restores_stay_in_the_players_folder(
    batch: list[tuple[str, str, str | None, bytes]], tmp_path_factory: Any
) -> None:
    """About 300 fuzzed requests in 25 batches: documented answers only, nothing written
    outside the player's folder, nothing half-written left, and the box still serves."""
    asyncio.run(fuzz_once(batch, tmp_path_factory.mktemp("fuzz")))
