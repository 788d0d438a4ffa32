"""The plugin catalog and the LV2 scan, on the plugins really installed here."""

from __future__ import annotations

import builtins
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.core.controls import PluginType
from appliance.core.errors import ConfigError, InvalidMessage, PluginNotAllowed
from appliance.plugins import lilv
from appliance.plugins.catalog import Catalog, parse

pytestmark = pytest.mark.skipif(not lilv.is_available(), reason="liblilv-0 is not installed")

CATALOG_FILE = Path(__file__).resolve().parent.parent / "config" / "plugins.yaml"
KEYS = [
    "gain",
    "reverb",
    "compressor",
    "eq",
    "delay",
    "overdrive",
    "amp",
    "gate",
    "tuner",
    "chorus",
    "amp_model",
    "cabinet",
]
NAM = "http://github.com/mikeoliphant/neural-amp-modeler-lv2"
AMP = "http://lv2plug.in/plugins/eg-amp"
OTHER_PLUGIN = "http://plugin.org.uk/swh-plugins/plate"  # installed, not in the catalog
INSTRUMENT = "http://lv2plug.in/plugins/eg-sampler"  # installed, no audio input

# The published examples' presets (seed document, vanilla JS controller page).
EXAMPLE_PRESETS: dict[str, list[dict[str, float]]] = {
    "reverb": [
        {"wet_dry": 0.5, "room_size": 0.7, "damping": 0.3},
        {"wet_dry": 0.6, "room_size": 0.9, "damping": 0.2},
        {"wet_dry": 0.4, "room_size": 0.5, "damping": 0.4},
        # The Vue example's reverb presets.
        {"wet_dry": 0.4, "room_size": 0.8, "damping": 0.2, "high_freq": 12000.0},
        {"wet_dry": 0.6, "room_size": 0.6, "damping": 0.4, "low_freq": 150.0},
    ],
    "compressor": [
        {"threshold": -20, "ratio": 4, "attack": 0.003, "release": 0.1},
        {"threshold": -15, "ratio": 2, "attack": 0.01, "release": 0.2},
        {"threshold": -25, "ratio": 8, "attack": 0.001, "release": 0.05},
    ],
    "eq": [
        {"low_freq": 200, "low_gain": 0, "mid_freq": 1000, "mid_gain": 0, "high_freq": 8000, "high_gain": 0},
        {"low_freq": 200, "low_gain": 3, "mid_freq": 1000, "mid_gain": -2, "high_freq": 8000, "high_gain": 3},
        {"low_freq": 200, "low_gain": 2, "mid_freq": 1000, "mid_gain": 1, "high_freq": 8000, "high_gain": -1},
    ],
}


@pytest.fixture(scope="module")
def scanned() -> dict[str, lilv.ScannedPlugin]:
    return {p.uri: p for p in lilv.scan_plugins()}


@pytest.fixture(scope="module")
def catalog(scanned: dict[str, lilv.ScannedPlugin]) -> Catalog:
    specs = parse(yaml.safe_load(CATALOG_FILE.read_text()))
    return Catalog.build(specs, scanned.values())


def _entry(catalog: Catalog, key: str) -> PluginType:
    plugin_type = catalog.lookup(key)
    assert plugin_type is not None, f"{key} missing from the catalog"
    return plugin_type


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "plugins.yaml"
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def _shipped() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CATALOG_FILE.read_text())
    return document


# -- the scan ------------------------------------------------------------------


def test_scan_reads_eg_amp_gain_range_default_and_unit(scanned: dict[str, lilv.ScannedPlugin]) -> None:
    """eg-amp scans as one dB float control, -90..24, default 0, mono in and out."""
    amp = scanned["http://lv2plug.in/plugins/eg-amp"]
    assert amp.name == "Simple Amplifier"
    assert (amp.audio_inputs, amp.audio_outputs) == (("in",), ("out",))
    (gain,) = amp.controls
    assert (gain.symbol, gain.minimum, gain.maximum, gain.default) == ("gain", -90.0, 24.0, 0.0)
    assert (gain.unit, gain.kind) == ("dB", "float")


