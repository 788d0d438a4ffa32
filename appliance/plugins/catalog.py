"""The plugin catalog: which plugins a client may add, and under which names.

Built once at start from ``config/plugins.yaml`` (curated entries with
friendly keys and the examples' parameter aliases) and the box's own scan of
its system LV2 folders (:mod:`appliance.plugins.lilv`). Every control's range,
default, unit and kind come from the plugin's real LV2 data; the YAML only
names things.

docs/protocol.md, "Adding plugins safely": a client's ``name`` and
``plugin_path`` are never paths to load. :meth:`Catalog.resolve` matches them
against catalog keys (case-insensitive), the stem of ``plugin_path`` and the
URIs the scan found, with pure string operations; nothing a client sends is
ever opened.

A :class:`Catalog` is immutable once built: any thread may read it. It keeps
the curated entries built, and every other installed plugin packed
(:class:`appliance.plugins.lilv.InstalledPlugins`) until a lookup asks for it; the
last :data:`RAW_TYPES_KEPT` of those stay built.
:meth:`Catalog.load` blocks (file read, LV2 scan): run it in a worker.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Literal

import yaml

from ..core.controls import Alias, Control, FactoryPreset, FileParameter, PluginType
from ..core.errors import ConfigError, InvalidMessage, PluginNotAllowed
from . import lilv

logger = logging.getLogger("appliance.plugins.catalog")

#: Catalog keys: lowercase, no dots (a path stem is matched against them).
KEY_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
#: Longest ``name`` / ``plugin_path`` worth looking at.
MAX_FIELD_LENGTH = 1024
#: How many installed plugins' types (added by URI) stay built after a lookup.
RAW_TYPES_KEPT = 64

#: libyaml's safe loader where PyYAML has it (the catalog file parses ~5× faster), else PyYAML's own.
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_ENTRY_KEYS = frozenset({"uri", "name", "aliases", "enable", "optional"})
_ALIAS_KEYS = frozenset({"symbol", "scale", "offset", "unit"})
_ENABLE_KEYS = frozenset({"symbol", "inverted"})
_TOP_KEYS = frozenset({"plugins"})


class Catalog:
    """Curated entries plus every installed LV2 audio effect, by URI.

    Attributes:
        entries: catalog key -> :class:`PluginType`, in file order; only the
            entries whose plugin is installed.
    """

    def __init__(
        self,
        entries: Mapping[str, PluginType],
        installed: lilv.InstalledPlugins | Iterable[lilv.ScannedPlugin],
    ) -> None:
        self.entries: dict[str, PluginType] = dict(entries)
        if not isinstance(installed, lilv.InstalledPlugins):
            installed = lilv.InstalledPlugins.of(installed)
        self._installed = installed
        #: URI -> name of every installed audio effect.
        self._effects = installed.effects()
        self._raw_type = functools.lru_cache(maxsize=RAW_TYPES_KEPT)(self._build_raw_type)

    # -- building --------------------------------------------------------

    @classmethod
    def load(cls, path: Path, scan: bool = True, *, cache: Path | None = None) -> Catalog:
        """Read the catalog file and the installed plugins' LV2 data.

        Blocking (file read; the full scan takes a few seconds): call from a
        worker thread, e.g. ``await asyncio.to_thread(Catalog.load, path)``.

        Args:
            path: the catalog YAML (``config/plugins.yaml``).
            scan: every installed plugin, so that any of them can be added
                by URI: from the cache, or scanned in a child process
                (:func:`appliance.plugins.lilv.load_plugins`). False scans only the
                catalog entries' plugins, in this process (fast; tests and
                tools); then only those URIs resolve.
            cache: optional JSON file for the full scan
                (:func:`appliance.plugins.lilv.load_plugins`).

        Returns:
            The catalog. Entries whose plugin is not installed are logged and
            left out; without liblilv, or when the scan fails, the catalog is
            empty (logged).

        Raises:
            ConfigError: the file is unreadable or invalid; ``key`` names the
                failing key (``plugins.reverb.aliases.damping.symbol``).
        """
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read the plugin catalog: {exc.strerror or exc}") from exc
        try:
            document = yaml.load(text, Loader=_SAFE_LOADER)
        except yaml.YAMLError as exc:
            raise ConfigError(str(path), f"not valid YAML: {exc}") from exc
        specs = parse(document)
        plugins: lilv.InstalledPlugins | list[lilv.ScannedPlugin]
        try:
            if scan:
                plugins = lilv.load_plugins(cache)
            else:
                plugins = lilv.scan_plugins(uris={spec.uri for spec in specs})
        except lilv.ScanError as exc:
            logger.error("no LV2 scan (%s): the plugin catalog is empty", exc)
            plugins = []
        catalog = cls.build(specs, plugins)
        logger.info(
            "plugin catalog: %d entries, %d other installed plugins",
            len(catalog.entries),
            len(catalog.installed()),
        )
        return catalog

    @classmethod
    def build(
        cls, specs: Iterable[EntrySpec], plugins: lilv.InstalledPlugins | Iterable[lilv.ScannedPlugin]
    ) -> Catalog:
        """Combine parsed entries with scanned plugins (pure, no I/O).

        Raises:
            ConfigError: an entry names a control its plugin does not have.
        """
        installed = (
            plugins if isinstance(plugins, lilv.InstalledPlugins) else lilv.InstalledPlugins.of(plugins)
        )
        entries: dict[str, PluginType] = {}
        for spec in specs:
            plugin = installed.get(spec.uri)
            if plugin is None:
                logger.log(
                    logging.INFO if spec.optional else logging.WARNING,
                    "catalog entry %s: plugin %s is not installed; left out",
                    spec.key,
                    spec.uri,
                )
                continue
            if not plugin.is_audio_effect:
                logger.warning(
                    "catalog entry %s: %s has no audio input and output to chain; left out",
                    spec.key,
                    spec.uri,
                )
                continue
            entries[spec.key] = spec.plugin_type(plugin)
        return cls(entries, installed)

    # -- queries ---------------------------------------------------------

    def lookup(self, key: str) -> PluginType | None:
        """The plugin type saved or configured under ``key``, if any.

        Args:
            key: a catalog key (any case) or the URI of an installed plugin
                (exact); a URI gives the plugin's raw type (key = URI, its
                own symbols, no aliases).
        """
        if not isinstance(key, str):
            return None
        found = self.entries.get(key.lower())
        if found is None and key in self._effects:
            found = self._raw_type(key)
        return found

    def _build_raw_type(self, uri: str) -> PluginType | None:
        plugin = self._installed.get(uri)
        return _scanned_type(plugin) if plugin is not None else None

    def resolve(self, name: object, plugin_path: object) -> PluginType:
        """The plugin a ``PLUGIN_ADD`` asks for (protocol.md "Adding plugins safely").

        Tried in order: ``name`` as a catalog key (any case) or an installed
        URI; ``plugin_path`` as an installed URI; the stem of ``plugin_path``
        (``/path/to/reverb.vst3`` -> ``reverb``, ``C:\\x\\Reverb.dll`` ->
        ``reverb``) as a catalog key. The strings are only compared, never
        opened: ``/any/dir/reverb.so`` means the catalog's reverb, whatever
        that file may be.

        Args:
            name: the request's ``name``; None when absent.
            plugin_path: the request's ``plugin_path``; None when absent.

        Raises:
            InvalidMessage: a field is present but not a string, or both are
                absent.
            PluginNotAllowed: nothing matched.
        """
        for field, value in (("name", name), ("plugin_path", plugin_path)):
            if value is not None and not isinstance(value, str):
                raise InvalidMessage(f"{field} must be a string", {"field": field})
        if name is None and plugin_path is None:
            raise InvalidMessage("PLUGIN_ADD needs a name or a plugin_path", {"field": "name"})
        candidates = [v for v in (name, plugin_path) if isinstance(v, str) and 0 < len(v) <= MAX_FIELD_LENGTH]
        for value in candidates:
            found = self.lookup(value)
            if found is not None:
                return found
        if isinstance(plugin_path, str) and 0 < len(plugin_path) <= MAX_FIELD_LENGTH:
            stem = _stem(plugin_path)
            if stem and stem in self.entries:
                return self.entries[stem]
        asked = name if isinstance(name, str) and name else plugin_path
        raise PluginNotAllowed(
            f"{_short(asked)} is not a plugin this box offers; add one of "
            f"{', '.join(self.entries) or 'nothing (the catalog is empty)'} or an installed plugin's URI",
            {"available": list(self.entries)},
        )

    def describe(self) -> list[dict[str, Any]]:
        """The curated entries' metadata, for a ``CATALOG`` message."""
        return [plugin_type.describe() for plugin_type in self.entries.values()]

    def installed(self) -> list[dict[str, Any]]:
        """Every other installed audio effect, short form (``uri``, ``name``), by URI."""
        curated = {t.uri for t in self.entries.values()}
        return [{"uri": uri, "name": name} for uri, name in self._effects.items() if uri not in curated]


