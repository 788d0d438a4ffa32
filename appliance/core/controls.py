"""What a plugin looks like from outside: its controls, their ranges and kinds.

Pure data, no I/O. :mod:`appliance.plugins.catalog` builds these from the plugins' own
LV2 data; the board and the engines read them.

A control has one *engine* id (its LV2 port symbol) and one *canonical* id,
the one the box answers with: the catalog alias when one maps onto the control
(``wet_dry``), else the symbol. Aliases may carry a linear unit conversion:
``engine_value = value * scale + offset`` (a negative scale turns the
control around: ``damping`` 0..1 onto a damping cutoff 16 kHz..1 kHz).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from .errors import InvalidValue, UnknownParameter, UnknownPreset

Kind = Literal["float", "integer", "toggle", "enum"]


@dataclass(frozen=True)
class Control:
    """One input control port of a plugin, in the plugin's own units."""

    symbol: str
    name: str
    minimum: float
    maximum: float
    default: float
    unit: str = ""
    kind: Kind = "float"
    labels: tuple[tuple[float, str], ...] = ()
    logarithmic: bool = False


@dataclass(frozen=True)
class Alias:
    """A client-facing name for a control, with a linear unit conversion."""

    name: str
    symbol: str
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None


@dataclass(frozen=True)
class Parameter:
    """A control as clients see it: canonical id, units and range after aliasing."""

    id: str
    control: Control
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""

    @property
    def symbol(self) -> str:
        return self.control.symbol

    @property
    def minimum(self) -> float:
        ends = self.from_engine(self.control.minimum), self.from_engine(self.control.maximum)
        return min(ends)

    @property
    def maximum(self) -> float:
        ends = self.from_engine(self.control.minimum), self.from_engine(self.control.maximum)
        return max(ends)

    @property
    def default(self) -> float:
        return self.from_engine(self.control.default)

    def to_engine(self, value: float) -> float:
        return value * self.scale + self.offset

    def from_engine(self, value: float) -> float:
        return _tidy((value - self.offset) / self.scale)

    def conform(self, value: object) -> float:
        """Check a client's value and return it clamped and snapped.

        Raises:
            InvalidValue: not a finite number (booleans and strings included).
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValue(f"{self.id}: value must be a number", {"parameter_id": self.id})
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise InvalidValue(f"{self.id}: value must be finite", {"parameter_id": self.id})
        control = self.control
        engine = min(max(self.to_engine(number), control.minimum), control.maximum)
        if control.kind == "toggle":
            engine = control.maximum if engine >= (control.minimum + control.maximum) / 2 else control.minimum
        elif control.kind == "integer":
            engine = float(round(engine))
        elif control.kind == "enum" and control.labels:
            engine = min((point for point, _ in control.labels), key=lambda p: abs(p - engine))
        engine = min(max(engine, control.minimum), control.maximum)
        return self.from_engine(engine)

    def describe(self) -> dict[str, object]:
        """Metadata for the catalog extension (docs/protocol.md#catalog_get)."""
        described: dict[str, object] = {
            "id": self.id,
            "symbol": self.symbol,
            "name": self.control.name,
            "unit": self.unit,
            "min": self.minimum,
            "max": self.maximum,
            "default": self.default,
            "kind": self.control.kind,
        }
        if self.control.logarithmic:
            described["logarithmic"] = True
        if self.control.labels:
            described["labels"] = [
                {"value": self.from_engine(v), "label": label} for v, label in self.control.labels
            ]
        return described


def _tidy(value: float) -> float:
    """Round off float noise from the unit conversion (0.30000000000000004)."""
    return float(f"{value:.9g}") + 0.0  # + 0.0 turns -0.0 into 0.0


@dataclass(frozen=True)
class FactoryPreset:
    """A preset the plugin ships with: its URI, label, and symbol → value in the plugin's units."""

    uri: str
    label: str
    values: tuple[tuple[str, float], ...]


#: The kinds of the player's files, each a folder of its own (:mod:`appliance.store.userfiles`).
FILE_FOLDERS = ("ir", "models", "other")
#: Which folder a plugin's ``mod:fileTypes`` point at (MOD's type names; any other type: ``other``).
FOLDER_OF_FILE_TYPE = {
    "ir": "ir",
    "cabsim": "ir",
    "nam": "models",
    "nammodel": "models",
    "aidadspmodel": "models",
}


#: Which folder an uploaded file goes to by its extension, when the player does not say.
FOLDER_OF_EXTENSION = {
    ".wav": "ir",
    ".flac": "ir",
    ".aif": "ir",
    ".aiff": "ir",
    ".nam": "models",
    ".json": "models",
    ".aidax": "models",
}


def folder_of_name(name: str) -> str:
    """The folder an uploaded file named ``name`` goes to when the player does not say."""
    dot = name.rfind(".")
    return FOLDER_OF_EXTENSION.get(name[dot:].lower(), "other") if dot > 0 else "other"


def folders_for(file_types: tuple[str, ...]) -> tuple[str, ...]:
    """The folders whose files suit a parameter with these ``mod:fileTypes`` (none: every folder)."""
    wanted = {FOLDER_OF_FILE_TYPE.get(t, "other") for t in file_types}
    return tuple(f for f in FILE_FOLDERS if f in wanted) if wanted else FILE_FOLDERS


@dataclass(frozen=True)
class FileParameter:
    """A file the plugin loads (a cabinet IR, an amp model), chosen from the player's files.

    Attributes:
        id: what the protocol calls it: the last part of its URI (``ir``).
        uri: the LV2 parameter (``patch:writable``, ranged ``atom:Path``).
        label: its ``rdfs:label``.
        file_types: MOD's ``mod:fileTypes`` (``ir``, ``nam``, …); empty: any file.
    """

    id: str
    uri: str
    label: str
    file_types: tuple[str, ...] = ()

    @property
    def folders(self) -> tuple[str, ...]:
        """The folders of the player's files it takes its files from."""
        return folders_for(self.file_types)

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "uri": self.uri,
            "label": self.label,
            "file_types": list(self.file_types),
            "folders": list(self.folders),
        }


