"""systemd notification: READY, STATUS, WATCHDOG while healthy, STOPPING.

Speaks the sd_notify datagram protocol directly (a single ``sendto`` on the
socket named by ``NOTIFY_SOCKET``); without that variable every call is a
no-op that returns False, so the box runs the same outside systemd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger("appliance.watchdog")


class SystemdNotifier:
    """Sends notifications to systemd. Any thread; never blocks."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        usec = environ.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 else None

    def notify(self, *fields: str) -> bool:
        if self.address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto("\n".join(fields).encode(), self.address)
            except OSError as exc:
                log.warning("cannot notify systemd: %s", exc)
                return False
        return True


async def watchdog_loop(notifier: SystemdNotifier, healthy: Callable[[], tuple[bool, str]]) -> None:
    """Pet the watchdog at half its interval, only while the box is healthy."""
    interval = (notifier.watchdog_interval or 10.0) / 2
    was_healthy = True
    while True:
        ok, status = healthy()
        if ok:
            notifier.notify("WATCHDOG=1", f"STATUS={status}")
        elif was_healthy:
            log.error("unhealthy: %s; not petting the watchdog", status)
            notifier.notify(f"STATUS=unhealthy: {status}")
        was_healthy = ok
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.sleep(interval)