# --------------------------------------------------------------------------
# The YAML file


@dataclass(frozen=True)
class EntrySpec:
    """One validated catalog entry, before it meets its plugin's LV2 data.

    Attributes:
        enable: ``(symbol, inverted)``; None: the port designated
            ``lv2:enabled``, if any; False: no enable port.
        optional: a plugin Debian does not ship (Neural Amp Modeler): its
            absence is no warning.
    """

    key: str
    uri: str
    name: str | None
    aliases: tuple[Alias, ...]
    enable: tuple[str, bool] | Literal[False] | None
    optional: bool = False

    def plugin_type(self, plugin: lilv.ScannedPlugin) -> PluginType:
        """This entry's :class:`PluginType`, with ``plugin``'s real controls.

        Raises:
            ConfigError: an alias or the enable port names a control the
                plugin does not have, or an alias shadows another control.
        """
        where = f"plugins.{self.key}"
        symbols = {c.symbol for c in plugin.controls}
        enable_symbol: str | None
        if self.enable is None:
            enable_symbol, inverted = plugin.enable_symbol, False
        elif self.enable is False:
            enable_symbol, inverted = None, False
        else:
            enable_symbol, inverted = self.enable
            if enable_symbol not in symbols:
                raise ConfigError(
                    f"{where}.enable.symbol",
                    f"{plugin.uri} has no control {enable_symbol!r} (it has: {', '.join(sorted(symbols))})",
                )
        for alias in self.aliases:
            key = f"{where}.aliases.{alias.name}"
            if alias.symbol not in symbols:
                raise ConfigError(
                    f"{key}.symbol",
                    f"{plugin.uri} has no control {alias.symbol!r} (it has: {', '.join(sorted(symbols))})",
                )
            if alias.symbol == enable_symbol:
                raise ConfigError(f"{key}.symbol", f"{alias.symbol!r} is the enable port, driven by bypass")
            if alias.name in symbols and alias.name != alias.symbol:
                raise ConfigError(key, f"{alias.name!r} is already another control's symbol")
        return PluginType(
            key=self.key,
            uri=plugin.uri,
            name=self.name or plugin.name,
            controls=tuple(_control(c) for c in plugin.controls),
            audio_inputs=plugin.audio_inputs,
            audio_outputs=plugin.audio_outputs,
            aliases=self.aliases,
            enable_symbol=enable_symbol,
            enable_inverted=inverted,
            tempo_symbol=plugin.tempo_symbol,
            latency=plugin.latency,
            monitors=plugin.monitors,
            presets=_presets(plugin, enable_symbol),
            files=_files(plugin),
        )


