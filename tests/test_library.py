"""Pedalboards, snapshots and the setlist through the box's control interface, on real files.

The controller, the library and the pedalboard files are the box's own; the
engine is the in-memory one (tests/fakes.py), so these tests say what the
board, the files and every client see. What is heard during a switch is
tests/test_switching.py and tests/test_box_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from appliance.core.errors import ApplianceError
from appliance.core.pedalboards import MAX_SNAPSHOTS
from appliance.plugins.catalog import Catalog
from tests.fakes import ControlStack

pytestmark = pytest.mark.asyncio(loop_scope="function")

ROOT = Path(__file__).resolve().parent.parent
TRACK = "track_001"
SPILLOVER = 3.0
#: What the library writes in the data folder besides pedalboards.
DATA_FILES = ("setlist.json", "setlist.json.bak")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)


class Stack(ControlStack):
    """The control stack on a fake engine, with a few readings of its own."""

    def __init__(self, catalog: Catalog, data_dir: Path) -> None:
        super().__init__(catalog, data_dir, TRACK, spillover=SPILLOVER)

    async def start(self, saved: dict[str, Any] | None = None) -> Stack:
        await self.engine.start()
        await self.library.start(saved)
        return self

    async def refused(self, kind: str, **data: Any) -> ApplianceError:
        with pytest.raises(ApplianceError) as caught:
            await self.ask(kind, **data)
        return caught.value

    def chain(self) -> list[tuple[str, dict[str, float], bool]]:
        return [(p.type.key, dict(p.values), p.bypass) for p in self.board.tracks[TRACK].chain]

    def state(self) -> dict[str, Any]:
        return self.library.state()


@pytest.fixture
async def stack(catalog: Catalog, tmp_path: Path) -> Stack:
    return await Stack(catalog, tmp_path).start()


async def _three_pedalboards(stack: Stack) -> None:
    """clean (gain −6; snapshots quiet −20, loud 0), crunch (overdrive + gain, no spillover;
    snapshots off = overdrive bypassed, on), ambient (delay + reverb; snapshots short, long)."""
    gain = await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    await stack.set(gain, "gain", -20.0)
    await stack.ask("SNAPSHOT_SAVE", name="quiet")
    await stack.set(gain, "gain", 0.0)
    await stack.ask("SNAPSHOT_SAVE", name="loud")

    await stack.ask("PLUGIN_REMOVE", track_id=TRACK, plugin_id=gain)
    drive = await stack.add("overdrive", drive=0.8)
    await stack.add("gain", gain=-3.0)
    await stack.ask("PEDALBOARD_SAVE", name="crunch", spillover=False)
    await stack.ask("PLUGIN_BYPASS", track_id=TRACK, plugin_id=drive, bypass=True)
    await stack.ask("SNAPSHOT_SAVE", name="off")
    await stack.ask("PLUGIN_BYPASS", track_id=TRACK, plugin_id=drive, bypass=False)
    await stack.ask("SNAPSHOT_SAVE", name="on")

    for _track, plugin in list(stack.board.instances()):
        await stack.ask("PLUGIN_REMOVE", track_id=TRACK, plugin_id=plugin.id)
    delay = await stack.add("delay")
    await stack.add("reverb")
    await stack.ask("PEDALBOARD_SAVE", name="ambient", spillover=True)
    await stack.set(delay, "time", 200.0)
    await stack.ask("SNAPSHOT_SAVE", name="short")
    await stack.set(delay, "time", 600.0)
    await stack.ask("SNAPSHOT_SAVE", name="long")


async def test_a_player_steps_through_a_setlist_of_three_pedalboards(stack: Stack) -> None:
    """Three pedalboards with two snapshots each, in a setlist: next and previous load each
    pedalboard with its snapshot, and the board is exactly what was saved."""
    await _three_pedalboards(stack)
    assert stack.state()["pedalboards"] == ["ambient", "clean", "crunch"]
    entries = [
        {"pedalboard": "clean", "snapshot": "quiet"},
        {"pedalboard": "clean", "snapshot": "loud"},
        {"pedalboard": "crunch", "snapshot": "off"},
        {"pedalboard": "ambient", "snapshot": "long"},
    ]
    await stack.ask("SETLIST_SET", entries=entries)
    first = len(stack.engine.switches)

    await stack.ask("SETLIST_NEXT")
    assert stack.chain() == [("gain", {"gain": -20.0}, False)]
    assert (stack.state()["pedalboard"], stack.state()["snapshot"]) == ("clean", "quiet")
    switches = len(stack.engine.switches)
    await stack.ask("SETLIST_NEXT")
    assert stack.chain() == [("gain", {"gain": 0.0}, False)]
    assert len(stack.engine.switches) == switches, "the same pedalboard was loaded again for a snapshot"
    await stack.ask("SETLIST_NEXT")
    assert [(key, bypass) for key, _values, bypass in stack.chain()] == [("overdrive", True), ("gain", False)]
    await stack.ask("SETLIST_NEXT")
    assert [key for key, _v, _b in stack.chain()] == ["delay", "reverb"]
    assert stack.chain()[0][1]["time"] == pytest.approx(600.0)
    await stack.ask("SETLIST_NEXT")
    assert stack.state()["setlist"]["position"] == 3, "next went past the last song"
    await stack.ask("SETLIST_PREVIOUS")
    assert (stack.state()["pedalboard"], stack.state()["snapshot"]) == ("crunch", "off")
    assert stack.state()["modified"] is False
    # Each switch left the old board ringing on when the old board allows it (crunch does not):
    # ambient → clean, clean → crunch, crunch → ambient, ambient → crunch.
    assert stack.engine.switches[first:] == [SPILLOVER, SPILLOVER, 0.0, SPILLOVER]


async def test_a_loaded_pedalboard_gets_fresh_ids_and_clients_follow_with_ordinary_events(
    stack: Stack,
) -> None:
    """Clients that know only the published messages see the old plugins removed and the
    new ones added; no plugin id is ever used twice."""
    first = await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    events = await stack.ask("PEDALBOARD_LOAD", name="clean")
    kinds = [kind for kind, _data in events]
    assert kinds == ["PLUGIN_REMOVE", "PLUGIN_ADD", "PEDALBOARD_STATE"]
    assert events[0][1]["plugin_id"] == first
    new_id = events[1][1]["plugin_id"]
    assert new_id != first and events[1][1]["parameters"] == {"gain": -6.0}
    assert stack.engine.chain(TRACK) == [new_id]


async def test_unsaved_changes_show_and_survive_a_switch(stack: Stack, tmp_path: Path) -> None:
    """A knob turned after saving marks the board modified (told once to everyone); the
    pedalboard file keeps what was saved, and board.json keeps being saved."""
    gain = await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    assert stack.state()["modified"] is False
    stack.events.clear()
    await stack.set(gain, "gain", -9.0)
    await stack.set(gain, "gain", -10.0)
    told = [data for kind, data in stack.events if kind == "PEDALBOARD_STATE"]
    assert len(told) == 1 and told[0]["modified"] is True
    saved = json.loads((tmp_path / "pedalboards" / "clean.json").read_text())
    assert saved["board"]["tracks"][0]["chain"][0]["values"] == {"gain": -6.0}
    saves = stack.saves
    await stack.ask("PEDALBOARD_LOAD", name="clean")
    assert stack.saves > saves, "the switch was not saved to board.json"
    assert stack.chain() == [("gain", {"gain": -6.0}, False)]
    assert stack.state()["modified"] is False


async def test_a_pedalboard_that_cannot_start_leaves_the_old_one_and_the_files(stack: Stack) -> None:
    """A plugin failing to start: an error naming it, the old board playing, nothing saved over."""
    await stack.add("overdrive")
    await stack.ask("PEDALBOARD_SAVE", name="crunch")
    await stack.ask("PLUGIN_REMOVE", track_id=TRACK, plugin_id=stack.board.tracks[TRACK].chain[0].id)
    await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    files = {p.name: p.read_bytes() for p in stack.store.folder.iterdir()}
    before = stack.chain()
    stack.engine.fail_on_switch = f"plugin_{stack.board.next_number}"
    error = await stack.refused("PEDALBOARD_LOAD", name="crunch")
    assert error.code == "PLUGIN_LOAD_FAILED"
    assert (
        "overdrive could not start" in error.public_message()
        and "old board plays on" in error.public_message()
    )
    assert stack.chain() == before
    assert stack.state()["pedalboard"] == "clean"
    assert {p.name: p.read_bytes() for p in stack.store.folder.iterdir()} == files


async def test_a_pedalboard_with_a_plugin_that_is_not_installed_is_refused_by_name(
    stack: Stack, tmp_path: Path
) -> None:
    await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    path = tmp_path / "pedalboards" / "clean.json"
    data = json.loads(path.read_text())
    data["board"]["tracks"][0]["chain"][0].update(plugin="gone", uri="urn:nowhere", name="Vintage Fuzz")
    path.write_text(json.dumps(data))
    error = await stack.refused("PEDALBOARD_LOAD", name="clean")
    assert error.code == "PLUGIN_LOAD_FAILED" and "Vintage Fuzz" in error.public_message()
    assert stack.chain() == [("gain", {"gain": -6.0}, False)]


async def test_snapshot_recall_changes_values_and_bypass_only(stack: Stack) -> None:
    """Recall loads or removes no plugin; its values and bypass reach the engine and every
    client in one set of events; positions whose plugin changed are left alone."""
    gain = await stack.add("gain", gain=-6.0)
    drive = await stack.add("overdrive", drive=0.2)
    await stack.ask("PEDALBOARD_SAVE", name="crunch")
    await stack.ask("PLUGIN_BYPASS", track_id=TRACK, plugin_id=drive, bypass=True)
    await stack.set(gain, "gain", -12.0)
    await stack.ask("SNAPSHOT_SAVE", name="verse")
    await stack.ask("PLUGIN_BYPASS", track_id=TRACK, plugin_id=drive, bypass=False)
    await stack.set(gain, "gain", 0.0)
    switches = len(stack.engine.switches)
    events = await stack.ask("SNAPSHOT_RECALL", name="verse")
    assert len(stack.engine.switches) == switches
    assert stack.engine.values[gain]["gain"] == -12.0 and stack.engine.bypassed[drive] is True
    assert ("PLUGIN_BYPASS", {"track_id": TRACK, "plugin_id": drive, "bypass": True}) in events
    assert events[-1][0] == "PEDALBOARD_STATE" and events[-1][1]["snapshot"] == "verse"
    assert stack.engine.chain(TRACK) == [gain, drive]


async def test_snapshots_need_a_saved_chain_and_stop_at_eight(stack: Stack) -> None:
    assert (await stack.refused("SNAPSHOT_SAVE", name="a")).code == "UNKNOWN_PEDALBOARD"
    await stack.add("gain")
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    for n in range(MAX_SNAPSHOTS):
        await stack.ask("SNAPSHOT_SAVE", name=f"s{n}")
    assert (await stack.refused("SNAPSHOT_SAVE", name="one too many")).code == "INVALID_VALUE"
    await stack.ask("SNAPSHOT_SAVE", name="s3")  # replacing one is fine
    await stack.add("overdrive")
    error = await stack.refused("SNAPSHOT_SAVE", name="s1")
    assert error.code == "INVALID_VALUE" and "save the pedalboard first" in str(error)
    assert len(stack.state()["snapshots"]) == MAX_SNAPSHOTS


async def test_names_are_checked_and_never_overwrite_by_accident(stack: Stack, tmp_path: Path) -> None:
    await stack.add("gain")
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    await stack.ask("PEDALBOARD_COPY", name="clean", new_name="spare")
    for bad in ("", " ", "x" * 65, "tab\there"):
        assert (await stack.refused("PEDALBOARD_SAVE", name=bad)).code == "INVALID_VALUE"
    assert (await stack.refused("PEDALBOARD_SAVE", name="spare")).code == "NAME_TAKEN"
    assert (await stack.refused("PEDALBOARD_RENAME", name="clean", new_name="spare")).code == "NAME_TAKEN"
    assert (await stack.refused("PEDALBOARD_LOAD", name="nope")).code == "UNKNOWN_PEDALBOARD"
    await stack.ask("PEDALBOARD_SAVE", name="spare", overwrite=True)
    await stack.ask("PEDALBOARD_SAVE", name="a/../../b")  # a name, never a path
    assert "a/../../b" in stack.state()["pedalboards"]
    stored = stack.store.path("a/../../b")
    assert stored.parent == stack.store.folder and stored.is_file(), stored
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    elsewhere = {p for p in written if p.parent != stack.store.folder and p.name not in DATA_FILES}
    assert not elsewhere, f"a pedalboard name wrote outside the pedalboards folder: {elsewhere}"


async def test_rename_and_delete_carry_the_setlist_with_them(stack: Stack) -> None:
    await stack.add("gain")
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    await stack.ask("PEDALBOARD_COPY", name="clean", new_name="spare")
    await stack.ask("SETLIST_SET", entries=[{"pedalboard": "clean"}, {"pedalboard": "spare"}])
    await stack.ask("PEDALBOARD_RENAME", name="clean", new_name="Clean Tone")
    assert stack.state()["pedalboard"] == "Clean Tone"
    assert [e["pedalboard"] for e in stack.state()["setlist"]["entries"]] == ["Clean Tone", "spare"]
    await stack.ask("PEDALBOARD_DELETE", name="spare")
    assert [e["pedalboard"] for e in stack.state()["setlist"]["entries"]] == ["Clean Tone"]
    assert stack.store.read_setlist().entries[0].pedalboard == "Clean Tone"
    await stack.ask("PEDALBOARD_DELETE", name="Clean Tone")
    assert stack.state()["pedalboard"] is None and stack.state()["modified"] is True
    assert stack.chain() == [("gain", {"gain": 0.0}, False)], "deleting a pedalboard touched the board"


async def test_a_bad_setlist_changes_nothing(stack: Stack) -> None:
    await stack.add("gain")
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    await stack.ask("SETLIST_SET", entries=[{"pedalboard": "clean"}])
    assert (await stack.refused("SETLIST_SET", entries=[{"pedalboard": "nope"}])).code == "UNKNOWN_PEDALBOARD"
    assert (await stack.refused("SETLIST_SET", entries=[{"song": 1}])).code == "INVALID_MESSAGE"
    assert (await stack.refused("SETLIST_GO", position=5)).code == "INVALID_VALUE"
    assert [e["pedalboard"] for e in stack.state()["setlist"]["entries"]] == ["clean"]
    await stack.ask("SETLIST_SET", entries=[])
    assert (await stack.refused("SETLIST_NEXT")).code == "INVALID_VALUE"


async def test_a_restart_knows_which_pedalboard_and_snapshot_play(catalog: Catalog, tmp_path: Path) -> None:
    first = await Stack(catalog, tmp_path).start()
    await first.add("gain", gain=-6.0)
    await first.ask("PEDALBOARD_SAVE", name="clean")
    await first.ask("SNAPSHOT_SAVE", name="verse")
    await first.ask("SETLIST_SET", entries=[{"pedalboard": "clean", "snapshot": "verse"}], position=0)
    kept = first.library.saved_state()
    again = Stack(catalog, tmp_path)
    again.board.restore({**first.board.to_dict(), "library": kept}, catalog)
    await again.start(kept)
    state = again.state()
    assert (state["pedalboard"], state["snapshot"], state["modified"]) == ("clean", "verse", False)
    assert state["setlist"]["position"] == 0 and state["snapshots"] == ["verse"]


async def test_a_damaged_pedalboard_file_loads_its_last_good_copy(stack: Stack, tmp_path: Path) -> None:
    gain = await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    await stack.set(gain, "gain", -3.0)
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    (tmp_path / "pedalboards" / "clean.json").write_text("{ half a fi")
    await stack.ask("PEDALBOARD_LOAD", name="clean")
    assert stack.chain() == [("gain", {"gain": -6.0}, False)]


async def test_knobs_and_bypass_act_on_the_playing_board_during_a_load(stack: Stack) -> None:
    """While the new pedalboard starts, the old board answers at once."""
    gain = await stack.add("gain", gain=-6.0)
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    stack.engine.add_gate = asyncio.Event()
    load = asyncio.ensure_future(stack.ask("PEDALBOARD_LOAD", name="clean"))
    await asyncio.sleep(0.01)
    assert not load.done()
    await asyncio.wait_for(stack.ask("PLUGIN_BYPASS", track_id=TRACK, plugin_id=gain, bypass=True), 1.0)
    await asyncio.wait_for(stack.set(gain, "gain", -1.0), 1.0)
    assert stack.engine.bypassed[gain] is True and stack.engine.values[gain]["gain"] == -1.0
    stack.engine.add_gate.set()
    await load
    assert stack.chain() == [("gain", {"gain": -6.0}, False)]


async def test_factory_presets_are_listed_per_plugin_and_load_onto_a_plugin(stack: Stack) -> None:
    """The compressor's own LV2 presets (from its bundle) are in the catalog and load as one change."""
    described = next(p for p in stack.controller.catalog.describe() if p["key"] == "compressor")
    labels = [p["label"] for p in described["presets"]]
    assert "VocalLeveller" in labels, labels
    listed = await stack.ask("PRESET_LIST", plugin="compressor")
    assert [p["label"] for p in listed[0][1]["presets"]] == labels
    compressor = await stack.add("compressor")
    events = await stack.ask("PRESET_LOAD", track_id=TRACK, plugin_id=compressor, preset="VocalLeveller")
    assert events[0][0] == "PLUGIN_PRESET"
    preset = stack.board.plugin(TRACK, compressor).type.preset("VocalLeveller")
    assert stack.engine.values[compressor]["att"] == dict(preset.values)["att"] == 50.0
    assert "gr" not in stack.engine.values[compressor], "a meter was written to"
    error = await stack.refused("PRESET_LOAD", track_id=TRACK, plugin_id=compressor, preset="nope")
    assert error.code == "UNKNOWN_PRESET"


async def test_a_busy_box_cuts_the_old_tails_instead_of_running_two_boards(stack: Stack) -> None:
    """Above the ceiling (two boards' load), the switch has no spillover: the old board goes
    after the crossfade."""
    await stack.add("gain")
    await stack.ask("PEDALBOARD_SAVE", name="clean")
    stack.engine.dsp_load = 30.0
    await stack.ask("PEDALBOARD_LOAD", name="clean")
    stack.engine.dsp_load = 45.0
    await stack.ask("PEDALBOARD_LOAD", name="clean")
    assert stack.engine.switches == [SPILLOVER, 0.0]
