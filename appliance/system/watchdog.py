"""systemd notification: READY, STATUS, WATCHDOG while healthy, STOPPING; the loop's lag.

Through systemd-python's ``systemd.daemon.notify`` (sd_notify(3), which
reads ``NOTIFY_SOCKET`` from the process environment); without that
variable every call is a no-op that returns False, so the box runs the same
outside systemd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping

from systemd.daemon import notify as sd_notify

log = logging.getLogger("appliance.system.watchdog")

#: The longest the STATUS line goes without a refresh, seconds.
STATUS_EVERY = 5.0
#: How often :class:`LoopLag` wakes, seconds.
LAG_TICK = 0.05
#: How many of its wakes it keeps (one minute's).
LAG_WINDOW = 1200


class SystemdNotifier:
    """Sends notifications to systemd. Any thread; never blocks."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        usec = environ.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 else None

    def notify(self, *fields: str) -> bool:
        if not self.enabled:
            return False
        try:
            sent = bool(sd_notify("\n".join(fields)))
        except (OSError, ValueError) as exc:
            log.warning("cannot notify systemd: %s", exc)
            return False
        if not sent:
            log.warning("systemd did not take the notification %s", fields[0])
        return sent


    def starting(self, step: str, seconds: float) -> bool:
        """A step of the start that may take up to ``seconds``: systemd waits that long from
        now (``EXTEND_TIMEOUT_USEC``) instead of its start timeout, and shows the step."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}", f"STATUS=starting: {step}")


async def watchdog_loop(notifier: SystemdNotifier, healthy: Callable[[], tuple[bool, str]]) -> None:
    """Pet the watchdog at half its interval (every 5 s at most: the STATUS line goes with
    it), only while the box is healthy."""
    interval = min(STATUS_EVERY, (notifier.watchdog_interval or 10.0) / 2)
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


class LoopLag:
    """How late the event loop runs what is due: a footswitch handled late is heard late.

    :meth:`run` sleeps :data:`LAG_TICK` at a time and keeps how much later
    than asked each wake came, over the last minute; :meth:`report` gives
    p50, p99 and max in ms (``/healthz``'s ``loop_lag_ms``).
    """

    def __init__(self, tick: float = LAG_TICK, window: int = LAG_WINDOW) -> None:
        self.tick = tick
        self.samples: deque[float] = deque(maxlen=window)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.tick
            await asyncio.sleep(self.tick)
            self.samples.append(max(0.0, loop.time() - asked))

    def report(self) -> dict[str, float]:
        if not self.samples:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        ordered = sorted(self.samples)
        last = len(ordered) - 1
        at = {"p50": round(0.5 * last), "p99": round(0.99 * last), "max": last}
        return {name: round(ordered[index] * 1000, 2) for name, index in at.items()}
