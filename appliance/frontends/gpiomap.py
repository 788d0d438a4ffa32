"""The GPIO map: which encoder and footswitch on which pins drives what. Pure: no gpiozero.

Read from the YAML file that ``gpio:`` in the box's config names
(``config/gpio.yaml`` is the commented example). Every mistake a map can
hold at start (a pin that does not exist, a pin used twice, an action the
box does not know) is a :class:`ConfigError` naming the key. Whether a named
control exists can only be checked against the board: :func:`check_controls`
does that at start for the plugins on it, and a mapping to a plugin that is
not on the board is kept and waits for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.board import Board
from ..core.errors import ApplianceError, ConfigError

#: BCM numbers of the GPIO pins on the Raspberry Pi's 40-pin header.
PINS = range(2, 28)
#: Footswitch actions, and the fields each needs besides ``action``.
ACTIONS: dict[str, tuple[str, ...]] = {
    "bypass": (),  # a target: plugin, or track and position
    "snapshot": ("name",),
    "setlist_next": (),
    "setlist_previous": (),
    "tuner": (),  # on, or off again
    "tap_tempo": (),  # one tap of the box's tempo
}
DEFAULT_HOLD = 0.5
DEFAULT_BOUNCE = 0.008
#: Detents to go from a control's minimum to its maximum, unless the map says otherwise.
DEFAULT_STEPS = 100


@dataclass(frozen=True)
class Target:
    """A plugin: by its id, or by track and chain position (whatever sits there now)."""

    plugin: str | None = None
    track: str | None = None
    position: int | None = None

    def resolve(self, board: Board) -> tuple[str, str] | None:
        """(track id, plugin id) on the board now, or None while it is not there."""
        for track in board.tracks.values():
            if self.plugin is not None:
                if any(p.id == self.plugin for p in track.chain):
                    return track.id, self.plugin
            elif track.id == self.track and self.position is not None and self.position < len(track.chain):
                return track.id, track.chain[self.position].id
        return None

    def describe(self) -> dict[str, Any]:
        if self.plugin is not None:
            return {"plugin_id": self.plugin}
        return {"track_id": self.track, "position": self.position}


@dataclass(frozen=True)
class EncoderControl:
    """A plugin's parameter, or (``target`` None) the HAT mixer's control named ``parameter``."""

    target: Target | None
    parameter: str

    @property
    def mixer(self) -> bool:
        return self.target is None


@dataclass(frozen=True)
class Encoder:
    """A rotary encoder on pins ``a`` and ``b``; its push switch cycles ``controls``."""

    name: str
    a: int
    b: int
    controls: tuple[EncoderControl, ...]
    push: int | None = None
    steps: int = DEFAULT_STEPS


@dataclass(frozen=True)
class Action:
    kind: str
    target: Target | None = None
    name: str | None = None


@dataclass(frozen=True)
class Footswitch:
    """A footswitch or button on ``pin`` (to ground): one action on a press, another on a hold."""

    name: str
    pin: int
    press: Action
    hold: Action | None = None


@dataclass(frozen=True)
class GpioMap:
    encoders: tuple[Encoder, ...] = ()
    footswitches: tuple[Footswitch, ...] = ()
    hold_time: float = DEFAULT_HOLD
    bounce_time: float = DEFAULT_BOUNCE
    path: Path | None = field(default=None, compare=False)


def load(path: Path) -> GpioMap:
    """Read and check a GPIO map file.

    Raises:
        ConfigError: the file cannot be read, or a key is wrong (named).
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("gpio", f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("gpio", f"{path} is not valid YAML: {exc}") from exc
    gpio_map = parse(document or {})
    return GpioMap(gpio_map.encoders, gpio_map.footswitches, gpio_map.hold_time, gpio_map.bounce_time, path)


def parse(document: object) -> GpioMap:
    """A GPIO map from its YAML data.

    Raises:
        ConfigError: naming the key that is wrong.
    """
    top = _mapping(document, "gpio")
    _known(top, {"hold_time", "bounce_time", "encoders", "footswitches"}, "gpio")
    hold_time = _seconds(top.get("hold_time", DEFAULT_HOLD), "gpio.hold_time")
    bounce_time = _seconds(top.get("bounce_time", DEFAULT_BOUNCE), "gpio.bounce_time")
    used: dict[int, str] = {}
    encoders = []
    for index, raw in enumerate(_list(top.get("encoders", []), "gpio.encoders")):
        where = f"gpio.encoders[{index}]"
        entry = _mapping(raw, where)
        _known(entry, {"name", "pins", "push", "controls", "steps"}, where)
        pins = entry.get("pins")
        if not isinstance(pins, list) or len(pins) != 2:
            raise ConfigError(f"{where}.pins", "must be the two pins [A, B]")
        a, b = (_pin(pin, f"{where}.pins[{i}]", used) for i, pin in enumerate(pins))
        push = None if entry.get("push") is None else _pin(entry["push"], f"{where}.push", used)
        controls = []
        for number, raw_control in enumerate(_list(entry.get("controls"), f"{where}.controls")):
            at = f"{where}.controls[{number}]"
            control = _mapping(raw_control, at)
            if "mixer" in control:
                _known(control, {"mixer"}, at)
                controls.append(EncoderControl(None, _text(control["mixer"], f"{at}.mixer")))
                continue
            _known(control, {"plugin", "track", "position", "parameter"}, at)
            parameter = _text(control.get("parameter"), f"{at}.parameter")
            controls.append(EncoderControl(_target(control, at), parameter))
        if not controls:
            raise ConfigError(f"{where}.controls", "name at least one control to drive")
        steps = entry.get("steps", DEFAULT_STEPS)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= 10000:
            raise ConfigError(f"{where}.steps", "must be a whole number of detents from 2 to 10000")
        name = _text(entry.get("name", f"encoder {index + 1}"), f"{where}.name")
        encoders.append(Encoder(name, a, b, tuple(controls), push, steps))
    footswitches = []
    for index, raw in enumerate(_list(top.get("footswitches", []), "gpio.footswitches")):
        where = f"gpio.footswitches[{index}]"
        entry = _mapping(raw, where)
        _known(entry, {"name", "pin", "press", "hold"}, where)
        pin = _pin(entry.get("pin"), f"{where}.pin", used)
        press = _action(entry.get("press"), f"{where}.press")
        hold = None if entry.get("hold") is None else _action(entry["hold"], f"{where}.hold")
        footswitches.append(
            Footswitch(_text(entry.get("name", f"footswitch {index + 1}"), f"{where}.name"), pin, press, hold)
        )
    return GpioMap(tuple(encoders), tuple(footswitches), hold_time, bounce_time)


def check_controls(gpio_map: GpioMap, board: Board, mixer: Iterable[str] = ()) -> list[str]:
    """Check every mapped control against the plugins on the board now, and the mixer's controls.

    Returns:
        One sentence per mapping that drives nothing on the board as it is: its
        plugin is not there, or the plugin there has no such control. Kept: a
        mapping follows the board, and the board changes (a position holds
        another plugin after a pedalboard switch).

    Raises:
        ConfigError: a mapped mixer control is not one of the configured
            ``mixer.controls`` (the config alone decides that).
    """
    waiting = []
    mixer_controls = set(mixer)
    for index, encoder in enumerate(gpio_map.encoders):
        for number, control in enumerate(encoder.controls):
            if control.target is None:
                if control.parameter not in mixer_controls:
                    known = ", ".join(sorted(mixer_controls)) or "none configured"
                    raise ConfigError(
                        f"gpio.encoders[{index}].controls[{number}].mixer",
                        f"no mixer control {control.parameter!r} (mixer.controls: {known})",
                    )
                continue
            found = control.target.resolve(board)
            if found is None:
                waiting.append(f"{encoder.name}: {control.target.describe()} is not on the board yet")
                continue
            instance = board.plugin(*found)
            try:
                instance.type.canonical(control.parameter)
            except ApplianceError:
                names = ", ".join(p.id for p in instance.type.parameters)
                waiting.append(
                    f"{encoder.name}: {instance.name} ({instance.id}) has no control "
                    f"{control.parameter!r} (it has: {names})"
                )
    return waiting


# -- field readers ----------------------------------------------------------------------


def _action(value: object, where: str) -> Action:
    entry = _mapping(value, where)
    kind = entry.get("action")
    if kind not in ACTIONS:
        raise ConfigError(f"{where}.action", f"must be one of {', '.join(ACTIONS)}")
    _known(entry, {"action", "plugin", "track", "position", *ACTIONS[kind]}, where)
    if kind == "bypass":
        return Action(kind, _target(entry, where))
    if kind == "snapshot":
        return Action(kind, name=_text(entry.get("name"), f"{where}.name"))
    return Action(kind)


def _target(entry: Mapping[str, Any], where: str) -> Target:
    if entry.get("plugin") is not None:
        return Target(plugin=_text(entry["plugin"], f"{where}.plugin"))
    track, position = entry.get("track"), entry.get("position")
    positioned = isinstance(position, int) and not isinstance(position, bool) and position >= 0
    if not isinstance(track, str) or not positioned:
        raise ConfigError(where, "name a plugin (plugin: plugin_3), or a track and a position in its chain")
    return Target(track=track, position=position)


def _pin(value: object, where: str, used: dict[int, str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in PINS:
        raise ConfigError(where, f"must be a GPIO pin by its BCM number, {PINS.start} to {PINS.stop - 1}")
    if value in used:
        raise ConfigError(where, f"pin {value} is already used by {used[value]}")
    used[value] = where
    return value


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
        raise ConfigError(where, "must be a number of seconds from 0 to 10")
    return float(value)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(where, "must be a non-empty string")
    return value


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, "must be a mapping")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(where, "must be a list")
    return value


def _known(entry: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(allowed))})")
