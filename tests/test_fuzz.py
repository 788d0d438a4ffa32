"""The protocol fuzzed over a real socket: the box never crashes, never leaks an exception,
answers every bad message with a documented code, and bad messages change nothing.

What a user would notice if this broke: a phone (or a buggy third-party client)
sending something odd drops every phone's connection, or leaves the board or a
pedalboard half changed. The long run (100,000 messages, against a running
virtual box) is ``hil/bench_fuzz.py``.

Each example sends a batch of fuzzed messages (:mod:`tests.fuzz`) to the box's
server on the in-memory engine with its pedalboard library, one at a time
(each followed by a PING, so that its answers are known), then plays only the
messages that were answered without an ERROR into a second, server-less stack:
both must end with the same board, pedalboards and setlist.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect

from appliance.config import RateLimit, ServerConfig
from appliance.core import protocol
from appliance.core.errors import ERROR_CODES
from appliance.frontends.net import ControlServer
from appliance.plugins.catalog import Catalog
from tests import fuzz
from tests.fakes import ControlStack

ROOT = Path(__file__).resolve().parent.parent
TRACK = "track_001"
CATALOG = Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)
#: How long one message's answers may take.
ANSWER_TIMEOUT = 10.0


async def stack(data_dir: Path) -> ControlStack:
    made = ControlStack(CATALOG, data_dir, TRACK)
    await made.engine.start()
    await made.library.start(None)
    return made


def state(made: ControlStack) -> dict[str, Any]:
    """Everything a message could have changed: the board, the pedalboards, the setlist."""
    return {
        "board": made.controller.board.to_dict(),
        "library": made.library.state(),
        "files": {p.name: p.read_bytes() for p in made.store.folder.glob("*.json")},
    }


async def answered(ws: ClientConnection, sync: str) -> list[dict[str, Any]]:
    """Send a PING; every message the box sent before its PONG."""
    await ws.send(json.dumps({"id": sync, "type": "PING"}))
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(ANSWER_TIMEOUT):
        while (answer := json.loads(await ws.recv())).get("reply_to") != sync:
            seen.append(answer)
    return seen


async def send_and_collect(
    ws: ClientConnection, server: ControlServer, message: str | bytes, sync: str
) -> list[dict[str, Any]]:
    """Send one message; everything it was answered with, including what a request that
    runs beside the stream (a load, an add) sends once it is done."""
    await ws.send(message)
    seen = await answered(ws, f"{sync}a")
    async with asyncio.timeout(ANSWER_TIMEOUT):
        while server._structural:
            await asyncio.sleep(0.001)
    return seen + await answered(ws, f"{sync}b")


async def fuzz_once(batch: list[str | bytes], folder: Path) -> None:
    box = await stack(folder / "box")
    reference = await stack(folder / "reference")
    config = ServerConfig(host="127.0.0.1", port=0, rate_limit=RateLimit(rate=1e6, burst=10**6))
    server = ControlServer(config, box.controller, lambda: (True, {}))
    await server.start()
    valid: list[str] = []
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
            for n, message in enumerate(batch):
                seen = await send_and_collect(ws, server, message, f"sync{n}")
                errors = [m["data"] for m in seen if m["type"] == "ERROR"]
                for error in errors:
                    assert error["code"] in ERROR_CODES and error["code"] != "INTERNAL", (message, error)
                if not errors and isinstance(message, str):
                    valid.append(message)
    finally:
        await server.stop()
    for text in valid:
        request = protocol.decode(text)
        if request.type != "METERS_SUBSCRIBE":  # the connection's own, not the controller's
            await reference.controller.execute(request)
    assert state(box) == state(reference), f"bad messages changed something; valid ones: {valid}"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(batch=st.lists(fuzz.messages, min_size=10, max_size=80))
def test_fuzzed_messages_never_crash_the_box_nor_change_anything_when_refused(
    batch: list[str | bytes], tmp_path_factory: Any
) -> None:
    """About 900 messages in 40 batches: documented codes only, the connection never
    dropped, and the box's state the same as a box that got only the valid messages."""
    asyncio.run(fuzz_once(batch, tmp_path_factory.mktemp("fuzz")))
