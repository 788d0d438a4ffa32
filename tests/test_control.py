"""What is saved keeps up with the board when phones change it at the same time.

Each test plays one interleaving of two phones' requests, deterministically:
the first request is held at the point where it waits (a file being written,
a footswitch being applied) while the second lands. Whatever the order, what
the box then saves and says must be true of some order of the two requests.

What a user would notice if this broke: the box says the board is the saved
pedalboard while the pedalboard file holds an older chain (loading it later
brings back the old order), or a snapshot recall's values that play but are
never saved (a restart brings back the values from before the recall).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from appliance.core.errors import UnknownPlugin
from appliance.engine import TrackPorts
from appliance.plugins.catalog import Catalog
from tests.fakes import ControlStack, FakeEngine

pytestmark = pytest.mark.asyncio(loop_scope="function")

ROOT = Path(__file__).resolve().parent.parent
TRACK = "track_001"
#: How long a held request may wait for the test to let it go.
HOLD_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)


class HeldFootswitch(FakeEngine):
    """The in-memory engine, whose bypasses wait until let go (a rerouting bypass waiting
    for the JACK graph); values are applied at once, to plugins still in a chain."""

    def __init__(self) -> None:
        super().__init__([TrackPorts(TRACK, ("in",), ("out",))])
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def set_bypass(self, plugin_id: str, bypass: bool) -> None:
        self.holding.set()
        await self.release.wait()
        await super().set_bypass(plugin_id, bypass)

    async def set_parameters(self, plugin_id: str, values: Mapping[str, float]) -> None:
        if plugin_id not in self.chain(TRACK):  # as the real engines: a removed plugin is unknown
            raise UnknownPlugin(f"no plugin {plugin_id!r}")
        await super().set_parameters(plugin_id, values)


def order(stack: ControlStack) -> list[str]:
    return [p.id for p in stack.board.tracks[TRACK].chain]


async def test_a_pedalboard_saved_while_another_phone_moves_a_plugin_is_told_apart_from_the_board(
    catalog: Catalog, tmp_path: Path
) -> None:
    """A phone saves the pedalboard; another phone's move lands while the file is written.
    The file holds the order it was saved with, and the box says the board now differs from
    it, to phones and in board.json (it said "not modified": the moved order was never saved
    to the pedalboard, and a restart or a setlist step believed it was)."""
    stack = ControlStack(catalog, tmp_path, TRACK)
    await stack.engine.start()
    await stack.library.start(None)
    first = await stack.add("gain")
    second = await stack.add("gain", gain=-6.0)
    writing, written = threading.Event(), threading.Event()
    create = stack.store.create

    def slow_create(pedalboard):  # type: ignore[no-untyped-def]
        writing.set()
        written.wait(HOLD_TIMEOUT)
        create(pedalboard)

    stack.store.create = slow_create  # type: ignore[method-assign]
    saving = asyncio.create_task(stack.ask("PEDALBOARD_SAVE", name="Verse"))
    assert await asyncio.to_thread(writing.wait, HOLD_TIMEOUT)
    await stack.ask("PLUGIN_MOVE", track_id=TRACK, plugin_id=second, position=0)
    written.set()
    await saving
    saved = await asyncio.to_thread(stack.store.read, "Verse")
    assert [p["id"] for p in saved.board["tracks"][0]["chain"]] == [first, second]
    assert order(stack) == [second, first]
    assert stack.library.state()["modified"] is True, "the box says the moved board is the saved one"
    assert stack.library.saved_state()["modified"] is True


async def test_a_snapshot_saved_while_another_phone_turns_a_knob_is_told_apart_from_the_board(
    catalog: Catalog, tmp_path: Path
) -> None:
    """A phone saves a snapshot; another phone's knob lands while the pedalboard file is
    written. The snapshot holds the value it was taken with, and the box says the board now
    differs from it."""
    stack = ControlStack(catalog, tmp_path, TRACK)
    await stack.engine.start()
    await stack.library.start(None)
    gain = await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="Verse")
    writing, written = threading.Event(), threading.Event()
    write = stack.store.write

    def slow_write(pedalboard):  # type: ignore[no-untyped-def]
        writing.set()
        written.wait(HOLD_TIMEOUT)
        write(pedalboard)

    stack.store.write = slow_write  # type: ignore[method-assign]
    saving = asyncio.create_task(stack.ask("SNAPSHOT_SAVE", name="quiet"))
    assert await asyncio.to_thread(writing.wait, HOLD_TIMEOUT)
    await stack.set(gain, "gain", -20.0)
    written.set()
    await saving
    saved = await asyncio.to_thread(stack.store.read, "Verse")
    assert saved.snapshot("quiet").tracks[TRACK][0]["values"]["gain"] == -6.0
    assert stack.library.state()["modified"] is True, "the box says the turned knob is the snapshot"


async def test_a_snapshot_recall_that_meets_a_removed_plugin_sets_and_saves_the_others(
    catalog: Catalog, tmp_path: Path
) -> None:
    """A phone recalls a snapshot while a footswitch is being applied; another phone removes
    a plugin meanwhile. The recall sets every other plugin, says so to the phones and has it
    saved (it stopped at the removed plugin with the values before it set on the board but
    never broadcast nor saved, and answered with an error)."""
    engine = HeldFootswitch()
    engine.release.set()
    stack = ControlStack(catalog, tmp_path, TRACK, engine=engine)
    await engine.start()
    await stack.library.start(None)
    first = await stack.add("gain", gain=-6.0)
    second = await stack.add("gain", gain=-6.0)
    third = await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="Verse")
    for plugin_id in (first, second, third):
        await stack.set(plugin_id, "gain", -20.0)
    await stack.ask("SNAPSHOT_SAVE", name="quiet")
    for plugin_id in (first, second, third):
        await stack.set(plugin_id, "gain", 0.0)
    engine.release.clear()
    engine.holding.clear()
    footswitch = asyncio.create_task(
        stack.ask("PLUGIN_BYPASS", track_id=TRACK, plugin_id=first, bypass=True)
    )
    await asyncio.wait_for(engine.holding.wait(), HOLD_TIMEOUT)
    recalling = asyncio.create_task(stack.ask("SNAPSHOT_RECALL", name="quiet"))
    for _ in range(5):
        await asyncio.sleep(0)  # the recall plans, then waits for the footswitch
    await stack.ask("PLUGIN_REMOVE", track_id=TRACK, plugin_id=second)
    saves = stack.saves
    stack.events.clear()
    engine.release.set()
    await footswitch
    events = await recalling
    values = {p.id: p.values["gain"] for p in stack.board.tracks[TRACK].chain}
    assert values == {first: -20.0, third: -20.0}
    told = {e[1]["plugin_id"] for e in events if e[0] == "PLUGIN_PARAMETER"}
    assert told == {first, third}
    assert stack.saves >= saves + 2, "the recall's values were not saved"  # the footswitch, the recall
