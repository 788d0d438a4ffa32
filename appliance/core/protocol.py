"""The wire format of the control protocol (docs/protocol.md), with no I/O.

Text in, :class:`Request` out; events in, text out. Field checks that do not
need the board live here; rules that do (which tracks exist, ranges) live in
:mod:`appliance.core.board`.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import ApplianceError, InvalidMessage, InvalidValue, UnknownType

#: The published examples' requests (protocol.md "Requests").
EXAMPLE_REQUESTS = frozenset(
    {
        "PLUGIN_ADD",
        "PLUGIN_REMOVE",
        "PLUGIN_PARAMETER",
        "PLUGIN_BYPASS",
        "PLUGIN_PRESET",
        "PLUGIN_PARAMETERS_GET",
        "PLUGIN_PARAMETER_BATCH",
        "PING",
    }
)
#: The box's own additive requests (docs/protocol.md "Extensions").
EXTENSION_REQUESTS = frozenset(
    {
        "AUTH",
        "BOARD_GET",
        "CATALOG_GET",
        "PLUGIN_MOVE",
        "HEALTH_GET",
        "PEDALBOARD_LIST",
        "PEDALBOARD_SAVE",
        "PEDALBOARD_LOAD",
        "PEDALBOARD_RENAME",
        "PEDALBOARD_COPY",
        "PEDALBOARD_DELETE",
        "SNAPSHOT_SAVE",
        "SNAPSHOT_RECALL",
        "SNAPSHOT_RENAME",
        "SNAPSHOT_DELETE",
        "SETLIST_GET",
        "SETLIST_SET",
        "SETLIST_NEXT",
        "SETLIST_PREVIOUS",
        "SETLIST_GO",
        "MIXER_GET",
        "MIXER_SET",
        "PRESET_LIST",
        "PRESET_LOAD",
        "METERS_SUBSCRIBE",
        "TUNER_SET",
        "MIDI_GET",
        "MIDI_MAP_SET",
        "MIDI_MAP_DELETE",
        "MIDI_LEARN",
        "MIDI_LEARN_CANCEL",
        "TEMPO_GET",
        "TEMPO_SET",
        "TEMPO_TAP",
        "PLUGIN_FILE",
        "FILE_LIST",
        "FILE_RENAME",
        "FILE_DELETE",
    }
)
REQUESTS = EXAMPLE_REQUESTS | EXTENSION_REQUESTS

#: Required data fields and their JSON types, per request type.
_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "PLUGIN_ADD": {"track_id": str},
    "PLUGIN_REMOVE": {"track_id": str, "plugin_id": str},
    "PLUGIN_PARAMETER": {"track_id": str, "plugin_id": str, "parameter_id": str},
    "PLUGIN_BYPASS": {"track_id": str, "plugin_id": str},
    "PLUGIN_PRESET": {"track_id": str, "plugin_id": str, "preset_data": dict},
    "PLUGIN_FILE": {"track_id": str, "plugin_id": str, "file_id": str, "file": str},
    "FILE_RENAME": {"file": str, "new_name": str},
    "FILE_DELETE": {"file": str},
    "PLUGIN_PARAMETERS_GET": {"track_id": str, "plugin_id": str},
    "PLUGIN_PARAMETER_BATCH": {"track_id": str, "plugin_id": str, "parameters": list},
    "PLUGIN_MOVE": {"track_id": str, "plugin_id": str, "position": int},
    "AUTH": {"token": str},
    "PEDALBOARD_LOAD": {"name": str},
    "PEDALBOARD_RENAME": {"name": str, "new_name": str},
    "PEDALBOARD_COPY": {"name": str, "new_name": str},
    "PEDALBOARD_DELETE": {"name": str},
    "SNAPSHOT_SAVE": {"name": str},
    "SNAPSHOT_RECALL": {"name": str},
    "SNAPSHOT_RENAME": {"name": str, "new_name": str},
    "SNAPSHOT_DELETE": {"name": str},
    "SETLIST_SET": {"entries": list},
    "SETLIST_GO": {"position": int},
    "PRESET_LIST": {"plugin": str},
    "PRESET_LOAD": {"track_id": str, "plugin_id": str, "preset": str},
    "MIDI_MAP_SET": {"mapping": dict},
    "MIDI_MAP_DELETE": {"id": str},
    "MIDI_LEARN": {"mapping": dict},
}
_STRING_FIELDS = ("id", "user_id", "session_id")
#: Deepest nesting of arrays and objects a message may have (the deepest real one has 4).
MAX_DEPTH = 32
#: Longest integer literal read; longer ones are refused before Python parses them.
MAX_INT_DIGITS = 400
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


@dataclass(frozen=True)
class Request:
    """One checked client message."""

    type: str
    data: dict[str, Any]
    id: str | None = None
    user_id: str | None = None
    session_id: str | None = None

    def origin(self) -> dict[str, str]:
        return {k: v for k, v in (("user_id", self.user_id), ("session_id", self.session_id)) if v}


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


def _finite_int(text: str) -> int:
    """An integer literal that is a finite number as JSON readers see it (a double)."""
    if len(text) > MAX_INT_DIGITS:
        raise _NonFinite(f"an integer of {len(text)} digits")
    value = int(text)
    try:
        float(value)
    except OverflowError:
        raise _NonFinite(f"an integer of {len(text)} digits") from None
    return value


def too_deep(text: str) -> bool:
    """True when arrays and objects nest deeper than :data:`MAX_DEPTH` (strings not counted).

    Only a message with more brackets than that is walked, so ordinary
    messages cost two ``count`` calls.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    depth = 0
    for char in _STRINGS.sub("", text):
        depth += _BRACKETS.get(ord(char), 0)
        if depth > MAX_DEPTH:
            return True
    return False


