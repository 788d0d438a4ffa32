"""systemd's end of ``NOTIFY_SOCKET`` for tests: a real datagram socket the box writes to."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path


def listen(path: Path) -> socket.socket:
    """A bound, non-blocking ``AF_UNIX`` datagram socket at ``path`` (pass it as NOTIFY_SOCKET)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


def received(sock: socket.socket) -> list[str]:
    """The notifications that arrived since the last call, oldest first."""
    messages = []
    with contextlib.suppress(BlockingIOError):
        while True:
            messages.append(sock.recv(4096).decode())
    return messages
