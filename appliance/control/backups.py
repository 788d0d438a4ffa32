"""Backups of everything the player made, and restoring one (docs/protocol.md "Backups").

A backup (``GET /backup``) is made after the board is saved, so that a change made a
moment ago is in it; :func:`~appliance.store.backup.make_backup` writes it to a hidden
temporary in the data folder, which the server sends and removes.

A restore (``POST /restore``) arrives as an upload does (a hidden temporary, never half
an archive), is checked whole (a refused archive changes nothing), unpacked beside the
player's data and committed. Then the box starts again, and its start swaps the backup
in before anything reads the data (:func:`~appliance.store.backup.recover_restore`): a
power cut at any moment leaves the old data or the new one, never a mix, and the old
stays until the new is complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

from ..config import FilesConfig
from ..store.archives import ArchiveLimits
from ..store.backup import BackupSummary, make_backup, stage_restore
from ..store.userfiles import INCOMING, Incoming, too_large
from .playerfiles import receive

log = logging.getLogger("appliance.control.backups")

#: Room a backup's boards, pedalboards and mappings may take beside the player's files.
DOCUMENTS_ROOM = 64 << 20


class Backups:
    """Makes and restores backups of ``data_dir``; one at a time.

    Args:
        data_dir: the player's data (board, pedalboards, setlist, mappings, files).
        limits: the player's files' quota: a backup may hold that much, and its documents.
        save: writes the board now (the saver's flush).
        restart: asks the box to start again (a committed restore is swapped in at start).
    """

    def __init__(
        self,
        data_dir: Path,
        limits: FilesConfig,
        save: Callable[[], Awaitable[object]],
        restart: Callable[[str], None],
    ) -> None:
        self.data_dir = data_dir
        self.limits = ArchiveLimits(max_bytes=limits.quota_bytes + DOCUMENTS_ROOM)
        self.save = save
        self.restart = restart
        self._busy = asyncio.Lock()

    async def make(self) -> tuple[Path, BackupSummary]:
        """A new backup archive (a hidden temporary the caller sends, then removes) and what it holds.

        Raises:
            StoreError: the card refused (too full for the archive).
        """
        async with self._busy:
            await self.save()
            await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
            target = self.data_dir / f"{INCOMING}backup-{secrets.token_hex(6)}.zip"
            try:
                summary = await asyncio.to_thread(make_backup, self.data_dir, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    target.unlink()
                raise
            log.info("backup made: %s, %d bytes of files", summary.counts, summary.bytes)
            return target, summary

    async def restore(self, chunks: AsyncIterator[bytes], declared: int | None) -> BackupSummary:
        """Receive a backup archive from ``chunks``, check it whole, unpack and commit it,
        and ask the box to start again with it. What it holds.

        Raises:
            TooLarge: over what a backup may hold; InvalidValue: not a backup this box can
            restore (the member and why); StoreError: the card refused. In all of these, and
            when ``chunks`` fails, nothing changed.
        """
        room = self.limits.max_bytes
        refusal = too_large(room, "a backup", "files.quota_mb, and 64 MB of boards")
        if declared is not None and declared > room:
            raise refusal(declared)
        async with self._busy:
            await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
            stage = partial(stage_restore, self.data_dir, limits=self.limits)
            incoming = await asyncio.to_thread(Incoming, self.data_dir, room, refusal, stage)
            summary = await receive(incoming, chunks)  # one at a time already (_busy)
        log.warning(
            "backup of %s committed (%s); the box starts again with it", summary.created, summary.counts
        )
        self.restart("restoring a backup")
        return summary
