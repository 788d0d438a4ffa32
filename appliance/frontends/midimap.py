"""MIDI mappings: which controller message drives what. Pure: no I/O, no JACK.

A mapping joins one kind of message (a control change, a program change or a
note) on one channel (or any: omni) to one action: a plugin's control, its
bypass, a mixer control, a pedalboard, a snapshot, a setlist step or the
tuner. Mappings come from the phone (``MIDI_MAP_SET``, ``MIDI_LEARN``) and
from ``midi.json``; both go through :func:`from_dict`, which names the field
of any mistake and changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import mido  # type: ignore[import-untyped]

from ..core.errors import InvalidValue

#: The kinds of message a mapping listens to.
MESSAGES = ("cc", "pc", "note")
#: Actions, and the fields each needs.
ACTIONS: dict[str, tuple[str, ...]] = {
    "parameter": ("plugin_id", "parameter_id"),
    "bypass": ("plugin_id",),
    "mixer": ("control",),
    "pedalboard": ("name",),
    "snapshot": ("name",),
    "setlist_go": (),  # to ``position``, or (a program change on any program) to the program's number
    "setlist_next": (),
    "setlist_previous": (),
    "tuner": (),
    "tap_tempo": (),
}
#: How a continuous action follows the controller's 0..127: straight, slow at the bottom
#: (exp: for volume pedals), or fast at the bottom (log).
CURVES = ("linear", "exp", "log")
#: Actions that take a continuous value (the rest act on a press).
CONTINUOUS = ("parameter", "mixer")
#: A control change at or above this is a press (a footswitch's 127), below it a release.
PRESS = 64
#: The most mappings a box keeps: a flood of MIDI_MAP_SET cannot grow the file without end.
MAX_MAPPINGS = 512


@dataclass(frozen=True)
class MidiEvent:
    """One message from a controller, as mappings see it."""

    message: str  # cc, pc, note
    channel: int  # 1..16
    number: int  # the controller, program or note
    value: int  # 0..127 (a program change: 127; a note off: 0)

    @property
    def pressed(self) -> bool:
        return self.value >= PRESS

    def describe(self) -> dict[str, Any]:
        return {"message": self.message, "channel": self.channel, "number": self.number, "value": self.value}


def parse(data: bytes) -> MidiEvent | None:
    """A controller's message (by mido, the maintained parser), or None for anything a
    mapping cannot use (clock, SysEx, aftertouch) or malformed bytes.

    Raises nothing: whatever a controller sends is either an event or ignored.
    """
    try:
        message = mido.Message.from_bytes(list(data))
    except (ValueError, TypeError, IndexError, KeyError):
        return None
    kind = message.type
    if kind == "control_change":
        return MidiEvent("cc", message.channel + 1, message.control, message.value)
    if kind == "program_change":
        return MidiEvent("pc", message.channel + 1, message.program, 127)
    if kind in ("note_on", "note_off"):
        velocity = message.velocity if kind == "note_on" else 0
        return MidiEvent("note", message.channel + 1, message.note, velocity)
    return None


@dataclass(frozen=True)
class Mapping:
    """One controller message and what it drives (see the module's text and docs/protocol.md)."""

    id: str
    message: str
    number: int | None  # None: any program (program changes only)
    channel: int | None  # None: omni
    action: str
    plugin_id: str | None = None
    parameter_id: str | None = None
    control: str | None = None
    name: str | None = None
    position: int | None = None
    minimum: float | None = None  # None: the control's own
    maximum: float | None = None
    curve: str = "linear"
    momentary: bool = False  # a bypass that follows the switch (held: on) instead of toggling

    def matches(self, event: MidiEvent) -> bool:
        return (
            event.message == self.message
            and (self.channel is None or self.channel == event.channel)
            and (self.number is None or self.number == event.number)
        )

    def level(self, value: int) -> float:
        """Where ``value`` (0..127) puts a continuous action, 0..1, after the curve."""
        x = max(0, min(127, value)) / 127.0
        if self.curve == "exp":
            return x * x
        if self.curve == "log":
            return math.sqrt(x)
        return x

    def scaled(self, value: int, lowest: float, highest: float) -> float:
        """The control's value for ``value``: between this mapping's minimum and maximum (the
        control's own range where unset); a minimum above the maximum turns it round."""
        low = lowest if self.minimum is None else self.minimum
        high = highest if self.maximum is None else self.maximum
        return low + (high - low) * self.level(value)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "message": self.message,
            "number": self.number,
            "channel": self.channel,
            "action": self.action,
        }
        for key in ("plugin_id", "parameter_id", "control", "name", "position", "minimum", "maximum"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.action in CONTINUOUS:
            data["curve"] = self.curve
        if self.action == "bypass":
            data["momentary"] = self.momentary
        return data


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise InvalidValue(f"a mapping needs {key}", {"field": key})
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InvalidValue(f"{key} must not be true or false", {"field": key})
    if not isinstance(value, kind):
        raise InvalidValue(f"{key} has the wrong type ({type(value).__name__})", {"field": key})
    return value


def from_dict(data: object, mapping_id: str | None = None, learning: bool = False) -> Mapping:
    """A checked mapping. ``learning``: the message, number and channel may be missing (a
    learn fills them in from the next message the controller sends).

    Raises:
        InvalidValue: a field is missing or wrong; ``data.field`` names it.
    """
    if not isinstance(data, dict):
        raise InvalidValue("a mapping must be an object", {"field": "mapping"})
    message = _field(data, "message", str, required=not learning)
    if message is not None and message not in MESSAGES:
        raise InvalidValue(f"message must be one of {', '.join(MESSAGES)}", {"field": "message"})
    number = _field(data, "number", int)
    if number is not None and not 0 <= number <= 127:
        raise InvalidValue("number must be 0..127", {"field": "number"})
    if number is None and message in ("cc", "note"):
        raise InvalidValue(f"a {message} mapping needs its number", {"field": "number"})
    channel = _field(data, "channel", int)
    if channel is not None and not 1 <= channel <= 16:
        raise InvalidValue("channel must be 1..16, or null for any", {"field": "channel"})
    action = _field(data, "action", str, required=True)
    if action not in ACTIONS:
        raise InvalidValue(f"action must be one of {', '.join(ACTIONS)}", {"field": "action"})
    fields = {key: _field(data, key, str, required=True) for key in ACTIONS[action]}
    minimum = _field(data, "minimum", (int, float))
    maximum = _field(data, "maximum", (int, float))
    for key, bound in (("minimum", minimum), ("maximum", maximum)):
        if bound is not None and not math.isfinite(bound):
            raise InvalidValue(f"{key} must be a finite number", {"field": key})
    curve = _field(data, "curve", str) or "linear"
    if curve not in CURVES:
        raise InvalidValue(f"curve must be one of {', '.join(CURVES)}", {"field": "curve"})
    position = _field(data, "position", int)
    if action == "setlist_go" and position is None and not (message in ("pc", None) and number is None):
        raise InvalidValue(
            "setlist_go needs a position, or a program change on any program", {"field": "position"}
        )
    momentary = _field(data, "momentary", bool) or False
    identity = mapping_id if mapping_id is not None else _field(data, "id", str)
    return Mapping(
        id=identity or "",
        message=message or "",
        number=number,
        channel=channel,
        action=action,
        position=position,
        minimum=None if minimum is None else float(minimum),
        maximum=None if maximum is None else float(maximum),
        curve=curve,
        momentary=momentary,
        **fields,
    )


def learned(partial: Mapping, event: MidiEvent, mapping_id: str, omni: bool) -> Mapping:
    """A learning mapping completed by the message the controller sent."""
    number: int | None = event.number
    if partial.action == "setlist_go" and event.message == "pc" and partial.position is None:
        number = None  # a program picks the entry of its number
    return replace(
        partial,
        id=mapping_id,
        message=event.message,
        number=number,
        channel=None if omni else event.channel,
    )
