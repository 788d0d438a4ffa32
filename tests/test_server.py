"""The protocol over real sockets: a real server on loopback, real WebSocket clients.

The engine here is the in-memory FakeEngine: these tests check the protocol's
rules; the engines are checked by the contract suite and the virtual rig.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from appliance.app import health_report
from appliance.config import RateLimit, ServerConfig
from appliance.control.controller import ENGINE_EVENT_SENTENCES, Controller
from appliance.core.board import MAX_CHAIN, Board
from appliance.core.errors import ERROR_CODES
from appliance.engine import EngineEvent, TrackPorts
from appliance.frontends.net import RATE_ABUSE_LIMIT, ControlServer
from tests.fakes import FakeCatalog, FakeEngine

TRACK = "track_001"
RECV_TIMEOUT = 5.0


@dataclass
class Box:
    server: ControlServer
    controller: Controller
    engine: FakeEngine

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/ws"


async def make_box(**server: Any) -> Box:
    engine = FakeEngine(
        [TrackPorts(TRACK, ("a:in",), ("a:out",)), TrackPorts("track_002", ("b:in",), ("b:out",))]
    )
    await engine.start()
    controller = Controller(Board([TRACK, "track_002"]), FakeCatalog(), engine)
    engine.on_event = controller.engine_event  # as the composition root wires it
    config = ServerConfig(host="127.0.0.1", port=0, **server)
    started = time.monotonic()
    net = ControlServer(
        config,
        controller,
        lambda: health_report(engine, controller.board, time.monotonic() - started),
        token="sekrit",
    )
    await net.start()
    return Box(net, controller, engine)


@pytest.fixture
async def box() -> AsyncIterator[Box]:
    made = await make_box()
    yield made
    await made.server.stop()


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), RECV_TIMEOUT))
    return message


async def recv_type(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        message = await recv(ws)
        if message["type"] == kind:
            return message


async def request(
    ws: ClientConnection, kind: str, data: dict[str, Any] | None = None, mid: str = "m1"
) -> None:
    await ws.send(
        json.dumps({"id": mid, "type": kind, "data": data or {}, "user_id": "u", "session_id": "s"})
    )


async def add_gain(ws: ClientConnection, mid: str = "add") -> dict[str, Any]:
    await request(
        ws, "PLUGIN_ADD", {"track_id": TRACK, "name": "Gain", "plugin_path": "", "plugin_id": ""}, mid
    )
    return await recv_type(ws, "PLUGIN_ADD")


async def test_ping_pong(box: Box) -> None:
    """PING with no data gets a PONG carrying reply_to."""
    async with connect(box.url) as ws:
        await ws.send('{"id": "p1", "type": "PING"}')
        message = await recv(ws)
        assert message["type"] == "PONG" and message["reply_to"] == "p1"


async def test_add_is_echoed_to_sender_and_others(box: Box) -> None:
    """PLUGIN_ADD reaches the sender and every other client, with the box's id and values."""
    async with connect(box.url) as a, connect(box.url) as b:
        added = await add_gain(a)
        seen = await recv_type(b, "PLUGIN_ADD")
        assert added["data"] == seen["data"]
        assert added["reply_to"] == "add" and added["origin"] == {"user_id": "u", "session_id": "s"}
        assert added["data"]["plugin_id"] == "plugin_1" and added["data"]["name"] == "Gain"
        assert added["data"]["parameters"] == {"gain": 0.0}
        assert box.engine.chain(TRACK) == ["plugin_1"]


async def test_parameter_clamped_and_broadcast(box: Box) -> None:
    """A parameter beyond range is clamped; everyone sees the applied value."""
    async with connect(box.url) as a, connect(box.url) as b:
        plugin = (await add_gain(a))["data"]["plugin_id"]
        await recv_type(b, "PLUGIN_ADD")
        await request(
            a,
            "PLUGIN_PARAMETER",
            {"track_id": TRACK, "plugin_id": plugin, "parameter_id": "gain", "parameter_value": 99},
            "p",
        )
        for ws in (a, b):
            event = await recv_type(ws, "PLUGIN_PARAMETER")
            assert event["data"]["parameter_value"] == 24.0 and event["reply_to"] == "p"
        assert box.engine.values[plugin] == {"gain": 24.0}


