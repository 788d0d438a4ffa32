"""The first boot as the unit runs it: the token made by root, the box as the service user.

``systemd/appliance.service`` runs the box as ``appliance`` and makes the
pairing token first with ``ExecStartPre=+... appliance token`` (as root),
because the token lives on the boot partition, where the service user may
not write. Here root plays systemd and ``nobody`` plays the service user
(``setpriv``); those tests need root and are skipped, with the reason,
without it. Bad configuration of any kind is one line and exit code 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from websockets.asyncio.client import connect

from tests.boxproc import ROOT, BoxProcess, virtual_config
from tests.conftest import require_jalv_tools

#: The service user's stand-in.
NOBODY = 65534
#: How long a box that refuses to start may take to say so.
EXIT_TIMEOUT = 60.0

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="playing the service user needs root (setpriv)")


@pytest.fixture
def world() -> Iterator[Path]:
    """A folder every user can reach (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="firstboot-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _appliance(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "appliance", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=EXIT_TIMEOUT, cwd=ROOT)


def _token_config(world: Path, boot: Path) -> Path:
    data = world / "data"
    data.mkdir()
    if os.geteuid() == 0:
        os.chown(data, NOBODY, NOBODY)  # the service user's state directory
    return virtual_config(world, auth="token", token_file=str(boot / "appliance-token.txt"), demo=[], data_dir=data)


def test_token_command_makes_the_token_once(world: Path) -> None:
    """`appliance token` makes a readable token where the config says, and keeps it the next time."""
    boot = world / "boot"
    config = _token_config(world, boot)
    first = _appliance("token", "--config", str(config))
    assert first.returncode == 0, first.stderr
    token_file = boot / "appliance-token.txt"
    token = token_file.read_text().strip()
    assert len(token) >= 32 and token_file.stat().st_mode & 0o777 == 0o644
    again = _appliance("token", "--config", str(config))
    assert again.returncode == 0 and token_file.read_text().strip() == token


def test_pair_prints_the_address_with_the_token_and_its_qr_code(world: Path) -> None:
    """`appliance pair` on the box (or the laptop that set it up): the address a phone opens,
    with the token the box checks, and a QR code of it for the phone's camera."""
    boot = world / "boot"
    config = _token_config(world, boot)
    assert _appliance("token", "--config", str(config)).returncode == 0
    token = (boot / "appliance-token.txt").read_text().strip()
    paired = _appliance("pair", "--config", str(config), "--host", "pedalboard.local")
    assert paired.returncode == 0, paired.stderr
    url = f"http://pedalboard.local:8000/?token={token}"
    assert url in paired.stdout.splitlines()[0]
    code = [line for line in paired.stdout.splitlines()[1:] if line.strip()]
    assert len(code) > 10 and len({len(line) for line in code}) == 1, "no QR code block printed"
    assert set("".join(code)) <= set("█▀▄ "), "the QR code is not drawn in block characters"


@needs_root
def test_service_user_without_a_token_gets_one_line_and_exit_2(world: Path) -> None:
    """Without the root step the box, as the service user, cannot make the token: one sentence
    naming the key and the fix, exit 2 (systemd then stops restarting it), no traceback."""
    boot = world / "boot"
    boot.mkdir(mode=0o755)
    config = _token_config(world, boot)
    result = _appliance("run", "--config", str(config), user=NOBODY)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and "server.token_file: cannot write" in line and "appliance token" in line


@needs_root
async def test_service_user_serves_with_the_token_root_made(world: Path) -> None:
    """Root makes the token (ExecStartPre=+), the box runs as the service user and a phone pairs with it."""
    require_jalv_tools()
    boot = world / "boot"
    boot.mkdir(mode=0o755)
    config = _token_config(world, boot)
    made = _appliance("token", "--config", str(config))
    assert made.returncode == 0, made.stderr
    token = (boot / "appliance-token.txt").read_text().strip()
    box = BoxProcess(config, user=NOBODY)
    await asyncio.to_thread(box.start)
    try:
        async with connect(f"{box.ws_url}?token={token}", open_timeout=30) as ws:
            await ws.send('{"id": "p", "type": "PING"}')
            while (answer := json.loads(await asyncio.wait_for(ws.recv(), 30))).get("reply_to") != "p":
                pass  # what a client is told on connect (the board, the pedalboard state)
            assert answer["type"] == "PONG"
    finally:
        await asyncio.to_thread(box.stop)
    assert box.returncode == 0, box.log_tail()


def test_bad_catalog_is_bad_configuration(world: Path) -> None:
    """A catalog entry with an unknown key: one line naming it, exit 2, before any audio starts."""
    catalog = world / "plugins.yaml"
    catalog.write_text(yaml.safe_dump({"plugins": {"gain": {"uri": "http://lv2plug.in/plugins/eg-amp", "colour": 1}}}))
    config = virtual_config(world, catalog=str(catalog), demo=[])
    result = _appliance("run", "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "plugins.gain.colour" in result.stderr and "jack server" not in result.stdout
