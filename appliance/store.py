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
from typing import Any

from .errors import StoreError

log = logging.getLogger("appliance.store")

#: How long a save may take before shutdown gives up waiting for it.
SAVE_TIMEOUT = 10.0


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
        for stale in self.data_dir.glob(f".{self.path.name}.*.tmp"):
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

    def save(self, data: dict[str, Any]) -> None:
        """Write atomically: temp file, fsync, keep last good, rename, fsync folder.

        Raises:
            StoreError: the folder is not writable or the disk is full.
        """
        text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if self.path.exists():
                link = self.backup.with_name(f".{self.backup.name}.tmp")
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
                os.link(self.path, link)
                os.replace(link, self.backup)
            os.replace(tmp, self.path)
            fd = os.open(self.data_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"cannot save the board to {self.path}: {exc.strerror}") from exc


class DebouncedSaver:
    """Saves a snapshot a short while after the last change, and on shutdown.

    All methods run on the loop's thread; the write itself runs in a worker.
    """

    def __init__(self, store: BoardStore, snapshot: Callable[[], dict[str, Any]], delay: float) -> None:
        self.store = store
        self.snapshot = snapshot
        self.delay = delay
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None
        self._dirty = False

    def changed(self) -> None:
        """Note a change; the save happens ``delay`` seconds after the last one."""
        self._dirty = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.delay, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._writing is not None and not self._writing.done():
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._start)
            return
        self._writing = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        self._dirty = False
        data = self.snapshot()
        try:
            await asyncio.to_thread(self.store.save, data)
        except StoreError as exc:
            self._dirty = True
            log.error("%s", exc)

    async def flush(self) -> None:
        """Write now if anything changed since the last save (shutdown path)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None:
            await asyncio.wait_for(asyncio.shield(self._writing), SAVE_TIMEOUT)
        if self._dirty:
            await asyncio.wait_for(self._write(), SAVE_TIMEOUT)