def decode(text: str | bytes) -> Request:
    """Parse and check one text frame.

    Raises:
        InvalidMessage: binary frame, not JSON, nested deeper than
            :data:`MAX_DEPTH`, not an object, ill-typed field.
        InvalidValue: NaN, an infinity, or a number too large for a double
            (infinite as JSON readers see it) anywhere in the message.
        UnknownType: a type the box does not know.
    """
    if isinstance(text, bytes):
        raise InvalidMessage("binary frames are not part of the protocol; send JSON text")
    if too_deep(text):
        raise InvalidMessage(f"message nests deeper than {MAX_DEPTH} levels")
    try:
        message = json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_finite_int
        )
    except _NonFinite as exc:
        raise InvalidValue(f"numbers must be finite, got {exc}") from None
    except (ValueError, RecursionError):
        raise InvalidMessage("message is not valid JSON") from None
    if not isinstance(message, dict):
        raise InvalidMessage("message must be a JSON object")
    for name in _STRING_FIELDS:
        if message.get(name) is not None and not isinstance(message[name], str):
            raise InvalidMessage(f"{name} must be a string", {"field": name})
    kind = message.get("type")
    if not isinstance(kind, str):
        raise InvalidMessage("type must be a string", {"field": "type"})
    if kind not in REQUESTS:
        raise UnknownType(f"unknown message type {kind[:64]!r}", {"type": kind[:64]})
    data = message.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidMessage("data must be an object", {"field": "data"})
    for name, expected in _FIELDS.get(kind, {}).items():
        value = data.get(name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise InvalidMessage(
                f"{kind}: data.{name} is missing or not {_json_type(expected)}",
                {"field": f"data.{name}"},
            )
    return Request(kind, data, message.get("id"), message.get("user_id"), message.get("session_id"))


def required_fields(kind: str) -> tuple[str, ...]:
    """The data fields a request type must carry (its checks in :func:`decode`)."""
    return tuple(_FIELDS.get(kind, {}))


def batch_values(parameters: list[Any]) -> dict[str, Any]:
    """The ``{parameter_id: value}`` map of a PLUGIN_PARAMETER_BATCH.

    Later entries for the same parameter win, as if sent one by one.

    Raises:
        InvalidMessage: an entry is not ``{parameter_id, parameter_value}``.
    """
    if not parameters:
        raise InvalidMessage("parameters must list at least one change", {"field": "data.parameters"})
    values: dict[str, Any] = {}
    for index, entry in enumerate(parameters):
        if not isinstance(entry, dict) or not isinstance(entry.get("parameter_id"), str):
            raise InvalidMessage(
                f"parameters[{index}] must be {{parameter_id, parameter_value}}",
                {"field": f"data.parameters[{index}]"},
            )
        if "parameter_value" not in entry:
            raise InvalidMessage(
                f"parameters[{index}] has no parameter_value",
                {"field": f"data.parameters[{index}].parameter_value"},
            )
        values[entry["parameter_id"]] = entry["parameter_value"]
    return values


def _json_type(expected: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", dict: "an object", list: "an array", float: "a number"}
    if isinstance(expected, tuple):
        return " or ".join(names.get(t, t.__name__) for t in expected)
    return names.get(expected, expected.__name__)


_ids = itertools.count(1)


def next_id() -> str:
    return f"box_{next(_ids)}"


def encode(
    kind: str,
    data: dict[str, Any],
    reply_to: str | None = None,
    origin: dict[str, str] | None = None,
) -> str:
    """One server message as text (protocol.md "Envelope")."""
    message: dict[str, Any] = {"id": next_id(), "type": kind, "data": data}
    if reply_to is not None:
        message["reply_to"] = reply_to
    if origin:
        message["origin"] = origin
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def error_data(exc: ApplianceError) -> dict[str, Any]:
    """``ERROR.data`` for a failure: a sentence, the code, whether to retry."""
    data: dict[str, Any] = {"error": exc.public_message(), "code": exc.code, "retryable": exc.retryable}
    details = getattr(exc, "details", None)
    if details:
        data["details"] = details
    return data


def internal_error_data() -> dict[str, Any]:
    """``ERROR.data`` for a bug: nothing about the internals (they go to the log)."""
    return {"error": "internal error; the box logged the details", "code": "INTERNAL", "retryable": False}
