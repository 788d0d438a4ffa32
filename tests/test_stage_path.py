"""The stage-critical path with real engines: a footswitch over WebSocket never waits for a plugin start.

The box's control stack (ControlServer, Controller, Board) runs here on a
real engine on the virtual rig, told to pre-roll each new plugin for
seconds, so that "during the add" is a long, certain window. The phone is a
real WebSocket client; the sound is recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from appliance.config import ServerConfig
from appliance.control.controller import Controller
from appliance.core.board import Board
from appliance.engine import Engine, TrackPorts
from appliance.engine.jack.server import JackServer
from appliance.frontends.net import ControlServer
from appliance.plugins.catalog import Catalog
from tests.engines import ENGINE_ADAPTERS
from tests.rig import Rig, sine

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parent.parent
TRACK = "track_001"
PROBE = sine(1000.0, 4800, 48000, -12.0)
TOLERANCE_DB = 0.1
#: Seconds each new plugin pre-rolls: far longer than anything the test does meanwhile.
SLOW_START = 4.0
REPLY_TIMEOUT = 20.0


@pytest.fixture(params=sorted(ENGINE_ADAPTERS))
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def stack(engine_name: str, jack_server: JackServer, rig: Rig) -> AsyncIterator[tuple[str, Engine]]:
    """The box's control stack on a real engine; yields the WebSocket URL and the engine."""
    engine = ENGINE_ADAPTERS[engine_name](jack_server.name)(
        [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], lambda event: None
    )
    await engine.start()
    catalog = await asyncio.to_thread(Catalog.load, ROOT / "config" / "plugins.yaml", False)
    controller = Controller(Board([TRACK]), catalog, engine)
    server = ControlServer(ServerConfig(host="127.0.0.1", port=0), controller, lambda: (True, {}))
    await server.start()
    try:
        yield f"ws://127.0.0.1:{server.port}/ws", engine
    finally:
        await server.stop()
        await engine.stop()


async def _send(ws: ClientConnection, mark: str, kind: str, **data: Any) -> None:
    await ws.send(json.dumps({"id": mark, "type": kind, "data": {"track_id": TRACK, **data}}))


async def _answer(ws: ClientConnection, mark: str) -> dict[str, Any]:
    async with asyncio.timeout(REPLY_TIMEOUT):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message.get("reply_to") == mark:
                return message


def _near(target: float) -> Any:
    return lambda gain: abs(gain - target) <= TOLERANCE_DB


async def test_bypass_during_a_slow_add_is_echoed_and_heard_before_the_add_completes(
    stack: tuple[str, Engine], rig: Rig
) -> None:
    """Gain −6 plays; an add starts (seconds of pre-roll); the same phone's bypass is echoed
    and heard (dry) while the add is still going; when the add lands, chain and sound agree."""
    url, engine = stack
    async with connect(url) as phone:
        await _send(phone, "a", "PLUGIN_ADD", name="gain")
        gain = (await _answer(phone, "a"))["data"]["plugin_id"]
        await _send(phone, "g", "PLUGIN_PARAMETER", plugin_id=gain, parameter_id="gain", parameter_value=-6)
        await _answer(phone, "g")
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)

        engine.preroll = SLOW_START  # type: ignore[attr-defined]
        await _send(phone, "slow", "PLUGIN_ADD", name="gain")
        async with asyncio.timeout(REPLY_TIMEOUT):  # the add is under way in the engine
            while not engine.info().details.get("starting"):
                await asyncio.sleep(0.005)
        await _send(phone, "fs", "PLUGIN_BYPASS", plugin_id=gain, bypass=True)
        echo = await _answer(phone, "fs")
        assert echo["type"] == "PLUGIN_BYPASS" and echo["data"]["bypass"] is True
        assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
        assert engine.chain(TRACK) == [gain], "the add finished first: the test proves nothing"

        added = await _answer(phone, "slow")
        assert added["type"] == "PLUGIN_ADD"
        assert engine.chain(TRACK) == [gain, added["data"]["plugin_id"]]
        assert await rig.measure_gain(PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)  # bypassed, plus unity
