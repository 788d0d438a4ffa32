"""The whole box as a user starts it: ``python -m appliance run`` in a subprocess.

The config is the shipped ``config/virtual.yaml`` with the plain keys a test
may override (JACK server name, ports, data folder, origins) changed.

The box runs in a process group of its own. When it has exited (SIGTERM, or
SIGKILL to play a crash), whatever is left in that group (its jalv plugins,
its own JACK server) is killed, as systemd's ``KillMode=control-group`` does
on the box, and those still there after :data:`LEFTOVER_GRACE` are listed in
:attr:`BoxProcess.leftovers`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from appliance.plugins import lilv

ROOT = Path(__file__).resolve().parent.parent
#: The period of every JACK server the suite starts, frames (tests/conftest.py's
#: ``RIG_PERIOD``, and a virtual box's own dummy server). A take during which the
#: server had an xrun fails its test, so the period must outlast the machine's own
#: stalls: on these VMs a SCHED_FIFO thread above JACK's was held off for up to
#: 18.6 ms while the audio tests ran (8 stalls over 10 ms in 200 s; 1.7 ms at most
#: on the idle machine), and at 512 frames (10.7 ms) 4 takes a suite run were
#: spoiled, here and in CI. 1,024 frames is 21.3 ms.
SERVER_PERIOD = 1024
#: How long the box may take to come up (catalog scan, JACK server, plugins).
BOX_START_TIMEOUT = 60.0
#: How long the box may take to exit after SIGTERM (saving the board, stopping plugins).
BOX_STOP_TIMEOUT = 30.0
#: How long the box's children may take to exit on their own once it is gone: a jalv ends
#: when its stdin closes, which took up to 1.9 s after a kill -9 of the box while another
#: test ran beside it (0.0 to 0.6 s alone), with or without the box's MIDI client.
LEFTOVER_GRACE = 3.0
#: How long the processes left in the box's group may take to die after SIGKILL.
LEFTOVER_KILL_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scan_cache() -> Path:
    """The LV2 scan (``lv2-scan.json``) of this machine, made once per test process.

    A box scans every installed plugin on its first start only; each later start
    reads its data folder's copy. Boxes started by tests get a copy too, so they
    start as a player's box does every day (a scan costs about 3 s here).
    """
    global _SCAN_CACHE
    if _SCAN_CACHE is None:
        path = Path(tempfile.mkdtemp(prefix="appliance-scan-")) / "lv2-scan.json"
        atexit.register(shutil.rmtree, path.parent, True)
        lilv.load_plugins(cache=path)  # scanned in a child process: no liblilv in this one
        _SCAN_CACHE = path
    return _SCAN_CACHE


_SCAN_CACHE: Path | None = None


def virtual_config(
    tmp: Path, *, jack_server: str | None = None, dummy: bool = True, scanned: bool = True, **overrides: Any
) -> Path:
    """Write a copy of config/virtual.yaml with overrides; returns its path.

    Args:
        tmp: the folder for the config, its log and (unless overridden) ``data/``.
        jack_server: ``engine.jack.server``; default a fresh unique name.
        dummy: False removes ``engine.jack.dummy``, so the box connects to the
            running server ``jack_server`` instead of starting its own.
        scanned: the data folder gets :func:`scan_cache`'s copy (a cached start);
            False leaves the box its first start's scan.
        overrides: ``engine`` sets ``engine.kind`` (default ``jalv``);
            ``own_server_name=True`` leaves the server's name to the box;
            ``allowed_origins``, ``auth`` and ``token_file`` go under
            ``server``; anything else (``tracks``, ``demo``, ``data_dir``)
            replaces the top-level key. Tuples are written as lists.
    """
    data = yaml.safe_load((ROOT / "config" / "virtual.yaml").read_text())
    data["catalog"] = str(ROOT / "config" / "plugins.yaml")
    data["data_dir"] = str(tmp / "data")
    data["engine"]["jack"]["server"] = jack_server or f"box-{os.getpid()}-{secrets.token_hex(3)}"
    if overrides.pop("own_server_name", False):
        data["engine"]["jack"]["server"] = None  # the box names its own server, as a user's does
    if not dummy:
        data["engine"]["jack"]["dummy"] = None
    else:
        data["engine"]["jack"]["dummy"]["period"] = SERVER_PERIOD
    data["engine"]["kind"] = overrides.pop("engine", "jalv")
    # Every client of a test (pages, tabs, raw sockets) comes from 127.0.0.1: let them all in
    # (the per-address cap itself is tested in tests/test_server.py).
    data["server"]["max_per_address"] = data["server"].get("max_clients", 64)
    for key, value in overrides.items():
        if key in ("allowed_origins", "auth", "token_file"):
            data["server"][key] = value
        else:
            data[key] = _plain(value)
    if scanned:
        folder = Path(data["data_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scan_cache(), folder / "lv2-scan.json")
    path = tmp / "box.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and paths as strings (what safe_dump writes)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _group_members(pgid: int) -> list[str]:
    """``"pid command line"`` of every live process in process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        found.append(f"{entry.name} {b' '.join(argv).decode(errors='replace').strip()}")
    return found


