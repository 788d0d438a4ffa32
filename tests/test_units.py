"""The systemd units the SD image installs: valid for systemd, and the box's one hardened.

What an owner would notice if these broke: a box that does not start on
boot (systemd refuses a unit it cannot parse), or a unit whose sandbox got
quietly looser. The paths under /opt/appliance are pointed at this checkout,
so that systemd-analyze can check the commands exist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appliance.engine.faders import FADE_STEPS, FADE_TIME, fade_step, fade_time

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted([*(ROOT / "systemd").glob("*.service"), *(ROOT / "systemd").glob("*.path")])

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)


def _here(unit: Path, folder: Path) -> Path:
    copy = folder / unit.name
    copy.write_text(unit.read_text().replace("/opt/appliance", str(ROOT)))
    return copy


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    copies = [_here(u, tmp_path) for u in UNITS]
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit.name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert copies
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), (
        checked.stdout + checked.stderr
    )


@needs_systemd_analyze
def test_the_box_unit_stays_hardened(tmp_path: Path) -> None:
    """`systemd-analyze security` scores the box's unit 3.3 (OK); more than 4.0 means a looser sandbox."""
    checked = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(_here(ROOT / "systemd" / "appliance.service", tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for appliance\.service: ([0-9.]+)", checked.stdout)
    assert found, checked.stdout + checked.stderr
    assert float(found.group(1)) <= 4.0, checked.stdout


def test_the_audio_limits_give_the_audio_group_realtime() -> None:
    lines = [
        line.split()
        for line in (ROOT / "systemd" / "99-appliance-audio.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all(len(fields) == 4 and fields[0] == "@audio" for fields in lines)
    assert {fields[2]: fields[3] for fields in lines} == {"rtprio": "95", "memlock": "unlimited", "nice": "-10"}


def test_the_box_waits_for_jack() -> None:
    unit = (ROOT / "systemd" / "appliance.service").read_text()
    assert re.search(r"^After=.*appliance-jack\.service", unit, re.M)
    assert re.search(r"^Wants=.*appliance-jack\.service", unit, re.M)


def test_a_fade_never_steps_faster_than_the_period() -> None:
    """A plugin reads its controls once a period: at 1,024 frames (21 ms) a fade of 8 steps in
    20 ms landed in one period and was heard as a click (test_switching, jalv). The steps are
    a period apart at least; at 128 frames the fade keeps about its 20 ms."""
    assert fade_step(48000, 1024) == pytest.approx(1024 / 48000)
    assert fade_time(48000, 1024) == pytest.approx(8 * 1024 / 48000)
    assert fade_step(48000, 128) == pytest.approx(128 / 48000)
    assert fade_step(48000, 64) == pytest.approx(FADE_TIME / FADE_STEPS)
    assert fade_step(0, 0) == pytest.approx(FADE_TIME / FADE_STEPS)  # before JACK has said