async def test_late_joiner_sees_board(box: Box) -> None:
    """A client connecting later gets PLUGIN_ADD per plugin in order, then PLUGIN_BYPASS."""
    async with connect(box.url) as a:
        first = (await add_gain(a, "a1"))["data"]["plugin_id"]
        second = (await add_gain(a, "a2"))["data"]["plugin_id"]
        await request(a, "PLUGIN_BYPASS", {"track_id": TRACK, "plugin_id": second, "bypass": True})
        await recv_type(a, "PLUGIN_BYPASS")
        await request(
            a,
            "PLUGIN_PARAMETER",
            {"track_id": TRACK, "plugin_id": first, "parameter_id": "gain", "parameter_value": -6},
        )
        await recv_type(a, "PLUGIN_PARAMETER")
    async with connect(box.url) as late:
        replay = [await recv(late) for _ in range(3)]
    assert [m["type"] for m in replay] == ["PLUGIN_ADD", "PLUGIN_ADD", "PLUGIN_BYPASS"]
    assert replay[0]["data"]["plugin_id"] == first and replay[0]["data"]["parameters"] == {"gain": -6.0}
    assert replay[2]["data"] == {"track_id": TRACK, "plugin_id": second, "bypass": True}


async def test_batch_converges_with_one_event_per_value(box: Box) -> None:
    """A batch is broadcast as one PLUGIN_PARAMETER per value, so example clients converge."""
    async with connect(box.url) as a, connect(box.url) as b:
        await request(
            a, "PLUGIN_ADD", {"track_id": TRACK, "name": "compressor", "plugin_path": "", "plugin_id": ""}
        )
        plugin = (await recv_type(a, "PLUGIN_ADD"))["data"]["plugin_id"]
        await recv_type(b, "PLUGIN_ADD")
        batch = [
            {"parameter_id": "threshold", "parameter_value": -30},
            {"parameter_id": "attack", "parameter_value": 0.001},
            {"parameter_id": "rat", "parameter_value": 8},
        ]
        await request(
            a, "PLUGIN_PARAMETER_BATCH", {"track_id": TRACK, "plugin_id": plugin, "parameters": batch}
        )
        got = {}
        for _ in range(3):
            event = await recv_type(b, "PLUGIN_PARAMETER")
            got[event["data"]["parameter_id"]] = event["data"]["parameter_value"]
        assert got == {"threshold": -30.0, "attack": 0.001, "rat": 8.0}
        assert box.engine.values[plugin]["att"] == 1.0


async def test_preset_is_atomic_and_sends_whole_map(box: Box) -> None:
    """A preset with one bad entry changes nothing; a good one broadcasts the whole map."""
    async with connect(box.url) as a:
        await request(
            a, "PLUGIN_ADD", {"track_id": TRACK, "name": "Compressor", "plugin_path": "", "plugin_id": ""}
        )
        plugin = (await recv_type(a, "PLUGIN_ADD"))["data"]["plugin_id"]
        before = dict(box.engine.values[plugin])
        bad = {"threshold": -10, "ratio_typo": 2}
        await request(a, "PLUGIN_PRESET", {"track_id": TRACK, "plugin_id": plugin, "preset_data": bad}, "bad")
        error = await recv_type(a, "ERROR")
        assert error["data"]["code"] == "UNKNOWN_PARAMETER" and error["reply_to"] == "bad"
        assert box.engine.values[plugin] == before
        await request(
            a, "PLUGIN_PRESET", {"track_id": TRACK, "plugin_id": plugin, "preset_data": {"threshold": -25}}
        )
        preset = await recv_type(a, "PLUGIN_PRESET")
        assert preset["data"]["preset_data"]["threshold"] == -25.0
        assert set(preset["data"]["preset_data"]) == set(box.controller.board.plugin(TRACK, plugin).values)


