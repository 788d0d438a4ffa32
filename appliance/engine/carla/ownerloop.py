"""One thread that owns a non-re-entrant library: it serves a line pipe and an idle tick.

Carla's host API is not re-entrant and wants ``engine_idle()`` about every
20 ms from the same thread. :class:`OwnerLoop` is that thread, with no Carla
in it (it is tested with a socket pair and a counting tick)::

    socket ──lines──▶ handle(message) ──▶ send(reply)      (the owner thread)
                  ╲
       every interval ──▶ idle()

* ``handle`` and ``idle`` run on the owner thread only, one at a time; the
  tick never waits behind a quiet pipe, and a busy pipe does not starve it.
* :meth:`OwnerLoop.send` may be called from any thread (a lock keeps lines whole).
* The loop ends at EOF (the box has gone), on :meth:`OwnerLoop.stop`, or when
  ``idle`` or ``handle`` raises: the exception propagates out of :meth:`run`.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from . import pipe

log = logging.getLogger("appliance.engine.carla.owner")

#: Bytes read from the pipe at a time.
READ_SIZE = 65536


class OwnerLoop:
    """Serves ``sock`` line by line and calls ``idle`` every ``interval`` seconds.

    Args:
        sock: a connected stream socket (blocking mode is fine: it is only
            read when ``select`` says so).
        handle: called with each decoded message.
        idle: the tick.
        interval: seconds between two ticks.
        clock: monotonic seconds (for tests).
    """

    def __init__(
        self,
        sock: socket.socket,
        handle: Callable[[dict[str, Any]], None],
        idle: Callable[[], None],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sock = sock
        self.handle = handle
        self.idle = idle
        self.interval = interval
        self.clock = clock
        self._send_lock = threading.Lock()
        self._stopped = False
        self._buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        """Write one message. Any thread; a closed pipe is ignored (the box has gone)."""
        data = pipe.encode(message)
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self._stopped = True

    def stop(self) -> None:
        """End :meth:`run` after the current step. Any thread."""
        self._stopped = True

    def run(self) -> None:
        """Serve until EOF or :meth:`stop`. Owner thread."""
        next_idle = self.clock()
        while not self._stopped:
            wait = max(0.0, next_idle - self.clock())
            readable, _, _ = select.select([self.sock], [], [], wait)
            if readable and not self._read():
                return
            if self.clock() >= next_idle:
                self.idle()
                next_idle = self.clock() + self.interval

    def _read(self) -> bool:
        """Read what is there and handle every complete line; False at EOF."""
        try:
            chunk = self.sock.recv(READ_SIZE)
        except OSError:
            return False
        if not chunk:
            return False
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if self._stopped:
                break
            if not line.strip():
                continue
            try:
                message = pipe.decode(line)
            except ValueError:
                log.error("ignored a malformed line from the box: %r", line[:200])
                continue
            self.handle(message)
        return True