def parse(document: object) -> list[EntrySpec]:
    """Validate a loaded catalog document (pure).

    Raises:
        ConfigError: naming the first failing key.
    """
    if document is None:
        document = {}
    top = _mapping(document, "(top level)")
    for key in top:
        if key not in _TOP_KEYS:
            raise ConfigError(str(key), f"unknown key (expected: {', '.join(sorted(_TOP_KEYS))})")
    plugins = _mapping(top.get("plugins") or {}, "plugins")
    specs: list[EntrySpec] = []
    seen: set[str] = set()
    for key, body in plugins.items():
        where = f"plugins.{key}"
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            raise ConfigError(where, "a key is lowercase letters, digits, '_' or '-', starting with a letter")
        if key in seen:
            raise ConfigError(where, "duplicate key")
        seen.add(key)
        specs.append(_entry(key, body, where))
    return specs


def _entry(key: str, body: object, where: str) -> EntrySpec:
    entry = _mapping(body, where)
    _known(entry, _ENTRY_KEYS, where)
    uri = entry.get("uri")
    if not isinstance(uri, str) or ":" not in uri or any(c.isspace() for c in uri):
        raise ConfigError(f"{where}.uri", "required: the LV2 plugin URI")
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"{where}.name", "must be a non-empty string")
    aliases = tuple(
        _alias(alias_name, spec, f"{where}.aliases.{alias_name}")
        for alias_name, spec in _mapping(entry.get("aliases") or {}, f"{where}.aliases").items()
    )
    optional = entry.get("optional", False)
    if not isinstance(optional, bool):
        raise ConfigError(f"{where}.optional", "must be true or false")
    return EntrySpec(key, uri, name, aliases, _enable(entry, where), optional)