async def test_parameters_get_only_to_requester(box: Box) -> None:
    """PLUGIN_PARAMETERS_GET answers the requester alone with the whole map."""
    async with connect(box.url) as a, connect(box.url) as b:
        plugin = (await add_gain(a))["data"]["plugin_id"]
        await recv_type(b, "PLUGIN_ADD")
        await request(a, "PLUGIN_PARAMETERS_GET", {"track_id": TRACK, "plugin_id": plugin})
        reply = await recv(a)
        assert reply["type"] == "PLUGIN_PARAMETERS_GET" and reply["data"]["parameters"] == {"gain": 0.0}
        await b.send('{"type": "PING", "id": "b"}')
        assert (await recv(b))["type"] == "PONG"  # nothing else was queued for b


async def test_a_full_chain_refuses_more_plugins(box: Box) -> None:
    """A track holds 16 plugins; the 17th add gets CHAIN_FULL and starts nothing."""
    async with connect(box.url) as a:
        for n in range(MAX_CHAIN):
            await add_gain(a, f"add{n}")
        await request(a, "PLUGIN_ADD", {"track_id": TRACK, "name": "gain", "plugin_path": ""}, "one_more")
        error = await recv_type(a, "ERROR")
        assert (error["reply_to"], error["data"]["code"]) == ("one_more", "CHAIN_FULL")
        assert error["data"]["details"] == {"track_id": TRACK, "limit": MAX_CHAIN}
        assert len(box.engine.chains[TRACK]) == MAX_CHAIN


async def test_remove_and_move(box: Box) -> None:
    """PLUGIN_REMOVE and PLUGIN_MOVE change the engine's chain and are broadcast."""
    async with connect(box.url) as a:
        ids = [(await add_gain(a, f"a{i}"))["data"]["plugin_id"] for i in range(3)]
        await request(a, "PLUGIN_MOVE", {"track_id": TRACK, "plugin_id": ids[2], "position": 0})
        assert (await recv_type(a, "PLUGIN_MOVE"))["data"]["position"] == 0
        await request(a, "PLUGIN_REMOVE", {"track_id": TRACK, "plugin_id": ids[0]})
        assert (await recv_type(a, "PLUGIN_REMOVE"))["data"]["plugin_id"] == ids[0]
        assert box.engine.chain(TRACK) == [ids[2], ids[1]]
        await request(a, "BOARD_GET")
        state = (await recv_type(a, "BOARD_STATE"))["data"]
        assert [p["plugin_id"] for p in state["tracks"][0]["plugins"]] == [ids[2], ids[1]]


async def test_catalog_get_has_control_metadata(box: Box) -> None:
    """CATALOG lists addable plugins with each control's unit, range, default and kind."""
    async with connect(box.url) as a:
        await request(a, "CATALOG_GET")
        catalog = (await recv_type(a, "CATALOG"))["data"]["plugins"]
        comp = next(p for p in catalog if p["key"] == "compressor")
        attack = next(p for p in comp["parameters"] if p["id"] == "attack")
        assert attack["unit"] == "s" and attack["min"] == 0.0001 and attack["max"] == 0.1
        mode = next(p for p in comp["parameters"] if p["id"] == "mode")
        assert mode["kind"] == "enum" and [x["label"] for x in mode["labels"]] == ["A", "B", "C"]


