"""Warm standby: the setlist's neighbours are handed to the engine before anyone asks for them.

The library tells the engine (:meth:`Engine.prepare`) which pedalboards a
setlist step from here would load, after every change that can alter that;
the Carla engine keeps them loaded and idle (tests/test_carla.py hears a
switch wake one). Here the engine is the in-memory one, recording what it
was asked to prepare.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from appliance.engine import SavedPlugin, TrackPorts
from appliance.plugins.catalog import Catalog
from tests.fakes import ControlStack, FakeEngine

pytestmark = pytest.mark.asyncio(loop_scope="function")

ROOT = Path(__file__).resolve().parent.parent
TRACK = "track_001"
#: How long the library may take to read the files and hand the boards over.
PREPARE_TIMEOUT = 5.0

Prepared = list[list[tuple[str, dict[str, float], bool]]]


class PreparingEngine(FakeEngine):
    """The in-memory engine, keeping every list of boards it was asked to prepare."""

    def __init__(self) -> None:
        super().__init__([TrackPorts(TRACK, ("in",), ("out",))])
        self.prepared: list[Prepared] = []

    def prepare(self, boards: Sequence[Sequence[SavedPlugin]]) -> None:
        self.prepared.append(
            [[(p.type.key, dict(p.values), p.bypass) for p in board] for board in boards]
        )


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)


@pytest.fixture
async def stack(catalog: Catalog, tmp_path: Path) -> ControlStack:
    stack = ControlStack(catalog, tmp_path, TRACK, engine=PreparingEngine())
    await stack.engine.start()
    await stack.library.start(None)
    return stack


async def _prepared(stack: ControlStack, keys: list[list[str]]) -> Prepared:
    """Wait until the last boards handed over have these plugin keys; those boards."""
    engine = stack.engine
    assert isinstance(engine, PreparingEngine)
    try:
        async with asyncio.timeout(PREPARE_TIMEOUT):
            while not engine.prepared or [[key for key, _v, _b in b] for b in engine.prepared[-1]] != keys:
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"prepared {engine.prepared[-1:]} , wanted {keys}") from None
    return engine.prepared[-1]


async def _two_pedalboards(stack: ControlStack) -> None:
    """clean (gain −6) and crunch (overdrive, then gain −3, the overdrive bypassed)."""
    gain = await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    await stack.ask("PLUGIN_REMOVE", track_id=TRACK, plugin_id=gain)
    drive = await stack.add("overdrive")
    await stack.add("gain", gain=-3.0)
    await stack.ask("PLUGIN_BYPASS", track_id=TRACK, plugin_id=drive, bypass=True)
    await stack.ask("PEDALBOARD_SAVE", name="crunch")


async def test_a_setlist_hands_its_next_and_previous_pedalboards_over(stack: ControlStack) -> None:
    """Each step's neighbours are handed over with their saved plugins, values and bypass: what a
    NEXT or PREVIOUS would load. The pedalboard playing unchanged is not (a step to it only
    recalls a snapshot)."""
    await _two_pedalboards(stack)
    entries = [{"pedalboard": "clean"}, {"pedalboard": "crunch"}, {"pedalboard": "clean"}]
    await stack.ask("SETLIST_SET", entries=entries)
    # No position yet: NEXT loads the first entry, PREVIOUS the last, both "clean".
    (clean,) = await _prepared(stack, [["gain"]])
    assert clean == [("gain", {"gain": -6.0}, False)]

    await stack.ask("SETLIST_NEXT")  # clean plays: next is crunch, previous is clean itself
    (crunch,) = await _prepared(stack, [["overdrive", "gain"]])
    assert [(key, bypass) for key, _values, bypass in crunch] == [("overdrive", True), ("gain", False)]
    assert crunch[1][1]["gain"] == -3.0

    await stack.ask("SETLIST_NEXT")  # crunch plays: both neighbours are clean, handed over once
    await _prepared(stack, [["gain"]])


async def test_a_changed_pedalboard_is_handed_over_again(stack: ControlStack) -> None:
    """A board changed since its pedalboard was loaded makes that pedalboard a neighbour (a step
    to it loads it afresh); a neighbour saved over is handed over with its new content."""
    await _two_pedalboards(stack)
    await stack.ask("SETLIST_SET", entries=[{"pedalboard": "clean"}, {"pedalboard": "crunch"}])
    await stack.ask("SETLIST_GO", position=0)  # clean plays; crunch is next
    await _prepared(stack, [["overdrive", "gain"]])

    await stack.add("reverb")  # clean, changed: PREVIOUS would load clean again
    await _prepared(stack, [["overdrive", "gain"], ["gain"]])

    await stack.ask("PEDALBOARD_SAVE", name="crunch", overwrite=True)  # crunch is now gain + reverb
    await stack.ask("PEDALBOARD_LOAD", name="clean")
    (crunch,) = await _prepared(stack, [["gain", "reverb"]])
    assert crunch[0] == ("gain", {"gain": -6.0}, False)
