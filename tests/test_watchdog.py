"""systemd: notification over a real NOTIFY_SOCKET datagram socket, the STATUS line, the journal's fields."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from appliance.app import status_line
from appliance.control.controller import Controller
from appliance.core.board import Board
from appliance.engine import EngineEvent, TrackPorts
from appliance.engine.jack.server import jack_environment
from appliance.plugins.catalog import Catalog
from appliance.system import logs
from appliance.system.watchdog import LoopLag, SystemdNotifier, watchdog_loop
from tests.fakes import FakeEngine
from tests.notify import received


def test_notify_reaches_the_socket(notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    """READY=1 with a STATUS arrives as one datagram on NOTIFY_SOCKET (through sd_notify)."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.getsockname())
    notifier = SystemdNotifier()
    assert notifier.notify("READY=1", "STATUS=serving")
    assert received(notify_socket) == ["READY=1\nSTATUS=serving"]


def test_a_long_start_step_extends_systemds_start_timeout(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each slow step of a start (the first LV2 scan on a slow card took 74 s on an emulated
    Pi) asks systemd for that step's time from now and says what it is doing. Broken,
    systemd kills a first start at 90 s, over and over, and the new box never plays."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.getsockname())
    assert SystemdNotifier().starting("reading the LV2 plugins", 300.0)
    assert received(notify_socket) == ["EXTEND_TIMEOUT_USEC=300000000\nSTATUS=starting: reading the LV2 plugins"]


def test_without_notify_socket_nothing_is_sent() -> None:
    """Outside systemd every notification is a no-op returning False."""
    assert SystemdNotifier({}).notify("READY=1") is False


async def test_watchdog_pets_only_while_healthy(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WATCHDOG=1 is sent while healthy; when unhealthy it stops and the status says why."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    notifier = SystemdNotifier()
    assert notifier.watchdog_interval == 0.02
    state = {"ok": True}
    task = asyncio.create_task(
        watchdog_loop(notifier, lambda: (state["ok"], "engine down" if not state["ok"] else "4 plugins"))
    )
    healthy: list[str] = []
    for _ in range(200):
        await asyncio.sleep(0.01)
        healthy += received(notify_socket)
        if sum("WATCHDOG=1" in m for m in healthy) >= 2:
            break
    else:
        pytest.fail("no WATCHDOG=1 while healthy")
    state["ok"] = False
    messages: list[str] = []
    for _ in range(200):
        await asyncio.sleep(0.01)
        messages += received(notify_socket)
        if any("unhealthy" in m for m in messages):
            break
    await asyncio.sleep(0.1)
    after = received(notify_socket)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert any(m == "STATUS=unhealthy: engine down" for m in messages)
    assert not any("WATCHDOG=1" in m for m in after), "no petting while unhealthy"


def test_the_status_line_says_what_the_box_is_doing() -> None:
    """`systemctl status appliance` shows engine, rate/buffer, DSP, xruns, clients, pedalboard."""
    report = {"engine": "carla", "sample_rate": 48000, "buffer_size": 128, "dsp_load": 9.4, "xruns": 2}
    line = status_line(report | {"board_plugins": 4}, 3, "Verse", True)
    assert line == "carla 48000 Hz/128, DSP 9 %, 2 xruns, 4 plugins, 3 clients, pedalboard Verse*"
    assert status_line({}, 0, None, False).endswith("pedalboard (unsaved)")


def test_journal_records_carry_the_fields_to_search_by() -> None:
    """Under systemd each record goes to the journal with its priority and the box's fields,
    so that `journalctl -u appliance PLUGIN_ID=plugin_3` finds what happened to a plugin."""
    sent: list[tuple[str, dict[str, object]]] = []
    handler = logs.handler(True, lambda text, /, **fields: sent.append((text, fields)))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        controller = Controller(Board(["t"]), Catalog({}, []), FakeEngine([TrackPorts("t", ("a",), ("b",))]))
        controller.engine_event(EngineEvent("plugin-died", "plugin_3", "jalv exited with signal 11"))
    finally:
        root.removeHandler(handler)
    message, fields = next((m, f) for m, f in sent if "plugin-died" in m)
    assert fields["PLUGIN_ID"] == "plugin_3" and fields["ENGINE"] == "fake"
    assert fields["PRIORITY"] == "3" and fields["SYSLOG_IDENTIFIER"] == "appliance"
    assert "signal 11" in message


def test_the_journal_is_used_only_when_stdout_is_the_journal_stream(tmp_path: Path) -> None:
    """JOURNAL_STREAM counts only when it names stdout itself; a redirected box logs lines."""
    with open(tmp_path / "out", "w") as out:
        status = os.fstat(out.fileno())
        assert logs.under_systemd({"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}, out.fileno())
        assert not logs.under_systemd({"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino + 1}"}, out.fileno())
        assert not logs.under_systemd({}, out.fileno())
    handler = logs.handler(False)
    assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout


async def test_loop_lag_shows_a_blocked_loop() -> None:
    """Something that blocks the control loop (a slow call on its thread) delays every
    footswitch by as much: /healthz's loop_lag_ms must show it, not average it away."""
    lag = LoopLag(tick=0.01)
    task = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # the loop is blocked: nothing else runs meanwhile
        await asyncio.sleep(0.05)
    finally:
        task.cancel()
    report = lag.report()
    assert report["max"] >= 250.0, report
    assert report["p50"] < report["max"]


def test_child_processes_do_not_get_the_boxs_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """jackd, jalv and the Carla host run with the box's environment but not its link to
    systemd: under NotifyAccess=main their notifications would be refused and logged."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    env = jack_environment("box")
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & env.keys()
    assert env["JACK_DEFAULT_SERVER"] == "box" and env["PATH"] == os.environ["PATH"]
