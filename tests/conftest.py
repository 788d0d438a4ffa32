"""Shared fixtures. Each engineer's fixtures live in their own marked section."""

from __future__ import annotations

# ======================================================================================
# Virtual rig: a private JACK dummy server and the play/record test clients.
# Used by the engine contract suite (tests/test_engine_contract.py) and audio tests.
# ======================================================================================
import shutil
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from appliance.engine.jackserver import DummySettings, JackServer, unique_server_name
from tests.rig import Rig

#: The rate and period of every test server (the box's defaults).
RIG_SAMPLE_RATE = 48000
RIG_PERIOD = 128


@pytest_asyncio.fixture
async def jack_server() -> AsyncIterator[JackServer]:
    """A fresh dummy-backend JACK server (48000 Hz, 128 frames, no realtime)."""
    if shutil.which("jackd") is None or shutil.which("jack_lsp") is None:
        pytest.skip("jackd2 is not installed (jackd, jack_lsp)")
    server = JackServer(
        unique_server_name("test"),
        DummySettings(sample_rate=RIG_SAMPLE_RATE, period=RIG_PERIOD, realtime=False),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def rig(jack_server: JackServer) -> AsyncIterator[Rig]:
    """A one-channel :class:`tests.rig.Rig` open on ``jack_server``."""
    rig = Rig(jack_server.name, channels=1)
    await rig.open()
    try:
        yield rig
    finally:
        await rig.close()


# ======================================================================================
# End of the virtual rig section.
# ======================================================================================
