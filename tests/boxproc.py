"""The whole box as a user starts it: ``python -m appliance run`` in a subprocess.

The config is the shipped ``config/virtual.yaml`` with the plain keys a test
may override (JACK server name, ports, data folder, origins) changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
#: How long the box may take to come up (catalog scan, JACK server, plugins).
BOX_START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def virtual_config(tmp: Path, **overrides: Any) -> Path:
    """Write a copy of config/virtual.yaml with overrides; returns its path."""
    data = yaml.safe_load((ROOT / "config" / "virtual.yaml").read_text())
    data["catalog"] = str(ROOT / "config" / "plugins.yaml")
    data["data_dir"] = str(tmp / "data")
    data["engine"]["jack"]["server"] = f"box-{os.getpid()}-{secrets.token_hex(3)}"
    data["engine"]["kind"] = overrides.pop("engine", "jalv")
    for key, value in overrides.items():
        if key in ("allowed_origins", "auth", "token_file"):
            data["server"][key] = value
        else:
            data[key] = value
    path = tmp / "box.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.contextmanager
def running_box(config: Path, port: int | None = None) -> Iterator[str]:
    """Start the box and wait for /healthz to answer; yields its http base URL."""
    port = port or free_port()
    log = open(config.parent / "box.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(config), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + BOX_START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the box exited: {(config.parent / 'box.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                    if json.loads(response.read()).get("running"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the box did not come up: {(config.parent / 'box.log').read_text()[-3000:]}"
                )
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
