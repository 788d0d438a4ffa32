"""The board's rules: ids, chains, clamping, snapping, atomic multi-value changes, saving."""

import math

import pytest

from appliance.core.board import Board
from appliance.core.errors import InvalidMessage, InvalidValue, UnknownParameter, UnknownPlugin, UnknownTrack
from tests.fakes import AMP, COMP, FakeCatalog


def board_with(*types):  # type: ignore[no-untyped-def]
    board = Board(["track_001"])
    ids = []
    for plugin_type in types:
        instance = board.new_instance(plugin_type, plugin_type.name)
        board.insert("track_001", instance)
        ids.append(instance.id)
    return board, ids


def test_ids_are_assigned_and_never_reused() -> None:
    """Plugin ids come from the board and are not reused after a removal."""
    board, (first, second) = board_with(AMP, AMP)
    board.remove("track_001", second)
    third = board.new_instance(AMP, "x")
    assert (first, second, third.id) == ("plugin_1", "plugin_2", "plugin_3")


def test_unknown_track_and_plugin() -> None:
    """Unknown track and plugin ids raise their own errors."""
    board, _ = board_with(AMP)
    with pytest.raises(UnknownTrack):
        board.plugin("track_999", "plugin_1")
    with pytest.raises(UnknownPlugin):
        board.plugin("track_001", "plugin_9")
    with pytest.raises(InvalidMessage):
        board.plugin("track_001", 5)


def test_out_of_range_is_clamped() -> None:
    """A value beyond the control's range is clamped; the plan says what is applied."""
    board, (amp,) = board_with(AMP)
    plan = board.plan_parameters("track_001", amp, {"gain": 100})
    assert plan.values == {"gain": 24.0} and plan.engine == {"gain": 24.0}
    assert board.plan_parameters("track_001", amp, {"gain": -1000}).values == {"gain": -90.0}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "1", None, True, [1], {"a": 1}])
def test_non_numbers_are_refused(bad: object) -> None:
    """NaN, infinities, strings, booleans and null are refused, not coerced."""
    board, (amp,) = board_with(AMP)
    with pytest.raises(InvalidValue):
        board.plan_parameters("track_001", amp, {"gain": bad})


def test_alias_converts_units_and_is_canonical() -> None:
    """An alias is the canonical id and converts units (attack in s → ms)."""
    board, (comp,) = board_with(COMP)
    plan = board.plan_parameters("track_001", comp, {"att": 3.0})
    assert plan.values == {"attack": 0.003} and plan.engine == {"att": 3.0}
    plan = board.plan_parameters("track_001", comp, {"attack": 0.05})
    assert plan.values == {"attack": 0.05} and plan.engine == {"att": 50.0}


def test_snapping_of_integer_enum_and_toggle() -> None:
    """Integer, enumerated and toggle controls are snapped to legal values."""
    board, (comp,) = board_with(COMP)
    plan = board.plan_parameters("track_001", comp, {"steps": 2.6, "mode": 1.4, "on": 0.7})
    assert plan.values == {"steps": 3.0, "mode": 1.0, "on": 1.0}


def test_multi_value_change_is_all_or_nothing() -> None:
    """One bad entry in a preset raises and nothing is planned or committed."""
    board, (comp,) = board_with(COMP)
    before = dict(board.plugin("track_001", comp).values)
    with pytest.raises(UnknownParameter):
        board.plan_parameters("track_001", comp, {"threshold": -10, "nope": 1})
    with pytest.raises(InvalidValue):
        board.plan_parameters("track_001", comp, {"threshold": -10, "rat": "x"})
    assert board.plugin("track_001", comp).values == before


def test_enable_port_is_not_a_parameter() -> None:
    """The plugin's own enable port is driven by bypass and hidden from parameters."""
    assert "enable" not in COMP.defaults()
    with pytest.raises(UnknownParameter):
        COMP.canonical("enable")


def test_move_reorders_within_bounds() -> None:
    """Moving past either end clamps to the ends of the chain."""
    board, (a, b, c) = board_with(AMP, AMP, AMP)
    board.move("track_001", c, -5)
    assert [p.id for p in board.track("track_001").chain] == [c, a, b]
    board.move("track_001", c, 99)
    assert [p.id for p in board.track("track_001").chain] == [a, b, c]


def test_save_and_restore_round_trip() -> None:
    """A saved board restores with ids, order, values, bypass and the id counter."""
    board, (amp, comp) = board_with(AMP, COMP)
    board.commit(board.plan_parameters("track_001", amp, {"gain": -6}))
    board.set_bypass("track_001", comp, True)
    restored = Board(["track_001"])
    assert restored.restore(board.to_dict(), FakeCatalog()) == []
    assert restored.to_dict() == board.to_dict()
    assert restored.new_instance(AMP, "x").id == "plugin_3"


def test_restore_reports_what_it_cannot_load() -> None:
    """Unknown plugins, unknown tracks and bad values are reported, not fatal."""
    board, (amp,) = board_with(AMP)
    data = board.to_dict()
    data["tracks"][0]["chain"].append({"id": "plugin_7", "plugin": "missing", "uri": "urn:x", "values": {}})
    data["tracks"][0]["chain"][0]["values"]["gain"] = "loud"
    data["tracks"].append({"id": "track_gone", "chain": []})
    restored = Board(["track_001"])
    problems = restored.restore(data, FakeCatalog())
    assert len(problems) == 3
    assert [p.id for p in restored.track("track_001").chain] == [amp]
    assert restored.next_number == 8


def test_unloadable_plugins_and_tracks_are_kept_in_the_saved_board() -> None:
    """A plugin not installed now, or a track no longer configured, is saved again unchanged."""
    board, (first, second) = board_with(AMP, AMP)
    data = board.to_dict()
    missing = {
        "id": "plugin_9",
        "name": "Fuzz",
        "plugin": "fuzz",
        "uri": "urn:x:fuzz",
        "bypass": True,
        "values": {"drive": 0.9},
    }
    data["tracks"][0]["chain"].insert(1, missing)
    data["tracks"].append({"id": "track_gone", "chain": [dict(missing, id="plugin_10")]})
    restored = Board(["track_001"])
    restored.restore(data, FakeCatalog())
    assert [p.id for p in restored.track("track_001").chain] == [first, second]
    restored.commit(restored.plan_parameters("track_001", second, {"gain": -3}))
    saved = restored.to_dict()
    assert saved["tracks"][0]["chain"][1] == missing
    assert [p["id"] for p in saved["tracks"][0]["chain"]] == [first, "plugin_9", second]
    assert saved["tracks"][1]["id"] == "track_gone"
    again = Board(["track_001", "track_gone"])
    again.restore(saved, FakeCatalog())
    assert again.next_number == 11


def test_plugin_the_engine_cannot_load_stays_saved_in_place() -> None:
    """make_dormant takes a plugin off the live chain but saves it at its place, values intact."""
    board, (first, second, third) = board_with(AMP, COMP, AMP)
    board.commit(board.plan_parameters("track_001", second, {"threshold": -30}))
    before = board.to_dict()
    board.make_dormant("track_001", second)
    assert [p.id for p in board.track("track_001").chain] == [first, third]
    assert board.to_dict() == before