def test_scan_kinds_labels_log_and_enable_designation(scanned: dict[str, lilv.ScannedPlugin]) -> None:
    """Toggles, enums with scale points, log ports and the lv2:enabled port come from the Turtle."""
    amp = scanned["http://guitarix.sourceforge.net/plugins/gx_amp#GUITARIX"]
    model = amp.control("model")
    assert model is not None and model.kind == "enum" and (0.0, "12ax7") in model.labels
    assert amp.enable_symbol == "BYPASS"
    eq = scanned["urn:ardour:a-eq"]
    freq = eq.control("freql")
    assert freq is not None and freq.logarithmic and freq.unit == "Hz"
    enable = eq.control("enable")
    assert enable is not None and enable.kind == "toggle" and enable.is_enable


def test_scan_reads_the_files_a_plugin_loads_and_its_tempo_control(
    scanned: dict[str, lilv.ScannedPlugin],
) -> None:
    """The cabinet-IR loaders' ``patch:writable`` path parameters (x42's convolver, LSP's two
    files of the stereo loader), and Guitarix's delay's control designated ``time:beatsPerMinute``.
    Broken, the phone could never offer a player's IR to the convolver."""
    convo = scanned["http://gareus.org/oss/lv2/convoLV2#Mono"]
    assert convo.files == (lilv.ScannedFile("http://gareus.org/oss/lv2/convoLV2#impulse", "impulse"),)
    stereo = scanned["http://lsp-plug.in/plugins/lv2/impulse_responses_stereo"]
    assert [(f.uri.rsplit("#", 1)[1], f.label) for f in stereo.files] == [
        ("ifn0", "Impulse file 1"),
        ("ifn1", "Impulse file 2"),
    ]
    assert scanned["http://lv2plug.in/plugins/eg-amp"].files == ()
    delay = scanned["http://guitarix.sourceforge.net/plugins/gx_digital_delay_#_digital_delay_"]
    assert delay.tempo_symbol == "HOSTBPM" and delay.enable_symbol == "BYPASS"


def test_scan_reads_mods_file_types_of_a_file_parameter(tmp_path: Path) -> None:
    """An amp-model loader that says which files it takes (``mod:fileTypes "nam,aidadspmodel"``,
    as MOD's plugins do) has them listed; a path parameter of another range is no file."""
    folder = tmp_path / "lv2"
    shutil.copytree("/usr/lib/lv2/eg-amp.lv2", folder / "eg-amp.lv2")
    with open(folder / "eg-amp.lv2" / "amp.ttl", "a") as ttl:
        ttl.write(
            "\n<urn:test:model> a <http://lv2plug.in/ns/lv2core#Parameter> ;\n"
            '  <http://www.w3.org/2000/01/rdf-schema#label> "Model" ;\n'
            "  <http://www.w3.org/2000/01/rdf-schema#range> <http://lv2plug.in/ns/ext/atom#Path> ;\n"
            '  <http://moddevices.com/ns/mod#fileTypes> "nam, aidadspmodel" .\n'
            "<urn:test:level> <http://www.w3.org/2000/01/rdf-schema#range> <http://lv2plug.in/ns/ext/atom#Float> .\n"
            f"<{AMP}> <http://lv2plug.in/ns/ext/patch#writable> <urn:test:model>, <urn:test:level> .\n"
        )
    (amp,) = lilv.scan_plugins([str(folder)])
    assert amp.files == (lilv.ScannedFile("urn:test:model", "Model", ("nam", "aidadspmodel")),)


def test_scan_keeps_side_chain_out_of_audio_inputs(scanned: dict[str, lilv.ScannedPlugin]) -> None:
    """a-comp's lv2:isSideChain input is listed apart, not as a chain input."""
    comp = scanned["urn:ardour:a-comp"]
    assert comp.audio_inputs == ("lv2_audio_in_1",)
    assert comp.sidechain_inputs == ("lv2_sidechain_in",)
    assert comp.monitors == ("gr", "inlevel", "outlevel")