@dataclass(frozen=True)
class PluginType:
    """An addable plugin: where it comes from and what its controls are.

    Attributes:
        key: catalog key (``reverb``) or, for scanned plugins, the URI.
        uri: the LV2 plugin URI.
        audio_inputs / audio_outputs: audio port symbols, in port order.
        enable_symbol: the plugin's own enable/bypass control, if it has one
            (``lv2:enabled`` designation, or a Guitarix-style ``BYPASS``).
        enable_inverted: True when that control means "bypass" (1 = bypassed).
        tempo_symbol: its control that takes the host's tempo (designated
            ``time:beatsPerMinute``), if it has one: the engine sets it to the box's tempo.
        monitors: its output controls (meters, a tuner's readings), by symbol.
        presets: the factory presets it ships with (their values limited to
            its adjustable controls).
        files: the files it loads (:class:`FileParameter`).
    """

    key: str
    uri: str
    name: str
    controls: tuple[Control, ...]
    audio_inputs: tuple[str, ...] = ()
    audio_outputs: tuple[str, ...] = ()
    aliases: tuple[Alias, ...] = ()
    enable_symbol: str | None = None
    enable_inverted: bool = False
    tempo_symbol: str | None = None
    latency: bool = False
    monitors: tuple[str, ...] = ()
    presets: tuple[FactoryPreset, ...] = field(default=(), compare=False)
    files: tuple[FileParameter, ...] = ()
    parameters: tuple[Parameter, ...] = field(init=False, repr=False, compare=False)
    _lookup: dict[str, Parameter] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_symbol = {c.symbol: c for c in self.controls}
        first_alias: dict[str, Alias] = {}
        for alias in self.aliases:
            if alias.symbol not in by_symbol:
                raise ValueError(f"alias {alias.name} names unknown control {alias.symbol}")
            if alias.scale == 0:
                raise ValueError(f"alias {alias.name}: scale must not be 0")
            first_alias.setdefault(alias.symbol, alias)
        parameters = []
        for control in self.controls:
            if control.symbol in (self.enable_symbol, self.tempo_symbol):
                continue  # driven by bypass or by the box's tempo, not shown as a parameter
            primary = first_alias.get(control.symbol)
            if primary is None:
                parameters.append(Parameter(control.symbol, control, unit=control.unit))
            else:
                unit = primary.unit if primary.unit is not None else control.unit
                parameters.append(Parameter(primary.name, control, primary.scale, primary.offset, unit))
        lookup = {p.id: p for p in parameters}
        for p in parameters:
            # The bare symbol always means the plugin's own units.
            lookup.setdefault(p.symbol, Parameter(p.symbol, p.control, unit=p.control.unit))
        for alias in self.aliases:
            if alias.name not in lookup and alias.symbol != self.enable_symbol:
                control = by_symbol[alias.symbol]
                unit = alias.unit if alias.unit is not None else control.unit
                lookup[alias.name] = Parameter(alias.name, control, alias.scale, alias.offset, unit)
        object.__setattr__(self, "parameters", tuple(parameters))
        object.__setattr__(self, "_lookup", lookup)

    def parameter(self, parameter_id: str) -> Parameter:
        """The parameter a client means by ``parameter_id`` (symbol or alias).

        Note that a secondary alias returns a :class:`Parameter` whose ``id`` is
        that alias; callers that store values use :meth:`canonical`.

        Raises:
            UnknownParameter: no control of this plugin has that id.
        """
        try:
            return self._lookup[parameter_id]
        except KeyError:
            raise UnknownParameter(
                f"plugin {self.key} has no parameter {parameter_id!r}",
                {"parameter_id": parameter_id},
            ) from None

    def canonical(self, parameter_id: str) -> Parameter:
        """The canonical parameter for a control named by any of its ids."""
        symbol = self.parameter(parameter_id).symbol
        for p in self.parameters:
            if p.symbol == symbol:
                return p
        raise UnknownParameter(f"{parameter_id!r} is not adjustable", {"parameter_id": parameter_id})

    def defaults(self) -> dict[str, float]:
        return {p.id: p.default for p in self.parameters}

    def tempo_value(self, bpm: float) -> float | None:
        """The value of the plugin's tempo control for ``bpm`` (within its range), or None
        when it has none."""
        control = next((c for c in self.controls if c.symbol == self.tempo_symbol), None)
        return None if control is None else min(max(bpm, control.minimum), control.maximum)

    def enable_value(self, bypass: bool) -> float | None:
        """The value of the plugin's own enable control that means ``bypass``.

        The control's maximum means "on" (its minimum when
        ``enable_inverted``); a control missing from :attr:`controls` is
        taken as LV2's ``lv2:enabled`` toggle, 0..1.

        Returns:
            None when the plugin has no enable control.
        """
        if self.enable_symbol is None:
            return None
        control = next((c for c in self.controls if c.symbol == self.enable_symbol), None)
        low, high = (control.minimum, control.maximum) if control is not None else (0.0, 1.0)
        return high if bypass == self.enable_inverted else low

    def describe(self) -> dict[str, object]:
        return {
            "key": self.key,
            "uri": self.uri,
            "name": self.name,
            "audio_inputs": len(self.audio_inputs),
            "audio_outputs": len(self.audio_outputs),
            "bypass": "enable-port" if self.enable_symbol else "pass-through",
            "parameters": [p.describe() for p in self.parameters],
            "presets": [{"uri": p.uri, "label": p.label} for p in self.presets],
            "files": [f.describe() for f in self.files],
        }

    def file(self, file_id: object) -> FileParameter:
        """The file parameter a client means by ``file_id`` (its id or its URI).

        Raises:
            UnknownParameter: the plugin loads no such file.
        """
        for parameter in self.files:
            if file_id in (parameter.id, parameter.uri):
                return parameter
        raise UnknownParameter(
            f"plugin {self.key} loads no file {file_id!r}"
            + (f" (it loads: {', '.join(f.id for f in self.files)})" if self.files else " (it loads none)"),
            {"file_id": file_id},
        )

    def preset(self, name: str) -> FactoryPreset:
        """A factory preset by URI or label.

        Raises:
            UnknownParameter: no such preset (``details.preset``).
        """
        for preset in self.presets:
            if name in (preset.uri, preset.label):
                return preset
        raise UnknownPreset(f"plugin {self.key} has no preset {name!r}", {"preset": name})
