"""Configuration: the shipped files load; bad files name the failing key."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from appliance import config
from appliance.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["appliance.yaml", "virtual.yaml"])
def test_shipped_configs_load(name: str) -> None:
    """Both shipped configs are valid and have the examples' track."""
    loaded = config.load(ROOT / "config" / name)
    assert loaded.tracks[0].id == "track_001"
    assert loaded.catalog == ROOT / "config" / "plugins.yaml"


def test_the_virtual_box_has_a_period_per_engine() -> None:
    """``period`` may name a period per engine: a Carla rack keeps the short one, a chain of jalv
    processes gets the longer one it needs to run without dropouts; a plain number serves both."""
    data = {"tracks": [{"id": "t", "inputs": ["a:in"], "outputs": ["a:out"]}]}
    data["engine"] = {"jack": {"dummy": {"period": {"carla": 128, "jalv": 512}}}}
    dummy = config.parse(data, ROOT / "config" / "x.yaml").engine.jack.dummy
    assert dummy is not None and (dummy.period_for("carla"), dummy.period_for("jalv")) == (128, 512)
    data["engine"] = {"jack": {"dummy": {"period": 256}}}
    dummy = config.parse(data, ROOT / "config" / "x.yaml").engine.jack.dummy
    assert dummy is not None and (dummy.period_for("carla"), dummy.period_for("jalv")) == (256, 256)


def test_virtual_config_has_plain_overridable_keys() -> None:
    """The virtual box names its JACK server and track ports as plain keys."""
    data = yaml.safe_load((ROOT / "config" / "virtual.yaml").read_text())
    data["engine"]["jack"]["server"] = "other"
    data["tracks"][0]["inputs"] = ["rig:play_1"]
    loaded = config.parse(data, ROOT / "config" / "virtual.yaml")
    assert loaded.engine.jack.server == "other"
    assert loaded.engine.jack.dummy is not None
    assert loaded.tracks[0].inputs == ("rig:play_1",)


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"server": {"port": "eighty"}}, "server.port"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"colour": "red"}}, "server.colour"),
        ({"server": {"auth": "maybe"}}, "server.auth"),
        ({"server": {"auth": "token"}}, "server.token_file"),
        ({"server": {"rate_limit": {"rate": -1}}}, "server.rate_limit.rate"),
        ({"engine": {"kind": "pd"}}, "engine.kind"),
        ({"midi": "yes"}, "midi"),
        ({"engine": {"jack": {"dummy": {"rate": 0}}}}, "engine.jack.dummy.rate"),
        ({"engine": {"jack": {"dummy": {"period": {"jalv": 0}}}}}, "engine.jack.dummy.period.jalv"),
        ({"engine": {"jack": {"dummy": {"period": {"pd": 256}}}}}, "engine.jack.dummy.period.pd"),
        ({"tracks": []}, "tracks"),
        ({"tracks": [{"id": "t", "inputs": ["nocolon"], "outputs": ["a:b"]}]}, "tracks[0].inputs"),
        ({"tracks": [{"id": "t", "inputs": ["a:b"]}]}, "tracks[0].outputs"),
        ({"demo": [{"plugin": "gain", "values": {"gain": "loud"}}]}, "demo[0].values.gain"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_keys_are_named(patch: dict[str, object], key: str) -> None:
    """Each invalid setting raises ConfigError naming its dotted key."""
    data = {"tracks": [{"id": "track_001", "inputs": ["a:in"], "outputs": ["a:out"]}]}
    data.update(patch)
    with pytest.raises(ConfigError) as raised:
        config.parse(data, ROOT / "config" / "x.yaml")
    assert raised.value.key == key


def test_cli_exits_non_zero_on_bad_config(tmp_path: Path) -> None:
    """`python -m appliance run` with a bad file names the key and exits 2 before audio."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: nope}\ntracks: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "server.port" in result.stderr


def test_cli_names_missing_file(tmp_path: Path) -> None:
    """A config path that does not exist is reported, exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--config", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_each_engine_starts_its_server_at_its_own_period() -> None:
    """The virtual box starts its JACK server at the period named for the engine it runs."""
    from appliance.app import make_engine
    from appliance.engine.jack.server import DummySettings

    data = {"tracks": [{"id": "t", "inputs": ["a:in"], "outputs": ["a:out"]}], "data_dir": "/tmp/x"}
    data["engine"] = {"kind": "jalv", "jack": {"dummy": {"period": {"carla": 128, "jalv": 512}}}}
    engine = make_engine(config.parse(data, ROOT / "config" / "x.yaml"), lambda event: None)
    settings = engine._graph._dummy  # type: ignore[attr-defined]
    assert isinstance(settings, DummySettings) and settings.period == 512