def test_scan_flags_latency_and_non_effects(scanned: dict[str, lilv.ScannedPlugin]) -> None:
    """Latency-reporting plugins are flagged; an instrument is not an audio effect."""
    assert scanned["http://lsp-plug.in/plugins/lv2/impulse_reverb_stereo"].latency
    assert not scanned["http://lv2plug.in/plugins/eg-amp"].latency
    assert not scanned[INSTRUMENT].is_audio_effect


def test_scan_cache_is_reused_then_invalidated_by_a_bundle_change(tmp_path: Path) -> None:
    """The JSON cache answers while the LV2 folder is unchanged and is rebuilt after a change."""
    folder = tmp_path / "lv2"
    shutil.copytree("/usr/lib/lv2/eg-amp.lv2", folder / "eg-amp.lv2")
    cache = tmp_path / "cache" / "scan.json"
    first = lilv.load_plugins(cache, [str(folder)])
    assert [p.uri for p in first] == [AMP]
    data = json.loads(cache.read_text())
    data["plugins"][0][1] = "From the cache"
    cache.write_text(json.dumps(data))
    again = lilv.load_plugins(cache, [str(folder)]).get(AMP)
    assert again is not None and again.name == "From the cache"
    ttl = folder / "eg-amp.lv2" / "amp.ttl"
    stat = ttl.stat()
    os.utime(ttl, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    rescanned = lilv.load_plugins(cache, [str(folder)]).get(AMP)
    assert rescanned is not None and rescanned.name == "Simple Amplifier"


def test_cached_scan_gives_back_what_the_scan_found(
    scanned: dict[str, lilv.ScannedPlugin], tmp_path: Path
) -> None:
    """Every plugin read back from the cache (scanned in a child) equals this process's own scan."""
    cache = tmp_path / "scan.json"
    lilv.load_plugins(cache)
    installed = lilv.load_plugins(cache)  # from the file this time
    assert {p.uri: p for p in installed} == scanned
    assert installed.effects() == {uri: p.name for uri, p in sorted(scanned.items()) if p.is_audio_effect}


def test_catalog_from_the_cache_equals_the_catalog_from_a_scan(catalog: Catalog, tmp_path: Path) -> None:
    """Catalog.load through the cache gives the same entries, installed list and raw types."""
    cache = tmp_path / "scan.json"
    Catalog.load(CATALOG_FILE, cache=cache)
    cached = Catalog.load(CATALOG_FILE, cache=cache)
    assert cached.entries == catalog.entries
    assert cached.installed() == catalog.installed()
    for uri in (OTHER_PLUGIN, "urn:ardour:a-reverb", "http://lsp-plug.in/plugins/lv2/mb_dyna_processor_lr"):
        assert cached.lookup(uri) == catalog.lookup(uri) is not None
    assert cached.lookup(INSTRUMENT) is None


def test_a_damaged_cache_entry_is_logged_and_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One plugin's data damaged in a current cache: that plugin is not installed, the log says why."""
    folder = tmp_path / "lv2"
    shutil.copytree("/usr/lib/lv2/eg-amp.lv2", folder / "eg-amp.lv2")
    cache = tmp_path / "scan.json"
    lilv.load_plugins(cache, [str(folder)])
    data = json.loads(cache.read_text())
    data["plugins"][0][3] = data["plugins"][0][3][:-12] + "AAAAAAAAAAAA"
    cache.write_text(json.dumps(data))
    with caplog.at_level(logging.ERROR, logger="appliance.plugins.lilv"):
        assert lilv.load_plugins(cache, [str(folder)]).get(AMP) is None
    assert "damaged" in caplog.text


def test_a_scan_that_crashes_is_an_empty_catalog_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The scan's child killed by a signal is a logged error and an empty catalog."""
    real_run = subprocess.run

    def crashing(argv: list[str], **kwargs: Any) -> Any:
        return real_run(
            [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"], **kwargs
        )

    monkeypatch.setattr(subprocess, "run", crashing)
    with caplog.at_level(logging.ERROR, logger="appliance.plugins.catalog"):
        catalog = Catalog.load(CATALOG_FILE, cache=tmp_path / "scan.json")
    assert catalog.entries == {} and catalog.installed() == []
    assert "SIGSEGV" in caplog.text
    assert not (tmp_path / "scan.json").exists()


# -- the curated entries -------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_entry_loads_with_its_plugins_real_controls(
    key: str, catalog: Catalog, scanned: dict[str, lilv.ScannedPlugin]
) -> None:
    """Each curated entry is installed and carries its plugin's real ports and every alias."""
    spec = _shipped()["plugins"][key]
    if spec.get("optional") and spec["uri"] not in scanned:
        pytest.skip(f"{key}: its plugin {spec['uri']} is not installed here (an optional entry)")
    plugin_type = _entry(catalog, key)
    plugin = scanned[spec["uri"]]
    assert plugin_type.key == key and plugin_type.uri == spec["uri"]
    assert [c.symbol for c in plugin_type.controls] == [c.symbol for c in plugin.controls]
    assert plugin_type.audio_inputs and plugin_type.audio_outputs
    for alias in spec.get("aliases", {}):
        assert plugin_type.parameter(alias).id == alias
    for parameter in plugin_type.parameters:
        assert parameter.minimum <= parameter.default <= parameter.maximum


def test_gain_entry_is_eg_amp_in_db(catalog: Catalog) -> None:
    """The gain entry's `gain` is -90..24 dB, default 0, and has no enable port."""
    gain = _entry(catalog, "gain").parameter("gain")
    assert (gain.minimum, gain.maximum, gain.default, gain.unit) == (-90.0, 24.0, 0.0, "dB")
    assert gain.control.labels == ()  # scale points kept for enums and integers only
    assert _entry(catalog, "gain").enable_symbol is None


def test_compressor_attack_and_release_in_seconds_map_to_ms(catalog: Catalog) -> None:
    """attack/release come in seconds and reach a-comp's ms ports multiplied by 1000."""
    comp = _entry(catalog, "compressor")
    attack = comp.parameter("attack")
    assert (attack.symbol, attack.control.unit, attack.unit) == ("att", "ms", "s")
    assert attack.to_engine(0.003) == pytest.approx(3.0)
    assert attack.from_engine(10.0) == pytest.approx(0.01)
    assert (attack.minimum, attack.maximum) == (0.0001, 0.1)
    release = comp.parameter("release")
    assert release.symbol == "rel" and release.to_engine(0.05) == pytest.approx(50.0)


def test_reverb_aliases_scale_zero_to_one_onto_plugin_range(catalog: Catalog) -> None:
    """wet_dry, room_size and damping (turned around) map 0..1 onto the room's real ranges."""
    reverb = _entry(catalog, "reverb")
    wet = reverb.parameter("wet_dry")
    assert (wet.symbol, wet.minimum, wet.maximum) == ("late_level", 0.0, 1.0)
    assert wet.to_engine(0.6) == pytest.approx(60.0)
    size = reverb.parameter("room_size")
    assert (size.symbol, size.to_engine(0.0), size.to_engine(1.0)) == ("size", 8.0, 32.0)
    damping = reverb.parameter("damping")
    assert (damping.symbol, damping.minimum, damping.maximum) == ("late_damp", 0.0, 1.0)
    assert damping.to_engine(1.0) == pytest.approx(1000.0) and damping.to_engine(0.0) == pytest.approx(
        16000.0
    )
    assert reverb.canonical("late_level").id == "wet_dry"


@pytest.mark.parametrize(
    ("key", "preset"), [(k, p) for k, presets in EXAMPLE_PRESETS.items() for p in presets]
)
def test_example_presets_fit_inside_the_real_ranges(
    key: str, preset: dict[str, float], catalog: Catalog
) -> None:
    """Every value of the examples' presets is a known id and lands unclamped."""
    plugin_type = _entry(catalog, key)
    for parameter_id, value in preset.items():
        assert plugin_type.parameter(parameter_id).conform(value) == pytest.approx(value)


def test_enable_ports_are_hidden_and_never_inverted_here(catalog: Catalog) -> None:
    """ACE `enable`, Guitarix `BYPASS` (1 = active) and abGate `switch` drive bypass."""
    expected = {"compressor": "enable", "overdrive": "BYPASS", "gate": "switch", "reverb": None}
    for key, symbol in expected.items():
        plugin_type = _entry(catalog, key)
        assert plugin_type.enable_symbol == symbol and not plugin_type.enable_inverted
        assert all(p.symbol != symbol for p in plugin_type.parameters)


def _keys(installed: Iterable[str]) -> list[str]:
    """The shipped catalog's keys in file order: ``amp_model`` only where NAM is installed."""
    return [key for key in KEYS if key != "amp_model" or NAM in set(installed)]


def test_describe_lists_curated_entries_with_canonical_ids(
    catalog: Catalog, scanned: dict[str, lilv.ScannedPlugin]
) -> None:
    """describe() gives one JSON-ready dict per entry, in file order, aliases as ids."""
    described = catalog.describe()
    assert [d["key"] for d in described] == _keys(scanned)
    json.dumps(described)
    reverb = described[1]
    ids = [p["id"] for p in reverb["parameters"]]  # type: ignore[index]
    assert "wet_dry" in ids and "dry_wet" not in ids


def test_installed_lists_other_effects_only(catalog: Catalog) -> None:
    """installed() names other audio effects by uri and name, not entries or instruments."""
    installed = {item["uri"]: item["name"] for item in catalog.installed()}
    assert installed[OTHER_PLUGIN] == "Plate reverb"
    assert "urn:ardour:a-comp" not in installed
    assert INSTRUMENT not in installed


# -- resolve -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reverb", "Reverb", "REVERB"])
def test_resolve_catalog_key_any_case(name: str, catalog: Catalog) -> None:
    """The name field matches a catalog key whatever its case."""
    assert catalog.resolve(name, None).key == "reverb"


@pytest.mark.parametrize(
    "path", ["/path/to/reverb.vst3", "reverb", "C:\\Plugins\\Reverb.dll", "../lib/REVERB.lv2/reverb.so"]
)
def test_resolve_plugin_path_stem(path: str, catalog: Catalog) -> None:
    """plugin_path's stem (POSIX or Windows separators) picks the entry when name does not."""
    assert catalog.resolve("My favourite", path).key == "reverb"


def test_resolve_name_wins_over_plugin_path(catalog: Catalog) -> None:
    """A name that is a key is used even when plugin_path names another entry."""
    assert catalog.resolve("Compressor", "/path/to/reverb.vst3").key == "compressor"


@pytest.mark.parametrize("field", ["name", "plugin_path"])
def test_resolve_uri_of_installed_non_catalog_plugin(field: str, catalog: Catalog) -> None:
    """An installed plugin's URI in either field gives its raw type: key = URI, own symbols."""
    args = (OTHER_PLUGIN, None) if field == "name" else ("Plate", OTHER_PLUGIN)
    plugin_type = catalog.resolve(*args)
    assert (plugin_type.key, plugin_type.uri, plugin_type.name) == (
        OTHER_PLUGIN,
        OTHER_PLUGIN,
        "Plate reverb",
    )
    assert plugin_type.aliases == ()
    assert {p.id for p in plugin_type.parameters} == {"time", "damping", "wet"}
    assert catalog.lookup(OTHER_PLUGIN) == plugin_type


def test_resolve_scanned_plugin_takes_enable_designation(catalog: Catalog) -> None:
    """A plugin added by URI gets its lv2:enabled port as enable port."""
    assert catalog.resolve("urn:ardour:a-reverb", None).enable_symbol == "enable"


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("../../etc/passwd", "../../etc/passwd"),
        ("/etc/passwd", "/etc/passwd"),
        ("reverb.so", "/opt/strange/place/thing.so"),
        ("Reverb2", "/path/to/reverb-evil.vst3"),
        ("", ""),
        ("..", "/path/to/.."),
        (INSTRUMENT, INSTRUMENT),
        ("http://example.org/not-installed", None),
        ("r" * 5000, "/path/to/" + "r" * 5000),
    ],
)
def test_resolve_rejects_anything_else(name: str, path: str | None, catalog: Catalog) -> None:
    """Paths, unknown stems, instruments and unknown URIs are PLUGIN_NOT_ALLOWED."""
    with pytest.raises(PluginNotAllowed) as caught:
        catalog.resolve(name, path)
    assert "reverb" in str(caught.value) and len(str(caught.value)) < 400
    assert caught.value.code == "PLUGIN_NOT_ALLOWED"


