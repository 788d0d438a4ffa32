"""systemd notification over a real NOTIFY_SOCKET datagram socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.watchdog import SystemdNotifier, watchdog_loop


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    messages = []
    with contextlib.suppress(BlockingIOError):
        while True:
            messages.append(sock.recv(4096).decode())
    return messages


def test_notify_reaches_the_socket(notify_socket: socket.socket) -> None:
    """READY=1 with a STATUS arrives as one datagram on NOTIFY_SOCKET."""
    notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.getsockname()})
    assert notifier.notify("READY=1", "STATUS=serving")
    assert received(notify_socket) == ["READY=1\nSTATUS=serving"]


def test_without_notify_socket_nothing_is_sent() -> None:
    """Outside systemd every notification is a no-op returning False."""
    assert SystemdNotifier({}).notify("READY=1") is False


async def test_watchdog_pets_only_while_healthy(notify_socket: socket.socket) -> None:
    """WATCHDOG=1 is sent while healthy; when unhealthy it stops and the status says why."""
    notifier = SystemdNotifier({"NOTIFY_SOCKET": notify_socket.getsockname(), "WATCHDOG_USEC": "20000"})
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