def _alias(name: object, body: object, where: str) -> Alias:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(where, "an alias is a letter or '_' followed by letters, digits or '_'")
    if isinstance(body, str):
        body = {"symbol": body}
    spec = _mapping(body, where)
    _known(spec, _ALIAS_KEYS, where)
    symbol = spec.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise ConfigError(f"{where}.symbol", "required: the LV2 port symbol")
    scale = _number(spec.get("scale", 1.0), f"{where}.scale")
    if scale == 0:
        raise ConfigError(f"{where}.scale", "must not be 0")
    offset = _number(spec.get("offset", 0.0), f"{where}.offset")
    unit = spec.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise ConfigError(f"{where}.unit", "must be a string")
    return Alias(name, symbol, scale, offset, unit)


def _enable(entry: Mapping[Any, Any], where: str) -> tuple[str, bool] | Literal[False] | None:
    value = entry.get("enable")
    if value is None or value is True:
        return None
    if value is False:
        return False
    spec = _mapping(value, f"{where}.enable")
    _known(spec, _ENABLE_KEYS, f"{where}.enable")
    symbol = spec.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise ConfigError(f"{where}.enable.symbol", "required: the LV2 port symbol")
    inverted = spec.get("inverted", False)
    if not isinstance(inverted, bool):
        raise ConfigError(f"{where}.enable.inverted", "must be true or false")
    return symbol, inverted


def _mapping(value: object, where: str) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(where, "must be a mapping")
    return value


def _known(spec: Mapping[Any, Any], allowed: frozenset[str], where: str) -> None:
    for key in spec:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}", f"unknown key (expected: {', '.join(sorted(allowed))})")


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(where, "must be a finite number")
    return float(value)


# --------------------------------------------------------------------------
# Helpers


#: The rate that ``lv2:sampleRate`` ranges (fractions of the rate) are turned
#: into Hz with: the box's rate, 48 kHz in every shipped config.
SAMPLE_RATE = 48000


def _control(port: lilv.ScannedControl) -> Control:
    """A :class:`Control` from a scanned port; labels kept for enums and integers.

    LV2 gives the range of an ``lv2:sampleRate`` port as fractions of the
    sample rate while the value itself is in Hz (LV2 core, lv2:sampleRate).
    """
    scale = SAMPLE_RATE if port.sample_rate else 1
    return Control(
        symbol=port.symbol,
        name=port.name,
        minimum=port.minimum * scale,
        maximum=port.maximum * scale,
        default=port.default * scale,
        unit=port.unit,
        kind=port.kind,
        labels=port.labels if port.kind in ("enum", "integer") else (),
        logarithmic=port.logarithmic,
    )


def _scanned_type(plugin: lilv.ScannedPlugin) -> PluginType:
    """The raw type of an installed plugin: key = URI, its own symbols."""
    return PluginType(
        key=plugin.uri,
        uri=plugin.uri,
        name=plugin.name,
        controls=tuple(_control(c) for c in plugin.controls),
        audio_inputs=plugin.audio_inputs,
        audio_outputs=plugin.audio_outputs,
        enable_symbol=plugin.enable_symbol,
        tempo_symbol=plugin.tempo_symbol,
        latency=plugin.latency,
        monitors=plugin.monitors,
        presets=_presets(plugin, plugin.enable_symbol),
        files=_files(plugin),
    )


def _files(plugin: lilv.ScannedPlugin) -> tuple[FileParameter, ...]:
    """The files it loads, each named by its URI's last part (``…#ir`` → ``ir``)."""
    return tuple(
        FileParameter(re.split(r"[#/]", f.uri.rstrip("/#"))[-1], f.uri, f.label, f.file_types)
        for f in plugin.files
    )


def _presets(plugin: lilv.ScannedPlugin, enable_symbol: str | None) -> tuple[FactoryPreset, ...]:
    """The plugin's factory presets, each limited to its adjustable controls (not meters, not
    the enable port that bypass drives, not the tempo port the box drives); a preset left with
    nothing to set is dropped."""
    adjustable = {c.symbol for c in plugin.controls} - {enable_symbol, plugin.tempo_symbol}
    presets = []
    for preset in plugin.presets:
        values = tuple((symbol, value) for symbol, value in preset.values if symbol in adjustable)
        if values:
            presets.append(FactoryPreset(preset.uri, preset.label, values))
    return tuple(presets)


def _stem(plugin_path: str) -> str:
    """The lowercase stem of a client's path, by string rules only.

    ``PureWindowsPath`` splits on both ``/`` and ``\\``; nothing touches the
    filesystem. Everything after the first dot goes (``reverb.lv2.so`` ->
    ``reverb``), so ``..`` and dotfiles give an empty stem.
    """
    return PureWindowsPath(plugin_path).name.split(".", 1)[0].lower()


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"