@pytest.mark.parametrize(
    ("name", "path"), [(5, None), (None, ["reverb"]), (True, "reverb"), ("reverb", {"a": 1}), (None, None)]
)
def test_resolve_rejects_non_strings(name: object, path: object, catalog: Catalog) -> None:
    """Non-string fields (or neither field) are INVALID_MESSAGE."""
    with pytest.raises(InvalidMessage):
        catalog.resolve(name, path)


def test_resolve_never_touches_the_filesystem(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve() works with open/stat disabled: client strings are only compared."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"filesystem access: {args}")

    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(os, "stat", forbidden)
    monkeypatch.setattr(os, "lstat", forbidden)
    assert catalog.resolve("x", "/path/to/reverb.vst3").key == "reverb"
    with pytest.raises(PluginNotAllowed):
        catalog.resolve("/etc/passwd", "/etc/passwd")


# -- the file ------------------------------------------------------------------


def test_load_reads_the_shipped_file_without_full_scan(scanned: dict[str, lilv.ScannedPlugin]) -> None:
    """Catalog.load(scan=False) builds every shipped entry from its plugin's data only."""
    catalog = Catalog.load(CATALOG_FILE, scan=False)
    assert list(catalog.entries) == _keys(scanned)
    assert catalog.lookup(OTHER_PLUGIN) is None


def test_neural_amp_modeler_is_the_amp_model_where_installed_and_no_warning_where_not(
    tmp_path: Path, scanned: dict[str, lilv.ScannedPlugin], caplog: pytest.LogCaptureFixture
) -> None:
    """NAM is not in Debian. Where it is installed, the catalog's ``amp_model`` is it, loading
    its ``.nam`` models from the player's ``models/``; where it is not, the box says so in
    its log without a warning (a player cannot fix it, and every start would warn).
    The plugin here is eg-amp's bundle under NAM's URI with NAM's model parameter, as NAM's
    own TTL declares it (``mod:fileTypes "nam,nammodel"``)."""
    specs = parse(yaml.safe_load(CATALOG_FILE.read_text()))
    without = [p for p in scanned.values() if p.uri != NAM]  # as on a machine without it
    with caplog.at_level(logging.INFO, logger="appliance.plugins.catalog"):
        assert Catalog.build(specs, without).lookup("amp_model") is None
    said = [r for r in caplog.records if "amp_model" in r.getMessage()]
    assert said and all(r.levelno < logging.WARNING for r in said), [r.getMessage() for r in said]

    bundle = tmp_path / "lv2" / "nam.lv2"
    shutil.copytree("/usr/lib/lv2/eg-amp.lv2", bundle)
    for ttl in bundle.glob("*.ttl"):
        ttl.write_text(ttl.read_text().replace(AMP, NAM))
    with open(bundle / "amp.ttl", "a") as ttl:
        ttl.write(
            f"\n<{NAM}#model> a <http://lv2plug.in/ns/lv2core#Parameter> ;\n"
            '  <http://www.w3.org/2000/01/rdf-schema#label> "Neural Model" ;\n'
            "  <http://www.w3.org/2000/01/rdf-schema#range> <http://lv2plug.in/ns/ext/atom#Path> ;\n"
            '  <http://moddevices.com/ns/mod#fileTypes> "nam,nammodel" .\n'
            f"<{NAM}> <http://lv2plug.in/ns/ext/patch#writable> <{NAM}#model> .\n"
        )
    entry = _entry(Catalog.build(specs, lilv.scan_plugins([str(bundle.parent)])), "amp_model")
    assert entry.name == "Amp model (NAM)"
    (model,) = entry.files
    assert (model.id, model.label, model.folders) == ("model", "Neural Model", ("models",))


def test_missing_plugin_is_logged_and_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An entry whose plugin is not installed is a warning, not an error."""
    path = _write(
        tmp_path,
        {
            "plugins": {
                "ghost": {"uri": "http://example.org/ghost"},
                "gain": {"uri": "http://lv2plug.in/plugins/eg-amp"},
            }
        },
    )
    with caplog.at_level(logging.WARNING, logger="appliance.plugins.catalog"):
        catalog = Catalog.load(path, scan=False)
    assert list(catalog.entries) == ["gain"]
    assert "ghost" in caplog.text


def _broken(**changes: Any) -> dict[str, Any]:
    document = _shipped()
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = document
        for part in parents:
            node = node[part]
        node[last] = value
    return document


@pytest.mark.parametrize(
    ("document", "key"),
    [
        (_broken(plugins__reverb__colour="red"), "plugins.reverb.colour"),
        (
            _broken(plugins__reverb__aliases__damping={"symbol": "nope"}),
            "plugins.reverb.aliases.damping.symbol",
        ),
        (
            _broken(plugins__compressor__aliases__attack={"symbol": "att", "scale": 0}),
            "plugins.compressor.aliases.attack.scale",
        ),
        (
            _broken(plugins__eq__aliases__low_gain={"symbol": "gl", "offset": "x"}),
            "plugins.eq.aliases.low_gain.offset",
        ),
        (
            _broken(plugins__eq__aliases__low_gain={"symbol": "gl", "bias": 1}),
            "plugins.eq.aliases.low_gain.bias",
        ),
        (
            _broken(plugins__reverb__aliases__lfo={"symbol": "decay", "scale": 0}),
            "plugins.reverb.aliases.lfo.scale",
        ),
        (_broken(plugins__delay__aliases__on={"symbol": "enable"}), "plugins.delay.aliases.on.symbol"),
        (_broken(plugins__overdrive__enable={"symbol": "BYPAS"}), "plugins.overdrive.enable.symbol"),
        (
            _broken(plugins__overdrive__enable={"symbol": "BYPASS", "inverted": "yes"}),
            "plugins.overdrive.enable.inverted",
        ),
        (_broken(plugins__gate__uri=42), "plugins.gate.uri"),
        (_broken(plugins__Gate={"uri": "urn:x"}), "plugins.Gate"),
        (_broken(plugins__tuner=["uri"]), "plugins.tuner"),
        (_broken(plugin={}), "plugin"),
    ],
)
def test_broken_file_names_the_failing_key(document: dict[str, Any], key: str, tmp_path: Path) -> None:
    """A bad catalog raises ConfigError whose key is the dotted path of the fault."""
    with pytest.raises(ConfigError) as caught:
        Catalog.load(_write(tmp_path, document), scan=False)
    assert caught.value.key == key


def test_unparseable_yaml_names_the_file(tmp_path: Path) -> None:
    """YAML that does not parse is a ConfigError naming the file."""
    path = _write(tmp_path, "plugins: {gain: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        Catalog.load(path, scan=False)
    assert caught.value.key == str(path)


def test_alias_shorthand_and_explicit_no_enable(tmp_path: Path) -> None:
    """`alias: symbol` is shorthand, and `enable: false` turns the enable port into a parameter."""
    path = _write(
        tmp_path,
        {"plugins": {"comp": {"uri": "urn:ardour:a-comp", "aliases": {"threshold": "thr"}, "enable": False}}},
    )
    comp = Catalog.load(path, scan=False).entries["comp"]
    assert comp.parameter("threshold").symbol == "thr"
    assert comp.enable_symbol is None and comp.parameter("enable").control.kind == "toggle"


def test_sample_rate_ranges_are_in_hz(catalog: Catalog) -> None:
    """An lv2:sampleRate control (swh lowpass cutoff) gets its range in Hz, so 1 kHz is not clamped."""
    lowpass = catalog.lookup("http://plugin.org.uk/swh-plugins/lowpass_iir")
    if lowpass is None:
        pytest.skip("swh-lv2's lowpass_iir is not installed")
    cutoff = lowpass.parameter("cutoff")
    assert cutoff.maximum > 10000 and cutoff.conform(1000.0) == 1000.0
