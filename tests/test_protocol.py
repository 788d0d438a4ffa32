"""The wire format: decoding, checks and encoding (no I/O)."""

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.core import protocol
from appliance.core.errors import ApplianceError, InvalidMessage, InvalidValue, UnknownType


def test_decodes_example_message() -> None:
    """A message as the examples send it decodes with its ids and data."""
    text = json.dumps(
        {
            "id": "msg_1_abc",
            "type": "PLUGIN_PARAMETER",
            "data": {
                "track_id": "track_001",
                "plugin_id": "p",
                "parameter_id": "gain",
                "parameter_value": 0.5,
            },
            "user_id": "u",
            "session_id": "s",
        }
    )
    request = protocol.decode(text)
    assert request.type == "PLUGIN_PARAMETER"
    assert request.id == "msg_1_abc"
    assert request.origin() == {"user_id": "u", "session_id": "s"}


def test_ping_without_data() -> None:
    """PING may come with no data and no id."""
    assert protocol.decode('{"type": "PING"}').data == {}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", InvalidMessage),
        ("[1, 2]", InvalidMessage),
        ('"PING"', InvalidMessage),
        ('{"type": 5}', InvalidMessage),
        ('{"type": "NOPE"}', UnknownType),
        ('{"type": "PING", "id": 7}', InvalidMessage),
        ('{"type": "PLUGIN_REMOVE", "data": []}', InvalidMessage),
        ('{"type": "PLUGIN_REMOVE", "data": {"track_id": "t"}}', InvalidMessage),
        ('{"type": "PLUGIN_REMOVE", "data": {"track_id": 1, "plugin_id": "p"}}', InvalidMessage),
        (
            '{"type": "PLUGIN_PRESET", "data": {"track_id": "t", "plugin_id": "p", "preset_data": 3}}',
            InvalidMessage,
        ),
        (
            '{"type": "PLUGIN_MOVE", "data": {"track_id": "t", "plugin_id": "p", "position": true}}',
            InvalidMessage,
        ),
        ('{"type": "PING", "data": {"x": NaN}}', InvalidValue),
        ('{"type": "PING", "data": {"x": Infinity}}', InvalidValue),
        ('{"type": "PING", "data": {"x": -Infinity}}', InvalidValue),
        ('{"type": "PING", "data": {"x": 1e400}}', InvalidValue),
        ('{"type": "PING", "data": {"x": ' + "9" * 309 + "}}", InvalidValue),  # a double's overflow
        ('{"type": "PING", "data": {"x": ' + "9" * 5000 + "}}", InvalidValue),  # past Python's int limit
        ("[" * 33 + "]" * 33, InvalidMessage),
        ('{"type": "PING", "data": {"x": ' + "[" * 1000 + "]" * 1000 + "}}", InvalidMessage),
    ],
)
def test_rejects_bad_messages(text: str, error: type[Exception]) -> None:
    """Each kind of malformed message raises its own error class."""
    with pytest.raises(error):
        protocol.decode(text)


def test_nesting_is_counted_outside_strings_only() -> None:
    """Brackets inside strings are text: a preset name full of them is fine; 32 levels are fine."""
    assert protocol.decode('{"type": "PING", "data": {"name": "' + "[{" * 100 + '\\"' + '"}}').type == "PING"
    assert protocol.decode('{"type": "PING", "data": {"x": ' + "[" * 30 + "]" * 30 + "}}").type == "PING"  # 32 levels
    assert protocol.decode('{"type": "PING", "data": {"x": ' + "9" * 308 + "}}").data["x"] > 0


def test_binary_frames_are_refused() -> None:
    """Binary frames are not part of the protocol."""
    with pytest.raises(InvalidMessage):
        protocol.decode(b'{"type": "PING"}')


def test_batch_values_later_entries_win() -> None:
    """A batch naming a parameter twice keeps the last value, as if sent one by one."""
    values = protocol.batch_values(
        [{"parameter_id": "a", "parameter_value": 1}, {"parameter_id": "a", "parameter_value": 2}]
    )
    assert values == {"a": 2}


@pytest.mark.parametrize("entries", [[1], [{"parameter_value": 1}], [{"parameter_id": "a"}]])
def test_batch_values_rejects_bad_entries(entries: list[object]) -> None:
    """A batch entry that is not {parameter_id, parameter_value} is an invalid message."""
    with pytest.raises(InvalidMessage):
        protocol.batch_values(entries)


def test_encode_carries_reply_to_and_origin() -> None:
    """Server messages carry their own id, reply_to and the origin of the change."""
    message = json.loads(protocol.encode("PONG", {}, "msg_1", {"user_id": "u"}))
    assert message["type"] == "PONG" and message["reply_to"] == "msg_1"
    assert message["origin"] == {"user_id": "u"} and message["id"].startswith("box_")


@given(st.text(max_size=200))
def test_decode_never_crashes_on_text(text: str) -> None:
    """Any text either decodes or raises a protocol error, never anything else."""
    with contextlib.suppress(ApplianceError):
        protocol.decode(text)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    ),
    st.sampled_from(sorted(protocol.REQUESTS)),
)
def test_decode_never_crashes_on_json(data: object, kind: str) -> None:
    """Any JSON data under any known type decodes or raises a protocol error."""
    with contextlib.suppress(ApplianceError):
        protocol.decode(json.dumps({"type": kind, "data": data}))