BAD_MESSAGES = [
    ("not json at all", "INVALID_MESSAGE"),
    ("[1,2,3]", "INVALID_MESSAGE"),
    ('{"type": "PLUGIN_EXPLODE"}', "UNKNOWN_TYPE"),
    ('{"type": "PLUGIN_REMOVE", "data": {"track_id": 3, "plugin_id": "x"}}', "INVALID_MESSAGE"),
    ('{"type": "PLUGIN_REMOVE", "data": {"track_id": "track_404", "plugin_id": "x"}}', "UNKNOWN_TRACK"),
    ('{"type": "PLUGIN_REMOVE", "data": {"track_id": "track_001", "plugin_id": "nope"}}', "UNKNOWN_PLUGIN"),
    (
        '{"type": "PLUGIN_PARAMETER", "data": {"track_id": "track_001", "plugin_id": "plugin_1", '
        '"parameter_id": "volume", "parameter_value": 1}}',
        "UNKNOWN_PARAMETER",
    ),
    (
        '{"type": "PLUGIN_PARAMETER", "data": {"track_id": "track_001", "plugin_id": "plugin_1", '
        '"parameter_id": "gain", "parameter_value": NaN}}',
        "INVALID_VALUE",
    ),
    (
        '{"type": "PLUGIN_PARAMETER", "data": {"track_id": "track_001", "plugin_id": "plugin_1", '
        '"parameter_id": "gain", "parameter_value": Infinity}}',
        "INVALID_VALUE",
    ),
    (
        '{"type": "PLUGIN_PARAMETER", "data": {"track_id": "track_001", "plugin_id": "plugin_1", '
        '"parameter_id": "gain", "parameter_value": "3"}}',
        "INVALID_VALUE",
    ),
    (
        '{"type": "PLUGIN_PARAMETER", "data": {"track_id": "track_001", "plugin_id": "plugin_1", '
        '"parameter_id": "gain", "parameter_value": null}}',
        "INVALID_VALUE",
    ),
    (
        '{"type": "PLUGIN_PARAMETER", "data": {"track_id": "track_001", "plugin_id": "plugin_1", '
        '"parameter_id": "gain", "parameter_value": 1' + "0" * 400 + "}}",
        "INVALID_VALUE",
    ),
    (
        '{"type": "PLUGIN_PARAMETER_BATCH", "data": {"track_id": "track_001", "plugin_id": "plugin_1", '
        '"parameters": []}}',
        "INVALID_MESSAGE",
    ),
    # Found by a fuzz run: deep nesting once escaped the handler (1011), huge integers slipped through.
    ("[" * 1000 + "]" * 1000, "INVALID_MESSAGE"),
    ('{"id": "deep", "type": "PING", "data": {"x": ' + "[" * 1000 + "]" * 1000 + "}}", "INVALID_MESSAGE"),
    (
        '{"type": "PLUGIN_MOVE", "data": {"track_id": "track_001", "plugin_id": "plugin_1", '
        '"position": ' + "9" * 400 + "}}",
        "INVALID_VALUE",
    ),
    (
        '{"type": "PLUGIN_MOVE", "data": {"track_id": "track_001", "plugin_id": "plugin_1", '
        '"position": ' + "9" * 5000 + "}}",
        "INVALID_VALUE",
    ),
    (
        '{"type": "PLUGIN_ADD", "data": {"track_id": "track_404", "name": "nothing", "plugin_path": ""}}',
        "UNKNOWN_TRACK",
    ),
    (
        '{"type": "PLUGIN_BYPASS", "data": {"track_id": "track_001", "plugin_id": "plugin_1", "bypass": "yes"}}',
        "INVALID_VALUE",
    ),
    (
        '{"type": "PLUGIN_ADD", "data": {"track_id": "track_001", "name": "../../etc/passwd", '
        '"plugin_path": "/etc/passwd", "plugin_id": ""}}',
        "PLUGIN_NOT_ALLOWED",
    ),
    (
        '{"type": "PLUGIN_ADD", "data": {"track_id": "track_001", "name": "Evil", '
        '"plugin_path": "/tmp/evil.so", "plugin_id": ""}}',
        "PLUGIN_NOT_ALLOWED",
    ),
]


async def test_bad_input_gets_its_code_and_changes_nothing(box: Box) -> None:
    """Each bad message gets its ERROR code; the board is unchanged; the connection stays open."""
    async with connect(box.url) as a, connect(box.url) as other:
        await add_gain(a)
        await recv_type(other, "PLUGIN_ADD")
        before = box.controller.board.to_dict()
        for index, (text, code) in enumerate(BAD_MESSAGES):
            await a.send(text)
            error = await recv_type(a, "ERROR")
            assert error["data"]["code"] == code, (index, text, error)
            assert error["data"]["code"] in ERROR_CODES and isinstance(error["data"]["error"], str)
            assert not error["data"]["error"].startswith('"'), "a sentence, not a repr"
        assert box.controller.board.to_dict() == before
        await other.send('{"type": "PING"}')
        assert (await recv(other))["type"] == "PONG"
        await a.send('{"type": "PING", "id": "still"}')
        assert (await recv(a))["reply_to"] == "still"


