"""The board on disk: atomic, debounced, with the last good copy kept.

Writes go to a temporary file that is fsynced, renamed over ``board.json``,
and followed by an fsync of the folder, so a power cut leaves either the old
or the new board, never half of one. Before each rename the current file is
hard-linked to ``board.json.bak``: if ``board.json`` is ever unreadable (a
bad card, a hand edit), the box loads the backup, moves the bad file aside
and says so in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..core.errors import StoreError
from .files import stale_temporaries, write_atomic

log = logging.getLogger("appliance.store.boards")

#: How long a save may take before shutdown gives up waiting for it.
SAVE_TIMEOUT = 10.0
#: Longest pause between retries of a save that failed.
RETRY_MAX = 30.0
#: Longest a change waits to be saved while more changes keep coming.
SAVE_MAX_WAIT = 0.75


class BoardStore:
    """Reads and writes ``board.json`` under the data folder. Blocking: call off the loop."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "board.json"
        self.backup = data_dir / "board.json.bak"

    def load(self) -> dict[str, Any] | None:
        """The saved board, the backup if the main file is bad, or None if neither exists.

        Also removes temporary files left by a save that was cut short.
        """
        for stale in stale_temporaries(self.path):
            with contextlib.suppress(OSError):
                stale.unlink()
        for candidate in (self.path, self.backup):
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                aside = candidate.with_name(f"{candidate.name}.corrupt-{int(time.time())}")
                log.error("board file %s is unreadable (%s); moved it to %s", candidate, exc, aside.name)
                with contextlib.suppress(OSError):
                    os.replace(candidate, aside)
                continue
            if candidate is self.backup:
                log.warning("loaded the last good board from %s", candidate)
            return data
        return None

    def set_aside(self, why: str) -> str:
        """Move ``board.json`` aside (it loaded but cannot be used); returns the new name."""
        aside = self.path.with_name(f"{self.path.name}.{why}-{int(time.time())}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, aside)
        return aside.name

    def save(self, data: dict[str, Any]) -> None:
        """Write atomically: temp file, fsync, keep last good, rename, fsync folder.

        Raises:
            StoreError: the folder is not writable or the disk is full.
        """
        text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False)
        try:
            write_atomic(self.path, text, backup=self.backup)
        except OSError as exc:
            raise StoreError(f"cannot save the board to {self.path}: {exc.strerror}") from exc


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Timer(Protocol):
    """What the saver needs of a clock: the asyncio loop has both methods."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable: ...


class DebouncedSaver:
    """Saves a snapshot a short while after the last change, and on shutdown.

    A change is saved ``delay`` seconds after the last one, but never later
    than ``max_wait`` seconds after the first unsaved one: a held slider or
    a stream of engine events cannot postpone saving without end (a power
    cut then loses at most about ``max_wait`` seconds of changes).

    Writes never overlap (one lock); a failed write is logged and retried with
    a growing pause, so a full or read-only card does not silently stop the
    saving. All methods run on the loop's thread; the write itself runs in a
    worker.

    Args:
        store: where the board goes.
        snapshot: the board as plain data, taken when the save starts.
        delay: quiet time after a change before it is saved.
        max_wait: longest a change waits to be saved.
        timer: the clock (default: the running loop).
    """

    def __init__(
        self,
        store: BoardStore,
        snapshot: Callable[[], dict[str, Any]],
        delay: float,
        max_wait: float = SAVE_MAX_WAIT,
        timer: Timer | None = None,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.delay = delay
        self.max_wait = max(max_wait, delay)
        self.failures = 0
        #: Why the last save failed, while saves fail (None once one works again).
        self.last_error: str | None = None
        self._timer_source = timer
        self._dirty = False
        self._first_unsaved: float | None = None
        self._retry_at: float | None = None
        self._handle: Cancellable | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()

    def changed(self) -> None:
        """Note a change: saved ``delay`` after the last one, ``max_wait`` after the first at most."""
        now = self._timer().time()
        if self._first_unsaved is None:
            self._first_unsaved = now
        self._dirty = True
        due = min(now + self.delay, self._first_unsaved + self.max_wait)
        if self._retry_at is not None:
            due = max(due, self._retry_at)  # a failing card is not hammered by every change
        self._schedule(due)

    async def settled(self) -> None:
        """Wait for the saves under way (tests and shutdown)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _timer(self) -> Timer:
        return self._timer_source if self._timer_source is not None else asyncio.get_running_loop()

    def _schedule(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._timer().call_at(when, self._start)

    def _start(self) -> None:
        self._handle = None
        task = asyncio.get_running_loop().create_task(self._save())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save(self) -> bool:
        async with self._lock:
            if not self._dirty:
                return True
            self._dirty = False
            self._first_unsaved = None
            try:
                data = self.snapshot()
                await asyncio.to_thread(self.store.save, data)
            except Exception as exc:  # any failure: keep the change, say so, try again
                self._dirty = True
                self.failures += 1
                self.last_error = str(exc)
                retry = min(RETRY_MAX, self.delay * 2**self.failures)
                log.error("board not saved (%s); retrying in %.1f s", exc, retry)
                self._retry_at = self._timer().time() + retry
                self._schedule(self._retry_at)
                return False
            if self.failures:
                log.warning("board saved again after %d failed attempt(s)", self.failures)
            self.failures = 0
            self.last_error = None
            self._retry_at = None
            return True

    async def flush(self) -> bool:
        """Write now if anything changed since the last save (shutdown path).

        Returns:
            True when the board on disk is current.
        """
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        saved = await asyncio.wait_for(self._save(), SAVE_TIMEOUT)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        return saved
