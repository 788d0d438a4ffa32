"""The player's files over the protocol: list, rename and delete them (docs/protocol.md
``FILE_LIST``, ``FILE_RENAME``, ``FILE_DELETE``).

A rename keeps every use of the file: it is given its new name beside the old one
first, then the board's plugins and every pedalboard that name it are changed, and
only then is the old name taken away, so a power cut at any moment leaves each
board naming a file that is there. A delete leaves the names where they are: a
pedalboard that loaded the file loads without it and says which
(``ENGINE_EVENT`` ``file-missing``), and putting the file back brings it back.

Files arrive over HTTP (``POST /files``, docs/protocol.md "Uploads"):
:meth:`PlayerFiles.upload` streams one to a hidden temporary on the card and gives it its
name only when it is whole, so a cut-short upload never appears as a file.

A pedalboard is shared with another box as one zip that carries the files it loads
(:mod:`appliance.store.shared`): :meth:`PlayerFiles.export` and :meth:`PlayerFiles.import_`.

Every phone is sent the new listing (``FILE_LIST``) after each change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

from ..core.errors import ApplianceError, InvalidValue
from ..core.protocol import Request
from ..store.archives import ArchiveLimits, unpack_files_zip
from ..store.shared import Imported, export_pedalboard, import_pedalboard
from ..store.userfiles import INCOMING, Incoming, UserFiles, too_large
from .controller import Controller, Outcome
from .library import Library

log = logging.getLogger("appliance.control.playerfiles")

T = TypeVar("T")

#: Bytes of an upload gathered before each write to the card (one worker-thread hop each).
WRITE_BLOCK = 1 << 20


class PlayerFiles:
    """Serves the player's folder through ``controller``; one change of it at a time."""

    def __init__(self, controller: Controller, library: Library, files: UserFiles) -> None:
        self.controller = controller
        self.library = library
        self.files = files
        self._changing = asyncio.Lock()
        controller.register("FILE_LIST", self._list)
        controller.register("FILE_RENAME", self._rename)
        controller.register("FILE_DELETE", self._delete)

    async def _listing(self) -> tuple[str, dict[str, object]]:
        return ("FILE_LIST", {"files": await asyncio.to_thread(self.files.listing)})

    async def _list(self, request: Request) -> Outcome:
        return Outcome(reply=[await self._listing()])

    async def _rename(self, request: Request) -> Outcome:
        old = request.data["file"]
        async with self._changing:
            new = await asyncio.to_thread(self.files.add_name, old, request.data["new_name"])
            written = await self.library.rename_file(old, new)
            events = await self.controller.rename_file(old, new)
            try:
                await asyncio.to_thread(self.files.delete, old)
            except ApplianceError as exc:  # both names stay: nothing is lost
                log.error("%r renamed %r, but the old name stays: %s", old, new, exc)
            log.info("file %r renamed %r (pedalboards rewritten: %s)", old, new, written or "none")
            return Outcome(broadcast=[*events, await self._listing()])

    async def _delete(self, request: Request) -> Outcome:
        async with self._changing:
            await asyncio.to_thread(self.files.delete, request.data["file"])
            log.info("file %r deleted", request.data["file"])
            return Outcome(broadcast=[await self._listing()])

    async def upload(
        self, name: object, folder: object, chunks: AsyncIterator[bytes], declared: int | None
    ) -> list[str]:
        """Receive the file ``name`` into ``folder`` (None: by its extension; a ``.zip`` is
        unpacked into the folders its files belong to) from ``chunks``. Its new names.

        Raises:
            InvalidValue, NameTaken, TooLarge, NoSpace, StoreError: refused; nothing is kept.
            Whatever ``chunks`` raises (a stalled or dropped upload): nothing is kept.
        """
        incoming = await asyncio.to_thread(self.files.receive, name, folder, declared, self._unpack)
        names = await receive(incoming, chunks, self._changing)
        log.info("received %s (%d bytes)", ", ".join(names) or "an empty archive", incoming.size)
        self.controller.publish([await self._listing()])
        return names

    def _unpack(self, archive: Path, room: int) -> list[str]:
        return unpack_files_zip(archive, self.files.root, ArchiveLimits(max_bytes=room))

    async def export(self, name: object) -> tuple[Path, list[str]]:
        """The pedalboard ``name`` and its files as one zip (a hidden temporary the caller
        sends, then removes), and the files it names that are not on the box.

        Raises:
            UnknownPedalboard: no such pedalboard. StoreError: the card refused.
        """
        if not isinstance(name, str) or not name:
            raise InvalidValue("name the pedalboard to share (?name=)", {"field": "name"})
        await asyncio.to_thread(self.files.root.mkdir, parents=True, exist_ok=True)
        target = self.files.root / f"{INCOMING}share-{secrets.token_hex(6)}.zip"
        async with self.library.files_lock:
            missing = await asyncio.to_thread(export_pedalboard, self.library.store, self.files, name, target)
        return target, missing

    async def import_(self, chunks: AsyncIterator[bytes], declared: int | None) -> Imported:
        """Receive a shared pedalboard from ``chunks`` and add it and its files to the box;
        every phone is told the new pedalboard and files.

        Raises:
            InvalidValue, TooLarge, NoSpace, PluginNotAllowed (``details.missing``), StoreError;
            or whatever ``chunks`` raises. In every case nothing was kept.
        """
        limits = self.files.limits
        refusal = too_large(limits.max_file_bytes, "a shared pedalboard", "files.max_file_mb")
        if declared is not None and declared > limits.max_file_bytes:
            raise refusal(declared)
        await asyncio.to_thread(self.files.root.mkdir, parents=True, exist_ok=True)
        room = ArchiveLimits(max_bytes=max(0, limits.quota_bytes - await asyncio.to_thread(self.files.usage)))

        def adopt(archive: Path) -> Imported:
            lookup = self.controller.catalog.lookup
            return import_pedalboard(archive, self.library.store, self.files, lookup, room)

        incoming = await asyncio.to_thread(Incoming, self.files.root, limits.max_file_bytes, refusal, adopt)
        imported = await receive(incoming, chunks, self.library.files_lock)
        log.info(
            "pedalboard %r imported (files added %s, reused %s)",
            imported.name,
            imported.files,
            imported.reused,
        )
        await self.library.pedalboards_added()
        self.controller.publish([await self._listing()])
        return imported


async def receive(incoming: Incoming[T], chunks: AsyncIterator[bytes], lock: asyncio.Lock | None = None) -> T:
    """Write ``chunks`` into ``incoming`` (one worker-thread hop per :data:`WRITE_BLOCK`), then
    give it its place, holding ``lock`` if given; what that gave. When anything fails, the task
    is cancelled or ``chunks`` raises (a stalled or dropped upload), nothing is kept."""
    try:
        block = bytearray()
        async for chunk in chunks:
            block += chunk
            if len(block) >= WRITE_BLOCK:
                await asyncio.to_thread(incoming.write, bytes(block))
                block.clear()
        await asyncio.to_thread(incoming.write, bytes(block))
        async with lock or contextlib.nullcontext():
            return await asyncio.to_thread(incoming.keep)
    except BaseException:
        incoming.discard()
        raise