async def test_error_reply_to_carries_request_id(box: Box) -> None:
    """An error answers with reply_to set to the failing request's id when it has one."""
    async with connect(box.url) as a:
        await a.send('{"id": "x9", "type": "PLUGIN_REMOVE", "data": {"track_id": "t", "plugin_id": "p"}}')
        error = await recv(a)
        assert error["reply_to"] == "x9" and error["data"]["retryable"] is False


async def test_engine_failures_map_to_codes(box: Box) -> None:
    """A plugin that fails to load is PLUGIN_LOAD_FAILED; an engine that is down is ENGINE_UNAVAILABLE."""
    async with connect(box.url) as a:
        box.engine.fail_next_add = True
        await request(
            a, "PLUGIN_ADD", {"track_id": TRACK, "name": "gain", "plugin_path": "", "plugin_id": ""}
        )
        assert (await recv_type(a, "ERROR"))["data"]["code"] == "PLUGIN_LOAD_FAILED"
        assert box.controller.board.to_dict()["tracks"][0]["chain"] == []
        plugin = (await add_gain(a))["data"]["plugin_id"]
        box.engine.down = True
        await request(
            a,
            "PLUGIN_PARAMETER",
            {"track_id": TRACK, "plugin_id": plugin, "parameter_id": "gain", "parameter_value": 1},
        )
        error = await recv_type(a, "ERROR")
        assert error["data"]["code"] == "ENGINE_UNAVAILABLE" and error["data"]["retryable"] is True
        assert box.controller.board.plugin(TRACK, plugin).values == {"gain": 0.0}


