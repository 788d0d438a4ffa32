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

Every phone is sent the new listing (``FILE_LIST``) after each change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

from ..core.errors import ApplianceError
from ..core.protocol import Request
from ..store.archives import ArchiveLimits, unpack_files_zip
from ..store.userfiles import Incoming, UserFiles
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


async def receive(incoming: Incoming[T], chunks: AsyncIterator[bytes], lock: asyncio.Lock) -> T:
    """Write ``chunks`` into ``incoming`` (one worker-thread hop per :data:`WRITE_BLOCK`), then
    give it its place holding ``lock``; what that gave. When anything fails, the task is
    cancelled or ``chunks`` raises (a stalled or dropped upload), nothing is kept."""
    try:
        block = bytearray()
        async for chunk in chunks:
            block += chunk
            if len(block) >= WRITE_BLOCK:
                await asyncio.to_thread(incoming.write, bytes(block))
                block.clear()
        await asyncio.to_thread(incoming.write, bytes(block))
        async with lock:
            return await asyncio.to_thread(incoming.keep)
    except BaseException:
        incoming.discard()
        raise
