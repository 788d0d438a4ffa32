"""Level meters and the stage tuner on the virtual rig, under every engine.

What a player would notice if these broke: the phone's meters showing a
level the box is not playing (or none), the tuner naming the wrong note, or
the box still sounding while tuning (the audience hears the tuning) or staying
silent after the tuner is turned off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from appliance.core.controls import PluginType
from appliance.engine import Engine, OwnPlugins, TrackPorts
from appliance.engine.jack.server import JackServer
from appliance.plugins.catalog import Catalog
from tests.engines import ENGINE_ADAPTERS, EngineFactory
from tests.rig import Rig, rms_db, sine

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
TRACK = "guitar"
AMP = "http://lv2plug.in/plugins/eg-amp"
RATE = 48000
#: How often the tests ask for readings, as the box does for a phone (15 Hz).
POLL = 1 / 15


@pytest.fixture(scope="module")
def amp_type() -> PluginType:
    found = Catalog.load(ROOT / "config" / "plugins.yaml", scan=False).lookup(AMP)
    assert found is not None, f"{AMP} is not installed"
    return found


@pytest.fixture(params=list(ENGINE_ADAPTERS))
def engine_factory(request: pytest.FixtureRequest, jack_server: JackServer) -> EngineFactory:
    return ENGINE_ADAPTERS[str(request.param)](jack_server.name)


@pytest_asyncio.fixture
async def engine(engine_factory: EngineFactory, rig: Rig, own_plugins: OwnPlugins) -> AsyncIterator[Engine]:
    """A started engine with its own plugins, one track from the rig's player to its recorder."""
    engine = engine_factory(
        [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], lambda event: None, own=own_plugins
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def polling(engine: Engine, seconds: float, then: Callable[[], Any]) -> Any:
    """Ask for readings at the phones' rate for ``seconds``, then return ``then()``."""
    for _ in range(round(seconds / POLL)):
        engine.request_readings()
        await asyncio.sleep(POLL)
    return then()


async def during(
    rig: Rig, signal: np.ndarray, action: Callable[[], Awaitable[Any]]
) -> tuple[np.ndarray, Any]:
    """Record ``signal`` through the engine while ``action`` runs (from 0.2 s in); a take
    during which the server had an xrun fails the test."""
    _, recorded, outcome = await rig.record_during(signal, action, lead_frames=RATE // 5)
    rig.require_clean("the recording")
    if isinstance(outcome, Exception):
        raise outcome
    return recorded[:, 0], outcome


async def test_meters_show_the_level_in_and_out_of_the_board(
    engine: Engine, rig: Rig, amp_type: PluginType
) -> None:
    """A −6 dBFS tone into a board that takes 12 dB off: the meters read about −6 in and −18 out."""
    await engine.add_plugin(TRACK, "amp", amp_type, 0, {"gain": -12.0})
    _, levels = await during(
        rig, sine(1000.0, 2 * RATE, RATE, -6.0), lambda: polling(engine, 1.2, engine.levels)
    )
    assert levels[TRACK]["in"] == pytest.approx(-6.0, abs=1.0), levels
    assert levels[TRACK]["out"] == pytest.approx(-18.0, abs=1.0), levels
    quiet = await polling(engine, 1.5, engine.levels)  # a peak meter falls back at about 15 dB/s
    assert quiet[TRACK]["in"] < -20 and quiet[TRACK]["out"] < -32, f"the meters did not fall: {quiet}"


async def test_the_tuner_names_the_note_and_silences_the_box_until_it_is_off(
    engine: Engine, rig: Rig
) -> None:
    """An A string (110 Hz) with the tuner on: the box falls silent at once and the tuner
    reads A2 within 3 cents; with the tuner off again the guitar is heard as before."""
    string = sine(110.0, 3 * RATE, RATE, -12.0)

    async def tune() -> tuple[int, object]:
        await engine.set_tuner(True)
        muted_at = rig.position()
        return muted_at, await polling(engine, 1.5, engine.tuner)

    out, (muted_at, reading) = await during(rig, string, tune)
    assert rms_db(out[RATE // 10 : RATE // 5]) == pytest.approx(-15.0, abs=0.5), (
        "the string was not heard before"
    )
    silent = out[muted_at + RATE // 20 :]
    assert rms_db(silent) < -90.0, f"the box still sounds while tuning ({rms_db(silent):.1f} dBFS)"
    assert isinstance(reading, dict), f"the tuner heard no note: {reading}"
    assert (reading["note"], reading["octave"]) == ("A", 2), reading
    assert abs(float(reading["cents"])) < 3.0, reading
    assert reading["frequency"] == pytest.approx(110.0, abs=0.5), reading

    await engine.set_tuner(False)
    assert engine.tuner() is None
    _, recorded = await rig.play_and_record(string[: RATE // 2])
    rig.require_clean("the string after tuning")
    assert rms_db(recorded[RATE // 10 :, 0]) == pytest.approx(-15.0, abs=0.5), (
        "the box stayed silent after tuning"
    )
