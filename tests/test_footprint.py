"""What the box's own process never holds: numpy, liblilv and the LV2 world, tools it has no use for.

The box's memory and start time are measured in ``hil/bench_footprint.py``;
these tests check only what is loaded, never how much or how fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.plugins import lilv
from tests.boxproc import BoxProcess, virtual_config

pytestmark = [
    pytest.mark.skipif(not lilv.is_available(), reason="liblilv-0 is not installed"),
    pytest.mark.timeout(120),
]

ROOT = Path(__file__).resolve().parent.parent
CATALOG_FILE = ROOT / "config" / "plugins.yaml"
#: Modules the running box has no use for (numpy: the rig's; segno: ``appliance pair``'s).
UNWANTED = ("numpy", "segno")

#: The box's start path in a fresh interpreter: every module it imports (both engines, the
#: dry-path keeper's), then the catalog through the cache; then what it holds.
START_PATH = """
import json, sys
from pathlib import Path
import appliance.__main__, appliance.app
import appliance.engine.jalv.engine, appliance.engine.jalv.chains, appliance.engine.jack.drypath
import appliance.engine.carla.engine
from appliance.plugins.catalog import Catalog
catalog = Catalog.load(Path(sys.argv[1]), cache=Path(sys.argv[2]))
assert catalog.lookup("reverb") and catalog.lookup("http://plugin.org.uk/swh-plugins/plate")
print(json.dumps({"modules": sorted(sys.modules), "maps": Path("/proc/self/maps").read_text()}))
"""


def _start_path(cache: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", START_PATH, str(CATALOG_FILE), str(cache)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return found


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in names]


@pytest.mark.parametrize("cached", [False, True], ids=["first-start", "cached"])
def test_the_start_path_imports_no_numpy_and_never_maps_liblilv(cached: bool, tmp_path: Path) -> None:
    """Imports and catalog of a start, first or cached: no numpy, no segno, and liblilv only in the scan's child."""
    cache = tmp_path / "lv2-scan.json"
    if cached:
        _start_path(cache)
        assert cache.exists()
    found = _start_path(cache)
    assert _loaded(found["modules"], UNWANTED) == []
    assert "liblilv" not in found["maps"]
    assert cache.exists()


def _maps(box: BoxProcess) -> str:
    assert box.proc is not None
    return Path(f"/proc/{box.proc.pid}/maps").read_text()


def test_the_running_box_maps_neither_numpy_nor_liblilv(tmp_path: Path) -> None:
    """The virtual box (jalv), after a first start and after a cached one: no numpy, no liblilv in its process."""
    config = virtual_config(tmp_path, engine="jalv", scanned=False)
    for start in ("first start", "cached start"):
        box = BoxProcess(config, env={"APPLIANCE_NO_CARLA": "1"})
        box.start()
        try:
            maps = _maps(box)
        finally:
            box.stop()
        assert "/numpy/" not in maps, start
        assert "liblilv" not in maps, start
        assert (tmp_path / "data" / "lv2-scan.json").exists(), start
