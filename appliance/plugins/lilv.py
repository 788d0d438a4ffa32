"""A small ctypes binding to liblilv: scan the installed LV2 plugins.

Only what the catalog needs: per plugin its URI, name, audio ports, control
input ports (range, default, unit, kind, scale points), its factory presets
(LV2 presets: ``pset:Preset`` resources with ``lv2:port`` values) and a few
flags. The
whole scan is one blocking call, :func:`scan_plugins`; the loop runs it through
``asyncio.to_thread``. Each scan makes and frees its own ``LilvWorld``, so it is
safe from any one thread at a time per call (lilv itself is not thread-safe,
but nothing here is shared between calls).

A full scan of ~500 plugins takes a few seconds and leaves liblilv and the
whole LV2 world (~80 MB that the allocator keeps) in the process that made
it. So the full scan never runs in the box's process: :func:`load_plugins`
runs it in a short-lived child (``python -m appliance.plugins.lilv``, which also
keeps a bundle that crashes lilv from taking the box down), keeps the result
in a JSON cache file, invalidated when the modification times of the LV2
folders, their bundles or the bundles' Turtle files change, and hands back
:class:`InstalledPlugins`: every plugin's URI, name and whether it chains at
hand, the rest of its data compressed until it is looked up.

Memory ownership follows ``lilv.h`` (0.24): nodes returned by
``lilv_plugin_get_name``, ``lilv_port_get_name``, ``lilv_port_get``,
``lilv_world_get`` and ``lilv_port_get_range`` are ours to ``lilv_node_free``;
``lilv_port_get_scale_points`` is ours to ``lilv_scale_points_free``, and
``lilv_plugin_get_related``, ``lilv_plugin_get_value`` and ``lilv_world_find_nodes``
are ours to ``lilv_nodes_free``; the URI, symbol and scale-point nodes are owned by lilv
and never freed here.

Specs followed: LV2 core (lv2:toggled, lv2:integer, lv2:enumeration,
lv2:designation lv2:enabled / lv2:latency, lv2:reportsLatency), LV2 units
(units:unit, units:symbol), LV2 port properties (pprops:logarithmic), LV2 patch
(patch:writable parameters ranged atom:Path: the files a plugin loads, with
MOD's mod:fileTypes), LV2 time (a control designated time:beatsPerMinute).
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import hashlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import sysconfig
import zlib
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..store.files import write_atomic

logger = logging.getLogger("appliance.plugins.lilv")

Kind = Literal["float", "integer", "toggle", "enum"]

#: Bumped whenever the cached JSON layout changes.
CACHE_FORMAT = 6
#: How long the scan's child process may take (~2.5 s for ~500 plugins on a PC).
SCAN_TIMEOUT = 120.0
#: The scan child's exit code when liblilv cannot be loaded.
_NO_LILV_EXIT = 3
#: Lines of the scan child's stderr (lilv's complaints about broken bundles) put in the log.
_STDERR_LINES_LOGGED = 40

_LV2 = "http://lv2plug.in/ns/lv2core#"
#: The designation of a control that takes the host's tempo (Guitarix's delays' ``HOSTBPM``).
TEMPO_DESIGNATION = "http://lv2plug.in/ns/ext/time#beatsPerMinute"
_ATOM = "http://lv2plug.in/ns/ext/atom#"
_MIDI_EVENT = "http://lv2plug.in/ns/ext/midi#MidiEvent"
_EVENT_PORT = "http://lv2plug.in/ns/ext/event#EventPort"
_UNITS = "http://lv2plug.in/ns/extensions/units#"
_PPROPS = "http://lv2plug.in/ns/ext/port-props#"
_LILV_OPTION_LV2_PATH = "http://drobilla.net/ns/lilv#lv2-path"
_PSET = "http://lv2plug.in/ns/ext/presets#"
_RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"

#: Display strings for the common LV2 unit URIs (LV2 units spec).
UNIT_SYMBOLS: dict[str, str] = {
    _UNITS + "db": "dB",
    _UNITS + "hz": "Hz",
    _UNITS + "khz": "kHz",
    _UNITS + "mhz": "MHz",
    _UNITS + "ms": "ms",
    _UNITS + "s": "s",
    _UNITS + "min": "min",
    _UNITS + "pc": "%",
    _UNITS + "bpm": "bpm",
    _UNITS + "beat": "beats",
    _UNITS + "bar": "bars",
    _UNITS + "cent": "ct",
    _UNITS + "semitone12TET": "semi",
    _UNITS + "oct": "oct",
    _UNITS + "coef": "",
    _UNITS + "degree": "°",
    _UNITS + "frame": "frames",
    _UNITS + "midiNote": "note",
    _UNITS + "m": "m",
    _UNITS + "cm": "cm",
    _UNITS + "mm": "mm",
    _UNITS + "km": "km",
    _UNITS + "inch": "in",
    _UNITS + "mile": "mi",
}


class ScanError(RuntimeError):
    """The installed plugins could not be scanned."""


class LilvUnavailable(ScanError):
    """liblilv-0 cannot be loaded on this machine."""


@dataclass(frozen=True)
class ScannedControl:
    """One control input port as the plugin's Turtle data describes it.

    ``labels`` are the port's scale points (value, label), sorted by value.
    ``is_enable`` is True for the port designated ``lv2:enabled``; ``is_tempo``
    for one designated ``time:beatsPerMinute`` (it takes the host's tempo).
    ``sample_rate`` is True for ``lv2:sampleRate`` ports, whose range is a
    fraction of the sample rate.
    """

    index: int
    symbol: str
    name: str
    minimum: float
    maximum: float
    default: float
    unit: str = ""
    kind: Kind = "float"
    labels: tuple[tuple[float, str], ...] = ()
    logarithmic: bool = False
    is_enable: bool = False
    is_tempo: bool = False
    sample_rate: bool = False


@dataclass(frozen=True)
class ScannedPreset:
    """A factory preset shipped in the plugin's bundle (``pset:Preset``).

    ``values`` are (control symbol, value in the plugin's units), as the
    preset's ``lv2:port`` entries give them.
    """

    uri: str
    label: str
    values: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ScannedFile:
    """A file the plugin loads (a cabinet IR, an amp model), set by a patch message: a
    ``patch:writable`` parameter whose range is ``atom:Path``.

    Attributes:
        uri: the parameter's URI (what a ``patch:Set`` names).
        label: its ``rdfs:label`` (the URI's last part when it has none).
        file_types: MOD's ``mod:fileTypes`` list (``ir``, ``nam``, ``aidadspmodel``, …), or
            empty: the plugin does not say.
    """

    uri: str
    label: str
    file_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScannedPlugin:
    """One installed LV2 plugin, as far as the box cares.

    Attributes:
        uri: the plugin URI.
        name: its ``doap:name``.
        audio_inputs / audio_outputs: audio port symbols in port index order
            (side-chain inputs left out).
        sidechain_inputs: audio inputs marked ``lv2:isSideChain``.
        controls: control input ports in port index order.
        monitors: control output port symbols (meters, tuner readings).
        atom_inputs: atom/event input port symbols (jalv feeds them nothing).
        midi_input: an atom/event input supports MIDI events.
        cv_ports: CV port symbols (the box cannot wire these).
        latency: the plugin reports its latency (lv2:reportsLatency or a
            port designated lv2:latency).
        presets: its factory presets, sorted by label.
        files: the files it loads (:class:`ScannedFile`), by URI (RDF gives them no order).
    """

    uri: str
    name: str
    audio_inputs: tuple[str, ...]
    audio_outputs: tuple[str, ...]
    controls: tuple[ScannedControl, ...]
    sidechain_inputs: tuple[str, ...] = ()
    monitors: tuple[str, ...] = ()
    atom_inputs: tuple[str, ...] = ()
    midi_input: bool = False
    cv_ports: tuple[str, ...] = ()
    latency: bool = False
    presets: tuple[ScannedPreset, ...] = ()
    files: tuple[ScannedFile, ...] = ()

    @property
    def is_audio_effect(self) -> bool:
        """True when the box can chain it: audio in, audio out, no CV ports."""
        return bool(self.audio_inputs and self.audio_outputs and not self.cv_ports)

    @property
    def enable_symbol(self) -> str | None:
        """The control designated ``lv2:enabled``, if any."""
        for control in self.controls:
            if control.is_enable:
                return control.symbol
        return None

    @property
    def tempo_symbol(self) -> str | None:
        """The control designated ``time:beatsPerMinute``, if any."""
        return next((c.symbol for c in self.controls if c.is_tempo), None)

    def control(self, symbol: str) -> ScannedControl | None:
        """The control input port with this symbol, or None."""
        for control in self.controls:
            if control.symbol == symbol:
                return control
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the cache format)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScannedPlugin:
        """Rebuild from :meth:`to_json` output."""
        controls = tuple(
            ScannedControl(
                **{
                    **c,
                    "labels": tuple((float(v), str(label)) for v, label in c["labels"]),
                }
            )
            for c in data["controls"]
        )
        return cls(
            uri=data["uri"],
            name=data["name"],
            audio_inputs=tuple(data["audio_inputs"]),
            audio_outputs=tuple(data["audio_outputs"]),
            controls=controls,
            sidechain_inputs=tuple(data["sidechain_inputs"]),
            monitors=tuple(data["monitors"]),
            atom_inputs=tuple(data["atom_inputs"]),
            midi_input=bool(data["midi_input"]),
            cv_ports=tuple(data["cv_ports"]),
            latency=bool(data["latency"]),
            presets=tuple(
                ScannedPreset(p["uri"], p["label"], tuple((str(k), float(v)) for k, v in p["values"]))
                for p in data["presets"]
            ),
            files=tuple(ScannedFile(f["uri"], f["label"], tuple(f["file_types"])) for f in data["files"]),
        )


class InstalledPlugins:
    """The scan as the box keeps it: every plugin's URI, name and whether it chains at
    hand, the rest of its data compressed and decoded when it is looked up.

    The full data of ~500 plugins (26,000 control ports, most of them in a few
    LSP plugins) is ~30 MB of Python objects; compressed it is ~0.7 MB, and the
    largest plugin decodes in ~2 ms. Immutable: any thread may read it.
    """

    def __init__(self, packed: dict[str, tuple[str, bool, str]]) -> None:
        #: URI -> (name, is an audio effect, the rest of its data: base64 of zlib of JSON).
        self._packed = packed

    @classmethod
    def of(cls, plugins: Iterable[ScannedPlugin]) -> InstalledPlugins:
        """These plugins (a scan's result), packed."""
        return cls({p.uri: (p.name, p.is_audio_effect, _pack(p)) for p in plugins})

    def __len__(self) -> int:
        return len(self._packed)

    def __contains__(self, uri: object) -> bool:
        return uri in self._packed

    def __iter__(self) -> Iterator[ScannedPlugin]:
        """Every plugin's full data, by URI (decodes them all: tests and tools only)."""
        for uri in sorted(self._packed):
            plugin = self.get(uri)
            if plugin is not None:
                yield plugin

    def effects(self) -> dict[str, str]:
        """URI -> name of every plugin the box can chain (:attr:`ScannedPlugin.is_audio_effect`)."""
        return {uri: name for uri, (name, effect, _) in sorted(self._packed.items()) if effect}

    def get(self, uri: str) -> ScannedPlugin | None:
        """The plugin's full data, decoded now; None when it is not installed.

        A damaged entry (the cache file changed under the box) is logged and
        counts as not installed.
        """
        found = self._packed.get(uri)
        if found is None:
            return None
        name, _, packed = found
        try:
            data = json.loads(zlib.decompress(base64.b64decode(packed, validate=True)))
            return ScannedPlugin.from_json({**data, "uri": uri, "name": name})
        except (ValueError, zlib.error, KeyError, TypeError) as exc:
            logger.error(
                "the LV2 scan cache's data for %s is damaged (%s): delete the cache to scan again", uri, exc
            )
            return None

    def to_cache(self, stamp: str) -> str:
        """The cache file's text for the LV2 folders' :func:`fingerprint` ``stamp``."""
        plugins = [
            [uri, name, effect, packed] for uri, (name, effect, packed) in sorted(self._packed.items())
        ]
        return json.dumps({"format": CACHE_FORMAT, "fingerprint": stamp, "plugins": plugins})

    @classmethod
    def from_cache(cls, text: str, stamp: str) -> InstalledPlugins:
        """Read a cache file's text (no plugin decoded yet).

        Raises:
            ValueError: it is not a cache of this format for ``stamp``.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            raise ValueError("another cache format")
        if data.get("fingerprint") != stamp:
            raise ValueError("the LV2 folders changed")
        packed: dict[str, tuple[str, bool, str]] = {}
        for item in data.get("plugins", ()):
            if not (isinstance(item, list) and len(item) == 4):
                raise ValueError(f"not a cache entry: {item!r:.80}")
            uri, name, effect, blob = item
            if not (isinstance(uri, str) and isinstance(name, str) and isinstance(effect, bool)):
                raise ValueError(f"not a cache entry: {item!r:.80}")
            if not isinstance(blob, str):
                raise ValueError(f"not a cache entry: {item!r:.80}")
            packed[uri] = (name, effect, blob)
        return cls(packed)


def _pack(plugin: ScannedPlugin) -> str:
    data = plugin.to_json()
    del data["uri"], data["name"]
    compact = json.dumps(data, separators=(",", ":")).encode()
    return base64.b64encode(zlib.compress(compact)).decode("ascii")


# --------------------------------------------------------------------------
# Paths


def default_lv2_path() -> list[str]:
    """The LV2 folders scanned when none are given.

    ``$LV2_PATH`` when set, else the system folders (multiarch first, as
    Debian's lilv does), never a user's ``~/.lv2``.
    """
    env = os.environ.get("LV2_PATH")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    folders = []
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        folders.append(f"/usr/lib/{multiarch}/lv2")
    folders += ["/usr/lib/lv2", "/usr/local/lib/lv2"]
    return folders


def fingerprint(folders: Sequence[str]) -> str:
    """A digest of the mtimes of the LV2 folders, their bundles and Turtle files.

    Any package install, removal or upgrade changes it. Blocking (stats a few
    thousand files, a few milliseconds).
    """
    digest = hashlib.sha256()
    for folder in folders:
        digest.update(folder.encode() + b"\0")
        for path, mtime in _mtimes(Path(folder)):
            digest.update(f"{path}\0{mtime}\0".encode())
    return digest.hexdigest()


def _mtimes(folder: Path) -> Iterator[tuple[str, int]]:
    try:
        yield str(folder), folder.stat().st_mtime_ns
        bundles = sorted(folder.iterdir())
    except OSError:
        return
    for bundle in bundles:
        try:
            yield str(bundle), bundle.stat().st_mtime_ns
            if bundle.is_dir():
                for ttl in sorted(bundle.glob("*.ttl")):
                    yield str(ttl), ttl.stat().st_mtime_ns
        except OSError:
            continue


# --------------------------------------------------------------------------
# The C library


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("lilv-0") or "liblilv-0.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise LilvUnavailable(f"cannot load liblilv ({name}): {exc}") from exc
    p = ctypes.c_void_p
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "lilv_world_new": (p, []),
        "lilv_world_free": (None, [p]),
        "lilv_world_set_option": (None, [p, ctypes.c_char_p, p]),
        "lilv_world_load_all": (None, [p]),
        "lilv_world_get_all_plugins": (p, [p]),
        "lilv_world_get": (p, [p, p, p, p]),
        "lilv_new_uri": (p, [p, ctypes.c_char_p]),
        "lilv_new_string": (p, [p, ctypes.c_char_p]),
        "lilv_node_free": (None, [p]),
        "lilv_node_as_string": (ctypes.c_char_p, [p]),
        "lilv_node_is_uri": (ctypes.c_bool, [p]),
        "lilv_node_as_uri": (ctypes.c_char_p, [p]),
        "lilv_node_is_float": (ctypes.c_bool, [p]),
        "lilv_node_is_int": (ctypes.c_bool, [p]),
        "lilv_node_as_float": (ctypes.c_float, [p]),
        "lilv_plugins_begin": (p, [p]),
        "lilv_plugins_is_end": (ctypes.c_bool, [p, p]),
        "lilv_plugins_next": (p, [p, p]),
        "lilv_plugins_get": (p, [p, p]),
        "lilv_plugin_get_uri": (p, [p]),
        "lilv_plugin_get_name": (p, [p]),
        "lilv_plugin_get_num_ports": (ctypes.c_uint32, [p]),
        "lilv_plugin_get_port_by_index": (p, [p, ctypes.c_uint32]),
        "lilv_plugin_has_latency": (ctypes.c_bool, [p]),
        "lilv_port_is_a": (ctypes.c_bool, [p, p, p]),
        "lilv_port_get_symbol": (p, [p, p]),
        "lilv_port_get_name": (p, [p, p]),
        "lilv_port_get": (p, [p, p, p]),
        "lilv_port_has_property": (ctypes.c_bool, [p, p, p]),
        "lilv_port_supports_event": (ctypes.c_bool, [p, p, p]),
        "lilv_port_get_range": (None, [p, p, ctypes.POINTER(p), ctypes.POINTER(p), ctypes.POINTER(p)]),
        "lilv_port_get_scale_points": (p, [p, p]),
        "lilv_scale_points_free": (None, [p]),
        "lilv_scale_points_begin": (p, [p]),
        "lilv_scale_points_is_end": (ctypes.c_bool, [p, p]),
        "lilv_scale_points_next": (p, [p, p]),
        "lilv_scale_points_get": (p, [p, p]),
        "lilv_scale_point_get_label": (p, [p]),
        "lilv_scale_point_get_value": (p, [p]),
        "lilv_plugin_get_related": (p, [p, p]),
        "lilv_world_load_resource": (ctypes.c_int, [p, p]),
        "lilv_world_find_nodes": (p, [p, p, p, p]),
        "lilv_nodes_free": (None, [p]),
        "lilv_plugin_get_value": (p, [p, p]),
        "lilv_nodes_begin": (p, [p]),
        "lilv_nodes_is_end": (ctypes.c_bool, [p, p]),
        "lilv_nodes_next": (p, [p, p]),
        "lilv_nodes_get": (p, [p, p]),
    }
    for function, (restype, argtypes) in signatures.items():
        fn = getattr(lib, function)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


_library: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """liblilv-0, loaded and typed once.

    Raises:
        LilvUnavailable: the library is not installed.
    """
    global _library
    if _library is None:
        _library = _load_library()
    return _library


def is_available() -> bool:
    """Whether liblilv-0 can be loaded here."""
    try:
        library()
    except LilvUnavailable:
        return False
    return True


# --------------------------------------------------------------------------
# The scan


class _Scanner:
    """One LilvWorld and the URI nodes the scan asks about; freed by close()."""

    _URIS: ClassVar[dict[str, str]] = {
        "audio": _LV2 + "AudioPort",
        "control": _LV2 + "ControlPort",
        "cv": _LV2 + "CVPort",
        "atom": _ATOM + "AtomPort",
        "event": _EVENT_PORT,
        "input": _LV2 + "InputPort",
        "output": _LV2 + "OutputPort",
        "toggled": _LV2 + "toggled",
        "integer": _LV2 + "integer",
        "enumeration": _LV2 + "enumeration",
        "sample_rate": _LV2 + "sampleRate",
        "side_chain": _LV2 + "isSideChain",
        "designation": _LV2 + "designation",
        "enabled": _LV2 + "enabled",
        "logarithmic": _PPROPS + "logarithmic",
        "unit": _UNITS + "unit",
        "unit_symbol": _UNITS + "symbol",
        "midi_event": _MIDI_EVENT,
        "preset": _PSET + "Preset",
        "preset_value": _PSET + "value",
        "port": _LV2 + "port",
        "symbol": _LV2 + "symbol",
        "label": _RDFS_LABEL,
        "writable": "http://lv2plug.in/ns/ext/patch#writable",
        "range": "http://www.w3.org/2000/01/rdf-schema#range",
        "file_types": "http://moddevices.com/ns/mod#fileTypes",
    }

    def __init__(self, lib: ctypes.CDLL, folders: Sequence[str]) -> None:
        self.lib = lib
        self.world = lib.lilv_world_new()
        if not self.world:
            raise LilvUnavailable("lilv_world_new failed")
        self.nodes: dict[str, int] = {}
        try:
            for key, uri in self._URIS.items():
                self.nodes[key] = lib.lilv_new_uri(self.world, uri.encode())
            path = lib.lilv_new_string(self.world, os.pathsep.join(folders).encode())
            lib.lilv_world_set_option(self.world, _LILV_OPTION_LV2_PATH.encode(), path)
            lib.lilv_node_free(path)
            lib.lilv_world_load_all(self.world)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for node in self.nodes.values():
            self.lib.lilv_node_free(node)
        self.nodes.clear()
        if self.world:
            self.lib.lilv_world_free(self.world)
            self.world = None

    def plugins(self, uris: Collection[str] | None) -> Iterator[ScannedPlugin]:
        lib = self.lib
        plugins = lib.lilv_world_get_all_plugins(self.world)
        it = lib.lilv_plugins_begin(plugins)
        while not lib.lilv_plugins_is_end(plugins, it):
            plugin = lib.lilv_plugins_get(plugins, it)
            it = lib.lilv_plugins_next(plugins, it)
            uri = _text(lib, lib.lilv_plugin_get_uri(plugin))
            if uris is not None and uri not in uris:
                continue  # reading the URI is cheap; the ports are not
            try:
                yield self._plugin(plugin, uri)
            except Exception:  # one broken bundle must not hide the others
                logger.warning("skipping LV2 plugin %s: unreadable data", uri, exc_info=True)

    def _plugin(self, plugin: int, uri: str) -> ScannedPlugin:
        lib, n = self.lib, self.nodes
        name = self._owned_text(lib.lilv_plugin_get_name(plugin)) or uri
        audio_in: list[str] = []
        audio_out: list[str] = []
        sidechain: list[str] = []
        controls: list[ScannedControl] = []
        monitors: list[str] = []
        atom_in: list[str] = []
        cv: list[str] = []
        midi = False
        for index in range(lib.lilv_plugin_get_num_ports(plugin)):
            port = lib.lilv_plugin_get_port_by_index(plugin, index)
            symbol = _text(lib, lib.lilv_port_get_symbol(plugin, port))
            is_input = lib.lilv_port_is_a(plugin, port, n["input"])
            if lib.lilv_port_is_a(plugin, port, n["audio"]):
                if not is_input:
                    audio_out.append(symbol)
                elif lib.lilv_port_has_property(plugin, port, n["side_chain"]):
                    sidechain.append(symbol)
                else:
                    audio_in.append(symbol)
            elif lib.lilv_port_is_a(plugin, port, n["cv"]):
                cv.append(symbol)
            elif lib.lilv_port_is_a(plugin, port, n["control"]):
                if is_input:
                    controls.append(self._control(plugin, port, index, symbol))
                else:
                    monitors.append(symbol)
            elif is_input and (
                lib.lilv_port_is_a(plugin, port, n["atom"]) or lib.lilv_port_is_a(plugin, port, n["event"])
            ):
                atom_in.append(symbol)
                midi = midi or bool(lib.lilv_port_supports_event(plugin, port, n["midi_event"]))
        return ScannedPlugin(
            uri=uri,
            name=name,
            audio_inputs=tuple(audio_in),
            audio_outputs=tuple(audio_out),
            controls=tuple(controls),
            sidechain_inputs=tuple(sidechain),
            monitors=tuple(monitors),
            atom_inputs=tuple(atom_in),
            midi_input=midi,
            cv_ports=tuple(cv),
            latency=bool(lib.lilv_plugin_has_latency(plugin)),
            presets=self._presets(plugin),
            files=self._files(plugin),
        )

    def _files(self, plugin: int) -> tuple[ScannedFile, ...]:
        """Its ``patch:writable`` parameters whose range is ``atom:Path``."""
        lib, n = self.lib, self.nodes
        writable = lib.lilv_plugin_get_value(plugin, n["writable"])
        if not writable:
            return ()
        files: list[ScannedFile] = []
        try:
            for parameter in self._each(writable):
                ranged = self._owned_text(lib.lilv_world_get(self.world, parameter, n["range"], None))
                if ranged != _ATOM + "Path":
                    continue
                uri = _text(lib, parameter)
                label = self._owned_text(lib.lilv_world_get(self.world, parameter, n["label"], None))
                types = self._owned_text(lib.lilv_world_get(self.world, parameter, n["file_types"], None))
                listed = tuple(t.strip() for t in types.split(",") if t.strip())
                files.append(ScannedFile(uri, label or uri.rsplit("#", 1)[-1], listed))
        finally:
            lib.lilv_nodes_free(writable)
        return tuple(sorted(files, key=lambda f: f.uri))

    def _presets(self, plugin: int) -> tuple[ScannedPreset, ...]:
        """The plugin's factory presets: each preset's resource loaded, its port values read."""
        lib, n = self.lib, self.nodes
        presets: list[ScannedPreset] = []
        related = lib.lilv_plugin_get_related(plugin, n["preset"])
        if not related:
            return ()
        try:
            for preset in self._each(related):
                lib.lilv_world_load_resource(self.world, preset)
                uri = _text(lib, preset)
                label = self._owned_text(lib.lilv_world_get(self.world, preset, n["label"], None))
                values: list[tuple[str, float]] = []
                ports = lib.lilv_world_find_nodes(self.world, preset, n["port"], None)
                try:
                    for port in self._each(ports):
                        symbol = self._owned_text(lib.lilv_world_get(self.world, port, n["symbol"], None))
                        value = lib.lilv_world_get(self.world, port, n["preset_value"], None)
                        try:
                            number = value and (lib.lilv_node_is_float(value) or lib.lilv_node_is_int(value))
                            if symbol and number:
                                values.append((symbol, float(lib.lilv_node_as_float(value))))
                        finally:
                            if value:
                                lib.lilv_node_free(value)
                finally:
                    if ports:
                        lib.lilv_nodes_free(ports)
                if values:
                    presets.append(ScannedPreset(uri, label or uri.rsplit("#", 1)[-1], tuple(sorted(values))))
        finally:
            lib.lilv_nodes_free(related)
        return tuple(sorted(presets, key=lambda p: (p.label.casefold(), p.uri)))

    def _each(self, nodes: int | None) -> Iterator[int]:
        """The nodes of a LilvNodes collection (borrowed from it)."""
        if not nodes:
            return
        lib = self.lib
        it = lib.lilv_nodes_begin(nodes)
        while not lib.lilv_nodes_is_end(nodes, it):
            yield lib.lilv_nodes_get(nodes, it)
            it = lib.lilv_nodes_next(nodes, it)

    def _control(self, plugin: int, port: int, index: int, symbol: str) -> ScannedControl:
        lib, n = self.lib, self.nodes
        name = self._owned_text(lib.lilv_port_get_name(plugin, port)) or symbol

        def has(prop: str) -> bool:
            return bool(lib.lilv_port_has_property(plugin, port, n[prop]))

        if has("toggled"):
            kind: Kind = "toggle"
        elif has("enumeration"):
            kind = "enum"
        elif has("integer"):
            kind = "integer"
        else:
            kind = "float"

        default, minimum, maximum = self._range(plugin, port)
        if kind == "toggle":
            minimum = 0.0 if minimum is None else minimum
            maximum = 1.0 if maximum is None else maximum
        labels = self._scale_points(plugin, port)
        if minimum is None:
            minimum = min((v for v, _ in labels), default=0.0)
        if maximum is None:
            maximum = max((v for v, _ in labels), default=max(minimum, 1.0))
        if maximum < minimum:
            minimum, maximum = maximum, minimum
        if default is None:
            default = minimum
        default = min(max(default, minimum), maximum)

        designation = lib.lilv_port_get(plugin, port, n["designation"])
        designated = _text(lib, designation) if designation else ""
        if designation:
            lib.lilv_node_free(designation)

        return ScannedControl(
            index=index,
            symbol=symbol,
            name=name,
            minimum=minimum,
            maximum=maximum,
            default=default,
            unit=self._unit(plugin, port),
            kind=kind,
            labels=labels,
            logarithmic=has("logarithmic"),
            is_enable=designated == _LV2 + "enabled",
            is_tempo=designated == TEMPO_DESIGNATION,
            sample_rate=has("sample_rate"),
        )

    def _range(self, plugin: int, port: int) -> tuple[float | None, float | None, float | None]:
        lib = self.lib
        default, minimum, maximum = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        lib.lilv_port_get_range(
            plugin, port, ctypes.byref(default), ctypes.byref(minimum), ctypes.byref(maximum)
        )
        values = []
        for node in (default, minimum, maximum):
            values.append(self._number(node.value))
            if node.value:
                lib.lilv_node_free(node.value)
        return values[0], values[1], values[2]

    def _number(self, node: int | None) -> float | None:
        lib = self.lib
        if not node or not (lib.lilv_node_is_float(node) or lib.lilv_node_is_int(node)):
            return None
        value = float(lib.lilv_node_as_float(node))
        if not math.isfinite(value):
            return None
        return float(f"{value:.7g}")  # lilv gives float32: 0.1 not 0.10000000149

    def _scale_points(self, plugin: int, port: int) -> tuple[tuple[float, str], ...]:
        lib = self.lib
        points = lib.lilv_port_get_scale_points(plugin, port)
        if not points:
            return ()
        labels: list[tuple[float, str]] = []
        try:
            it = lib.lilv_scale_points_begin(points)
            while not lib.lilv_scale_points_is_end(points, it):
                point = lib.lilv_scale_points_get(points, it)
                it = lib.lilv_scale_points_next(points, it)
                value = self._number(lib.lilv_scale_point_get_value(point))
                if value is not None:
                    labels.append((value, _text(lib, lib.lilv_scale_point_get_label(point))))
        finally:
            lib.lilv_scale_points_free(points)
        return tuple(sorted(labels, key=lambda item: item[0]))

    def _unit(self, plugin: int, port: int) -> str:
        lib, n = self.lib, self.nodes
        unit = lib.lilv_port_get(plugin, port, n["unit"])
        if not unit:
            return ""
        try:
            if lib.lilv_node_is_uri(unit):
                known = UNIT_SYMBOLS.get(_text(lib, unit))
                if known is not None:
                    return known
            symbol = lib.lilv_world_get(self.world, unit, n["unit_symbol"], None)
            return self._owned_text(symbol).strip()
        finally:
            lib.lilv_node_free(unit)

    def _owned_text(self, node: int | None) -> str:
        """The string of a node we own, which is freed."""
        if not node:
            return ""
        try:
            return _text(self.lib, node)
        finally:
            self.lib.lilv_node_free(node)


def _text(lib: ctypes.CDLL, node: int | None) -> str:
    if not node:
        return ""
    raw = lib.lilv_node_as_string(node)
    return raw.decode("utf-8", "replace") if raw else ""


def scan_plugins(
    lv2_path: Sequence[str] | None = None, uris: Collection[str] | None = None
) -> list[ScannedPlugin]:
    """Scan the LV2 plugins in the given folders (blocking, ~2.5 s for 500).

    Call from a worker thread (``asyncio.to_thread``), never on the loop.

    Args:
        lv2_path: folders to scan; default :func:`default_lv2_path`.
        uris: read only these plugins (fast: the manifests alone are cheap);
            default every plugin.

    Returns:
        Every readable plugin asked for, sorted by URI, audio effects or not.

    Raises:
        LilvUnavailable: liblilv-0 is not installed.
    """
    folders = list(lv2_path) if lv2_path is not None else default_lv2_path()
    scanner = _Scanner(library(), folders)
    try:
        plugins = list(scanner.plugins(uris))
    finally:
        scanner.close()
    plugins.sort(key=lambda p: p.uri)
    logger.debug("scanned %d LV2 plugins in %s", len(plugins), folders)
    return plugins


def load_plugins(cache: Path | None = None, lv2_path: Sequence[str] | None = None) -> InstalledPlugins:
    """Every installed plugin, from the cache file when it is current, else scanned in a child.

    The cache is reused while the LV2 folders' :func:`fingerprint` is
    unchanged; an unreadable or stale cache is silently rebuilt, and a cache
    that cannot be written only costs a log line. The scan itself runs in a
    child process (:func:`scan_in_child`), so neither liblilv nor the LV2
    world it reads ever lives in the caller's process. Blocking: call from a
    worker.

    Args:
        cache: the JSON file to read and (atomically) rewrite; None scans
            every time.
        lv2_path: folders to scan; default :func:`default_lv2_path`.

    Raises:
        LilvUnavailable: a scan was needed and liblilv-0 is not installed.
        ScanError: a scan was needed and its child failed (crashed, hung).
    """
    folders = list(lv2_path) if lv2_path is not None else default_lv2_path()
    stamp = fingerprint(folders)
    if cache is not None:
        try:
            return InstalledPlugins.from_cache(cache.read_text(encoding="utf-8"), stamp)
        except (OSError, ValueError):
            pass
    text = scan_in_child(folders, stamp)
    try:
        installed = InstalledPlugins.from_cache(text, stamp)
    except ValueError as exc:
        raise ScanError(f"the LV2 scan gave no usable result ({exc})") from exc
    if cache is not None:
        try:
            write_atomic(cache, text)
        except OSError as exc:
            logger.warning("cannot write the LV2 scan cache %s: %s", cache, exc)
    return installed


def scan_in_child(folders: Sequence[str], stamp: str, timeout: float = SCAN_TIMEOUT) -> str:
    """Scan ``folders`` in a child process (``python -m appliance.plugins.lilv``); the cache file's text.

    What the child says on stderr (lilv's complaints about a broken bundle,
    a plugin skipped) goes to this process's log. Blocking: call from a worker.

    Raises:
        LilvUnavailable: the child could not load liblilv-0.
        ScanError: the child crashed, failed or took longer than ``timeout``.
    """
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds the appliance package
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "appliance.plugins.lilv", stamp, *folders]
    try:
        done = subprocess.run(argv, capture_output=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ScanError(f"the LV2 scan took longer than {timeout:.0f} s") from exc
    except OSError as exc:
        raise ScanError(f"cannot start the LV2 scan: {exc}") from exc
    said = done.stderr.decode("utf-8", "replace").splitlines()
    if done.returncode == _NO_LILV_EXIT:
        raise LilvUnavailable(said[-1] if said else "liblilv-0 cannot be loaded")
    for line in [line for line in said if line.strip()][:_STDERR_LINES_LOGGED]:
        logger.warning("LV2 scan: %s", line)
    if done.returncode != 0:
        raise ScanError(f"the LV2 scan {_how_it_ended(done.returncode)}")
    return done.stdout.decode("utf-8")


def _how_it_ended(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


def _main(argv: Sequence[str]) -> int:
    """The scan's child: ``python -m appliance.plugins.lilv STAMP FOLDER...`` prints the cache file's text."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    stamp, folders = argv[0], list(argv[1:])
    try:
        plugins = scan_plugins(folders)
    except LilvUnavailable as exc:
        print(exc, file=sys.stderr)
        return _NO_LILV_EXIT
    sys.stdout.write(InstalledPlugins.of(plugins).to_cache(stamp))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
