"""Fuzzed protocol messages: hypothesis strategies from the protocol's own schema, and
byte-level mutations of valid messages. Used by ``tests/test_fuzz.py`` (a short run)
and ``hil/bench_fuzz.py`` (the long one against a running virtual box).

A message is ``str`` (a text frame) or ``bytes`` (a binary frame). Ids of real
tracks and plugins are mixed in, so that a good share of messages is valid and
changes the board.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from appliance.core import protocol

#: Request types fuzzed; AUTH is left out (its refusal closes the connection, by design).
KINDS = sorted(protocol.REQUESTS - {"AUTH"})
TRACKS = ["track_001", "track_002", "track_404"]
PLUGINS = [f"plugin_{n}" for n in range(1, 6)] + ["nope"]
NAMES = ["gain", "Gain", "reverb", "delay", "overdrive", "no-such-plugin", "../../etc/passwd"]
PARAMETERS = ["gain", "wet_dry", "room_size", "time", "feedback", "drive", "level", "nope"]
#: Fields any request may carry, with the values they are drawn from besides anything at all.
FIELDS: dict[str, Any] = {
    "track_id": st.sampled_from(TRACKS),
    "plugin_id": st.sampled_from(PLUGINS),
    "name": st.sampled_from(NAMES),
    "plugin_path": st.sampled_from(["", "/tmp/evil.so"]),
    "parameter_id": st.sampled_from(PARAMETERS),
    "parameter_value": st.floats(-200, 200, allow_nan=False),
    "bypass": st.booleans(),
    "position": st.integers(-3, 8),
    "on": st.booleans(),
}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.integers(min_value=10**300, max_value=10**320)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(TRACKS + PLUGINS + PARAMETERS)
)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def schema_message(draw: st.DrawFn) -> str:
    """A request built from the protocol's field table: each field well typed or not."""
    kind = draw(st.sampled_from([*KINDS, "NOPE", ""]))
    data: dict[str, Any] = {}
    wanted = list(protocol.required_fields(kind)) + draw(
        st.lists(st.sampled_from(sorted(FIELDS)), max_size=3)
    )
    for name in wanted:
        good = FIELDS.get(name, anything)
        data[name] = draw(good if draw(st.integers(0, 9)) < 8 else anything)
    if kind == "PLUGIN_PARAMETER_BATCH" and draw(st.booleans()):
        data["parameters"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"parameter_id": FIELDS["parameter_id"], "parameter_value": FIELDS["parameter_value"]}
                ),
                max_size=4,
            )
        )
    message: dict[str, Any] = {"type": kind, "data": data}
    if draw(st.integers(0, 9)) < 9:
        message["id"] = draw(st.text(min_size=1, max_size=8))
    if draw(st.integers(0, 9)) == 0:
        message[draw(st.sampled_from(["user_id", "session_id", "id", "extra"]))] = draw(anything)
    return json.dumps(message)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A valid-looking message with a few characters flipped, dropped or put in."""
    text = draw(base)
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        change = draw(st.sampled_from(["drop", "insert", "replace"]))
        piece = draw(st.sampled_from([*'{}[]":,0123456789-eE.nNtfu\\ ', "\u00e9", "\U0001f3b8", "\x00"]))
        if change == "drop":
            text = text[:at] + text[at + 1 :]
        elif change == "insert":
            text = text[:at] + piece + text[at:]
        else:
            text = text[:at] + piece + text[at + 1 :]
    return text


extremes = st.sampled_from(
    [
        "[" * 30000 + "]" * 30000,  # deeper than any recursion limit (hypothesis raises it)
        '{"type": "PING", "data": {"x": ' + "[" * 40 + "]" * 40 + "}}",
        '{"type": "PLUGIN_MOVE", "data": {"track_id": "track_001", "plugin_id": "plugin_1", "position": '
        + "9" * 5000
        + "}}",
        '{"type": "PING", "data": {"x": NaN}}',
        '{"type": "PING", "data": {"x": -Infinity}}',
        "",
        "null",
        '"PING"',
    ]
)

#: Every kind of message the fuzz runs send, text or binary.
messages: st.SearchStrategy[str | bytes] = st.one_of(
    schema_message(),
    schema_message(),
    mutated(schema_message()),
    extremes,
    st.text(max_size=40),
    st.binary(max_size=40),
)
