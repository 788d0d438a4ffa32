"""Finding a Carla installation, and hiding it: no Carla needed."""

from __future__ import annotations

from pathlib import Path

from appliance.engine.carla.install import (
    HELPER_PACKAGE,
    HIDE_CARLA_ENV,
    HOST_MODULE,
    STANDALONE_LIBRARY,
    find_carla,
    unavailable,
)


def _fake_install(prefix: Path, *files: str) -> None:
    for name in files:
        path = prefix / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_unavailable_names_the_missing_library(tmp_path: Path) -> None:
    """An empty prefix: the message names libcarla_standalone2.so and where it looked."""
    why = unavailable(tmp_path, {})
    assert why == f"Carla is not installed: no {STANDALONE_LIBRARY} in {tmp_path / 'lib' / 'carla'}"


def test_unavailable_names_the_missing_host_module(tmp_path: Path) -> None:
    """A headless build (library, no Python modules): names carla_backend.py and says what to copy."""
    _fake_install(tmp_path, f"lib/carla/{STANDALONE_LIBRARY}")
    why = unavailable(tmp_path, {})
    assert why is not None
    assert why.startswith(f"no {HOST_MODULE} in {tmp_path / 'share' / 'carla'}")
    assert "carla_utils.py and common/" in why


def test_unavailable_names_the_missing_helper_package(tmp_path: Path) -> None:
    """carla_backend.py without common/: names common/__init__.py."""
    _fake_install(tmp_path, f"lib/carla/{STANDALONE_LIBRARY}", f"share/carla/{HOST_MODULE}")
    why = unavailable(tmp_path, {})
    assert why is not None and why.startswith(f"no {HELPER_PACKAGE} in {tmp_path / 'share' / 'carla'}")


def test_complete_prefix_is_usable(tmp_path: Path) -> None:
    """All three files present under the prefix: usable, and find_carla points there."""
    _fake_install(
        tmp_path,
        f"lib/carla/{STANDALONE_LIBRARY}",
        f"share/carla/{HOST_MODULE}",
        f"share/carla/{HELPER_PACKAGE}",
    )
    assert unavailable(tmp_path, {}) is None
    paths = find_carla(tmp_path, {})
    assert paths.library == tmp_path / "lib" / "carla" / STANDALONE_LIBRARY
    assert paths.share_dir == tmp_path / "share" / "carla"


def test_the_switch_hides_a_complete_installation(tmp_path: Path) -> None:
    """APPLIANCE_NO_CARLA=1 makes a complete installation look absent, and says why."""
    _fake_install(
        tmp_path,
        f"lib/carla/{STANDALONE_LIBRARY}",
        f"share/carla/{HOST_MODULE}",
        f"share/carla/{HELPER_PACKAGE}",
    )
    assert unavailable(tmp_path, {}) is None
    assert unavailable(tmp_path, {HIDE_CARLA_ENV: "1"}) == f"Carla is hidden by {HIDE_CARLA_ENV}=1"
    assert unavailable(tmp_path, {HIDE_CARLA_ENV: ""}) is None
