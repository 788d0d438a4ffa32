"""Ending the child processes the engines start (jalv plugins, the Carla host).

Loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

log = logging.getLogger("appliance.engine")


def dies_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGTERM when the box dies, even by SIGKILL.

    No JACK server, plugin or Carla host outlives a crashed box: each ends
    cleanly (a jackd killed outright would keep its slot among JACK's eight
    until a server of the same name starts again). util-linux's ``setpriv``
    (always installed on Debian); the signal is tied to the thread that
    starts the child, here always the loop's.
    """
    return ["setpriv", "--pdeathsig", "TERM", "--", *argv]


def describe_exit(returncode: int) -> str:
    """How a child process ended: ``exit status 1`` or ``signal SIGKILL``."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


async def end_process(
    proc: asyncio.subprocess.Process, ask: Callable[[], None] | None, timeout: float, name: str
) -> None:
    """Ask a child to exit, then SIGTERM, then SIGKILL, each given ``timeout`` seconds.

    Args:
        proc: the child.
        ask: the polite request (close its stdin, send ``quit``), if it has one.
        timeout: how long each step may take.
        name: for the log, if it will not die.
    """
    if proc.returncode is None and ask is not None:
        with contextlib.suppress(OSError):
            ask()
    for stop in (None, proc.terminate, proc.kill):
        if proc.returncode is not None:
            return
        if stop is not None:
            with contextlib.suppress(ProcessLookupError):
                stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout)
    if proc.returncode is None:
        log.error("%s (pid %d) would not die", name, proc.pid)