async def test_oversized_message_closes_with_1009(box: Box) -> None:
    """A 1 MB message closes that connection with 1009; others go on being served."""
    async with connect(box.url, max_size=None) as a, connect(box.url) as b:
        await a.send('{"type": "PING", "data": {"pad": "' + "x" * 1_000_000 + '"}}')
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(a.recv(), RECV_TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await b.send('{"type": "PING"}')
        assert (await recv(b))["type"] == "PONG"


async def test_invalid_utf8_closes_with_1007(box: Box) -> None:
    """A text frame that is not UTF-8 closes that connection with 1007, as documented; others go on."""
    async with connect(box.url) as a, connect(box.url) as b:
        await a.send(b'{"type": "PING", "id": "\xff"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(a.recv(), RECV_TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
        await b.send('{"type": "PING"}')
        assert (await recv(b))["type"] == "PONG"


async def test_rate_limit() -> None:
    """Over the per-connection limit: RATE_LIMITED with retry_after_ms, the message dropped."""
    made = await make_box(rate_limit=RateLimit(rate=1.0, burst=3))
    try:
        async with connect(made.url) as a:
            for _ in range(4):
                await a.send('{"type": "PING"}')
            kinds = [(await recv(a)) for _ in range(4)]
            assert [k["type"] for k in kinds] == ["PONG", "PONG", "PONG", "ERROR"]
            assert kinds[3]["data"]["code"] == "RATE_LIMITED" and kinds[3]["data"]["retryable"] is True
            assert kinds[3]["data"]["details"]["retry_after_ms"] > 0
    finally:
        await made.server.stop()


async def test_a_client_that_ignores_the_rate_limit_is_closed() -> None:
    """RATE_LIMITED is said once per streak; a client that keeps on sending 1000 more is closed (1008)."""
    made = await make_box(rate_limit=RateLimit(rate=1.0, burst=3))
    try:
        async with connect(made.url) as a:
            for _ in range(3 + 1 + RATE_ABUSE_LIMIT):
                await a.send('{"type": "PING"}')
            kinds = [(await recv(a))["type"] for _ in range(4)]
            assert kinds == ["PONG", "PONG", "PONG", "ERROR"]
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(a.recv(), RECV_TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        await made.server.stop()


async def test_a_page_reconnecting_in_a_loop_locks_out_nobody_else() -> None:
    """One address opening connections without end (the React example's loop) has its oldest
    replaced (4000) past its cap of 3; a phone at another address still connects and is served."""
    made = await make_box(max_clients=6, max_per_address=3)
    looping = []
    try:
        for _ in range(20):
            looping.append(await connect(made.url, local_addr=("127.0.0.2", 0)))
        for old in looping[:-3]:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(old.recv(), RECV_TIMEOUT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
        async with connect(made.url, local_addr=("127.0.0.3", 0)) as phone:
            await phone.send('{"type": "PING"}')
            assert (await recv_type(phone, "PONG"))["type"] == "PONG"
        for newest in looping[-3:]:
            await newest.send('{"type": "PING"}')
            assert (await recv_type(newest, "PONG"))["type"] == "PONG"
    finally:
        for ws in looping:
            await ws.close()
        await made.server.stop()


async def test_a_connection_replaced_during_its_handshake_is_closed_once_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page reconnecting in a loop can have its oldest connection replaced while that one's
    handshake is still under way: it is closed (4000) as soon as it opens, nothing fails on the
    way, and the newer ones are served."""
    made = await make_box(max_clients=6, max_per_address=2)
    real_prepare = web.WebSocketResponse.prepare
    first = asyncio.Event()

    async def slow_first(self: web.WebSocketResponse, request: Any) -> Any:
        if not first.is_set():
            first.set()
            await asyncio.sleep(0.5)  # the handshake's answer is slow to go out
        return await real_prepare(self, request)

    monkeypatch.setattr(web.WebSocketResponse, "prepare", slow_first)
    failures: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: failures.append(context))
    try:
        opening = asyncio.ensure_future(connect(made.url, local_addr=("127.0.0.2", 0)))
        await first.wait()
        newer = [await connect(made.url, local_addr=("127.0.0.2", 0)) for _ in range(2)]
        replaced = await opening
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(replaced.recv(), RECV_TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
        for ws in newer:
            await ws.send('{"type": "PING"}')
            assert (await recv_type(ws, "PONG"))["type"] == "PONG"
            await ws.close()
        assert failures == []
    finally:
        asyncio.get_running_loop().set_exception_handler(None)
        await made.server.stop()


async def test_a_silent_connection_is_dropped_after_the_handshake_timeout() -> None:
    """A TCP connection that never sends its handshake is closed after handshake_timeout."""
    made = await make_box(handshake_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", made.server.port)
        assert await asyncio.wait_for(reader.read(), RECV_TIMEOUT) == b""
        writer.close()
    finally:
        await made.server.stop()


async def test_origin_check() -> None:
    """A page from another origin is refused; the box's own origin and allowed ones are not."""
    made = await make_box(allowed_origins=("http://studio.local:3000",))
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(made.url, origin="http://evil.example"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
        port = made.server.port
        # A DNS-rebinding page sends its own name as both Host and Origin.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: rebind.example:{port}\r\nOrigin: http://rebind.example:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readline(), RECV_TIMEOUT)
        writer.close()
        assert status.startswith(b"HTTP/1.1 403"), status
        own = f"http://127.0.0.1:{port}"
        for origin in (own, f"http://localhost:{port}", "http://studio.local:3000"):
            async with connect(made.url, origin=origin) as ws:  # type: ignore[arg-type]
                await ws.send('{"type": "PING"}')
                assert (await recv(ws))["type"] == "PONG"
    finally:
        await made.server.stop()


async def test_token_auth_modes() -> None:
    """With auth: token, a client needs the token by query, header or first AUTH message."""
    made = await make_box(auth="token")
    try:
        async with connect(made.url + "?token=sekrit") as ws:
            await ws.send('{"type": "PING"}')
            assert (await recv(ws))["type"] == "PONG"
        async with connect(made.url, additional_headers={"Authorization": "Bearer sekrit"}) as ws:
            await ws.send('{"type": "PING"}')
            assert (await recv(ws))["type"] == "PONG"
        async with connect(made.url) as ws:
            await ws.send('{"type": "AUTH", "id": "a", "data": {"token": "sekrit"}}')
            assert (await recv(ws))["data"] == {"ok": True}
            await ws.send('{"type": "AUTH", "id": "b", "data": {"token": "guess"}}')
            assert (await recv(ws))["data"]["code"] == "UNAUTHORIZED"
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
        for bad in (made.url + "?token=wrong", made.url):
            async with connect(bad) as ws:
                if bad == made.url:
                    await ws.send('{"type": "PING"}')
                error = await recv(ws)
                assert error["data"]["code"] == "UNAUTHORIZED" and error["data"]["retryable"] is False
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    finally:
        await made.server.stop()


async def _slow_pair(made: Box) -> tuple[socket.socket, int]:
    tiny = socket.create_connection(("127.0.0.1", made.server.port))
    tiny.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return tiny, made.server.port


async def _flood(fast: ClientConnection, kind: str, make: Any, count: int) -> list[dict[str, Any]]:
    """Send ``count`` requests from ``fast`` while reading its answers; its echoes in order."""

    async def sender() -> None:
        for i in range(count):
            await request(fast, kind, make(i), f"p{i}")

    sending = asyncio.create_task(sender())
    echoes = [await recv_type(fast, kind) for _ in range(count)]
    await sending
    return echoes


async def test_slow_client_is_dropped_not_waited_for() -> None:
    """A client that stops reading is dropped (1013) when events fill its queue; the sender
    keeps getting every echo at once."""
    made = await make_box(send_buffer=65536, rate_limit=RateLimit(rate=1e6, burst=1_000_000))
    count = 20000
    try:
        tiny, _ = await _slow_pair(made)
        async with connect(made.url) as fast, connect(made.url, sock=tiny, max_queue=1) as slow:
            plugin = (await add_gain(fast))["data"]["plugin_id"]
            slow.transport.pause_reading()
            echoes = await _flood(
                fast, "PLUGIN_BYPASS", lambda i: {"track_id": TRACK, "plugin_id": plugin, "bypass": i % 2 == 0}, count
            )
            assert [e["reply_to"] for e in echoes] == [f"p{i}" for i in range(count)]
            assert len(made.server.sessions) == 1
    finally:
        await made.server.stop()


async def test_a_slow_client_gets_the_latest_values_not_a_backlog() -> None:
    """While a client is behind, a control dragged elsewhere does not pile up for it: it stays
    connected, and once it reads again it gets the control's last value, not 20,000 old ones."""
    made = await make_box(send_buffer=65536, rate_limit=RateLimit(rate=1e6, burst=1_000_000))
    count = 20000
    try:
        tiny, _ = await _slow_pair(made)
        async with connect(made.url) as fast, connect(made.url, sock=tiny) as slow:
            plugin = (await add_gain(fast))["data"]["plugin_id"]
            await recv_type(slow, "PLUGIN_ADD")
            slow.transport.pause_reading()

            def change(i: int) -> dict[str, Any]:
                value = -(i % 80) if i < count - 1 else -12.5
                return {"track_id": TRACK, "plugin_id": plugin, "parameter_id": "gain", "parameter_value": value}

            echoes = await _flood(fast, "PLUGIN_PARAMETER", change, count)
            assert [e["reply_to"] for e in echoes] == [f"p{i}" for i in range(count)]
            assert len(made.server.sessions) == 2, "the slow client was dropped"
            slow.transport.resume_reading()
            seen = []
            with contextlib.suppress(TimeoutError):
                while True:
                    seen.append(json.loads(await asyncio.wait_for(slow.recv(), 1.0)))
            values = [m["data"]["parameter_value"] for m in seen if m["type"] == "PLUGIN_PARAMETER"]
            assert values[-1] == -12.5, "the last value never reached the slow client"
            assert len(values) < count // 4, f"{len(values)} changes queued for a client that was behind"
    finally:
        await made.server.stop()


async def test_healthz_and_static(box: Box) -> None:
    """/healthz reports the engine's own figures and the board as JSON, 503 once the engine is down;
    / serves the page; other paths 404."""
    base = f"http://127.0.0.1:{box.server.port}"

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(base + path, timeout=RECV_TIMEOUT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    async with connect(box.url) as phone:
        await add_gain(phone)
    box.engine.sample_rate = 44100
    status, body = await asyncio.to_thread(get, "/healthz")
    report = json.loads(body)
    assert status == 200 and report["running"] is True
    assert (report["engine"], report["sample_rate"], report["board_plugins"], report["clients"]) == ("fake", 44100, 1, 0)
    status, body = await asyncio.to_thread(get, "/")
    assert status == 200 and b"<html" in body
    assert (await asyncio.to_thread(get, "/../pyproject.toml"))[0] == 404
    box.engine.down = True
    status, body = await asyncio.to_thread(get, "/healthz")
    assert status == 503 and json.loads(body)["running"] is False


async def test_a_footswitch_never_waits_for_a_plugin_start(box: Box) -> None:
    """While a plugin takes its time to start, a bypass and a knob on the board that plays are
    echoed at once; a knob turned on the starting plugin is kept, and it joins with that value."""
    async with connect(box.url) as phone:
        first = (await add_gain(phone, "a1"))["data"]["plugin_id"]
        box.engine.add_gate = asyncio.Event()
        await request(phone, "PLUGIN_ADD", {"track_id": TRACK, "name": "Gain", "plugin_path": "", "plugin_id": ""}, "slow")
        async with asyncio.timeout(RECV_TIMEOUT):
            while not box.engine.starting:
                await asyncio.sleep(0.001)
        starting = next(iter(box.engine.starting))
        await request(phone, "PLUGIN_BYPASS", {"track_id": TRACK, "plugin_id": first, "bypass": True}, "fs")
        echo = await recv(phone)
        assert (echo["type"], echo["reply_to"]) == ("PLUGIN_BYPASS", "fs")
        assert box.engine.bypassed[first] is True
        knob = {"track_id": TRACK, "plugin_id": starting, "parameter_id": "gain", "parameter_value": -9}
        await request(phone, "PLUGIN_PARAMETER", knob, "knob")
        echo = await recv(phone)
        assert (echo["type"], echo["reply_to"], echo["data"]["parameter_value"]) == ("PLUGIN_PARAMETER", "knob", -9.0)
        assert box.engine.values[starting] == {"gain": -9.0}
        assert box.engine.chain(TRACK) == [first]  # the add is still going
        box.engine.add_gate.set()
        added = await recv_type(phone, "PLUGIN_ADD")
        assert added["reply_to"] == "slow" and added["data"]["plugin_id"] == starting
        assert added["data"]["parameters"] == {"gain": -9.0}
        assert box.engine.chain(TRACK) == [first, starting]


async def test_engine_parameter_changes_reach_every_client_and_the_board(box: Box) -> None:
    """A value the engine changed itself (a plugin's own automation, a preset inside the host)
    is committed to the board and broadcast as PLUGIN_PARAMETER, in the client's units."""
    async with connect(box.url) as phone:
        plugin = (await add_gain(phone))["data"]["plugin_id"]
        box.engine.on_event(EngineEvent("parameter", plugin, values={"gain": -4.5}))
        event = await recv_type(phone, "PLUGIN_PARAMETER")
        assert event["data"] == {"track_id": TRACK, "plugin_id": plugin, "parameter_id": "gain", "parameter_value": -4.5}
        assert event["origin"] == {"source": "engine"}
        assert box.controller.board.plugin(TRACK, plugin).values == {"gain": -4.5}
        box.engine.on_event(EngineEvent("parameter", plugin, values={"gain": -4.5}))  # no change: no event
        await phone.send('{"id": "sync", "type": "PING"}')
        assert (await recv(phone))["type"] == "PONG"


@pytest.mark.parametrize(
    ("kind", "sentence"),
    [(kind, sentence) for kind, sentence in ENGINE_EVENT_SENTENCES.items()],
)
async def test_engine_events_tell_clients_without_internals(box: Box, kind: str, sentence: str) -> None:
    """Every engine event kind reaches clients as ENGINE_EVENT with the box's own sentence; the
    engine's message (process output, paths, library errors) stays in the log."""
    internals = "jalv exited with signal SIGSEGV: /usr/lib/lv2/secret.lv2 | LD_LIBRARY_PATH=/opt/x"
    async with connect(box.url) as phone:
        plugin = (await add_gain(phone))["data"]["plugin_id"]
        box.engine.on_event(EngineEvent(kind, plugin, internals))
        event = await recv_type(phone, "ENGINE_EVENT")
        assert event["data"] == {"kind": kind, "plugin_id": plugin, "message": sentence}
        assert "secret" not in json.dumps(event)