class BoxProcess:
    """One run of the box: ``start()`` waits for /healthz, ``stop()`` ends it.

    Blocking (``time.sleep``, ``urlopen``): from async code call it through
    ``asyncio.to_thread``.

    Args:
        config: the config file (its folder gets ``box.log``).
        port: the HTTP/WebSocket port; default a free one.
        env: extra environment variables for the box (``APPLIANCE_NO_CARLA``).
        user: run the box as this uid (and its gid = uid), as systemd runs it
            as the service user (needs root).
    """

    def __init__(
        self, config: Path, port: int | None = None, env: dict[str, str] | None = None, user: int | None = None
    ) -> None:
        self.config = config
        self.env = env or {}
        self.user = user
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = config.parent / "box.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: Processes found in the box's group after it exited (and then killed).
        self.leftovers: list[str] = []
        self.returncode: int | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self, running: bool = True) -> str:
        """Start the box and wait until /healthz says running (``running=False``: until it
        answers at all, 503 included); returns the http base URL."""
        argv = [sys.executable, "-m", "appliance", "run", "--config", str(self.config)]
        argv += ["--port", str(self.port)]
        if self.user is not None:
            argv = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups", "--", *argv]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it; closed right after
        try:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "JACK_NO_AUDIO_RESERVATION": "1", **self.env},
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._wait_healthy(running)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        return self.base

    def _wait_healthy(self, running: bool) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + BOX_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the box exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=2) as response:
                    if json.loads(response.read()).get("running"):
                        return
            except urllib.error.HTTPError as exc:
                if exc.code == 503 and not running:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the box did not come up: {self.log_tail()}")
            time.sleep(0.1)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig``, wait for the exit, kill what is left in its group; the exit code.

        After SIGTERM the box gets :data:`BOX_STOP_TIMEOUT` to save and stop,
        then SIGKILL. Its children get :data:`LEFTOVER_GRACE` to follow it
        (a jalv exits when its stdin closes); the rest are killed and listed in
        :attr:`leftovers`. Twice is fine.
        """
        proc = self.proc
        if proc is None:
            return self.returncode if self.returncode is not None else 0
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=BOX_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.returncode = proc.returncode
        deadline = time.monotonic() + LEFTOVER_GRACE
        while (left := _group_members(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.leftovers = left
        if left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + LEFTOVER_KILL_TIMEOUT
            while _group_members(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        return self.returncode


@contextlib.contextmanager
def running_box(
    config: Path, port: int | None = None, exit_signal: signal.Signals = signal.SIGTERM
) -> Iterator[str]:
    """Start the box and wait for /healthz to answer; yields its http base URL.

    On exit the box gets ``exit_signal`` (SIGKILL plays a crash) and what is
    left of its process group is killed.
    """
    box = BoxProcess(config, port)
    box.start()
    try:
        yield box.base
    finally:
        box.stop(exit_signal)
