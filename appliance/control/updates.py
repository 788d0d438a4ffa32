"""System updates sent from a phone, and the box's system as the phone sees it
(docs/protocol.md "Updates"; the bundle and the root installer: :mod:`appliance.system.update`).

The box only receives an update; root installs it::

    phone ──POST /update──▶ Updates.receive: a hidden temporary in the data folder (never half
        a bundle) ──checked whole (worker thread)──▶ update/bundle.update ──▶ update/ready
    appliance-update.path sees ``ready``: the installer (root) fills the other root and reboots
    appliance-update-check (root): the new root is kept only if the box reaches READY with its
        board; update/last.json says what came of it either way

Only a box started from the Debian card (image/card), whose kernel command line names the
root it runs (``appliance.slot=``), takes updates: anywhere else ``POST /update`` is refused
with UNSUPPORTED and nothing is written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.errors import ApplianceError, Busy, InvalidValue, NoSpace, StoreError, TooLarge, Unsupported
from ..store.files import fsync_folder, write_atomic
from ..store.userfiles import CARD_RESERVE, Incoming
from ..system.update import (
    BOOT,
    BUNDLE_NAME,
    PARTITIONS,
    READY_NAME,
    UPDATE_DIR,
    Manifest,
    UpdateError,
    booted_slot,
    check,
    last_outcome,
    machine_arch,
)
from .playerfiles import receive

log = logging.getLogger("appliance.control.updates")

#: The largest update the box takes, however much room its card has (a bundle of the card's
#: 3 GiB root is well under it).
MAX_BUNDLE = 4 << 30
#: Where the kernel's command line is read (``appliance.slot=``).
CMDLINE = Path("/proc/cmdline")


@dataclasses.dataclass(frozen=True)
class System:
    """The system this boot runs: its version, and its root on a card with two (A or B;
    None: not started from such a card, so no updates)."""

    version: str
    slot: str | None


def read_system(boot: Path = BOOT, cmdline: Path = CMDLINE) -> System:
    """The system this boot runs: the root named on the kernel's command line (``cmdline``)
    and the version the installer stamped beside its kernel (``<boot>/<slot>/version``);
    elsewhere the package's version. Blocking: once, at start, off the loop."""
    try:
        slot = booted_slot(cmdline.read_text())
    except OSError:
        slot = None
    if slot not in PARTITIONS:
        return System(__version__, None)
    try:
        version = (boot / slot / "version").read_text().strip()
    except OSError:
        version = ""
    return System(version or __version__, slot)


class Updates:
    """Receives system updates into ``data_dir``'s update folder, one at a time, and reports
    the system (``/healthz``'s and HEALTH's ``system``). Runs on the loop; files are touched
    in worker threads.

    Args:
        data_dir: the box's data folder (on the data partition, which every root shares).
        system: the system this boot runs (:func:`read_system`).
        arch: the machine an update must be for (Debian's name; default: this one's).
    """

    def __init__(self, data_dir: Path, system: System, arch: str | None = None) -> None:
        self.data_dir = data_dir
        self.folder = data_dir / UPDATE_DIR
        self.system = system
        self.arch = arch or machine_arch()
        #: ``last.json`` as last read (:meth:`refresh`).
        self.last: dict[str, Any] | None = None
        self._busy = asyncio.Lock()

    def report(self) -> dict[str, Any]:
        """``system`` for the health report: the version, the root, the last update's outcome
        as :meth:`refresh` last read it. Any thread; no I/O."""
        return {"version": self.system.version, "slot": self.system.slot, "last_update": self.last}

    async def refresh(self) -> None:
        """Read ``last.json`` again (the root installer and the check at boot write it while
        the box runs); before each health report a client asks for."""
        self.last = await asyncio.to_thread(last_outcome, self.folder)

    async def receive(self, chunks: AsyncIterator[bytes], declared: int | None) -> Manifest:
        """Receive a bundle from ``chunks`` (``declared`` bytes, when said), check it whole and
        leave it for the root installer (``update/bundle.update``, then ``update/ready``). Its
        manifest. The installer then restarts the box.

        Raises:
            Unsupported: this box was not started from a card with two roots. Busy: an update
            is being sent or waits to be installed. TooLarge, NoSpace: over
            :data:`MAX_BUNDLE` or the card's room (what it keeps free for the boards aside).
            InvalidValue: not an update this box can install (why, in words). StoreError: the
            card refused. In all of these, and when ``chunks`` fails, nothing is kept.
        """
        if self.system.slot is None:
            raise Unsupported(
                "updates need the Debian card (image/card): this box was not started from a card "
                "with two roots"
            )
        if self._busy.locked():
            raise Busy("another update is being sent to the box; nothing was kept")
        async with self._busy:
            room, refusal = await asyncio.to_thread(self._room)
            if declared is not None and declared > room:
                raise refusal(declared)
            incoming = await asyncio.to_thread(Incoming, self.data_dir, room, refusal, self._adopt)
            manifest = await receive(incoming, chunks)  # one at a time already (_busy)
        log.warning(
            "update %s (%s) received, %d bytes; the system installs it to the other root and restarts",
            manifest.version,
            manifest.arch,
            incoming.size,
        )
        return manifest

    def _room(self) -> tuple[int, Callable[[int], ApplianceError]]:
        """The most an update may take now, and the refusal past it (worker thread). A bundle
        that no ``ready`` asks for (a power cut came between the two) goes first: its room is
        the new one's.

        Raises:
            Busy: an update waits to be installed already.
        """
        if (self.folder / READY_NAME).exists():
            raise Busy("an update waits to be installed already; the box installs it and restarts by itself")
        try:
            (self.folder / BUNDLE_NAME).unlink(missing_ok=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            free = max(shutil.disk_usage(self.data_dir).free - CARD_RESERVE, 0)
        except OSError as exc:
            raise StoreError(f"the data folder cannot take an update: {exc.strerror}") from exc
        if free < MAX_BUNDLE:
            return free, lambda size: NoSpace(
                f"the card has room for an update of {free >> 20} MB at most (it keeps "
                f"{CARD_RESERVE >> 20} MB for the boards); delete some of your files to make room",
                {"limit_bytes": free},
            )
        return MAX_BUNDLE, lambda size: TooLarge(
            f"an update may be at most {MAX_BUNDLE >> 30} GB", {"limit_bytes": MAX_BUNDLE}
        )

    def _adopt(self, path: Path) -> Manifest:
        """The whole bundle at ``path``: check it, then hand it to the installer (worker thread).

        ``bundle.update`` takes its place first, then ``ready`` appears (written whole, then
        renamed), since that starts the installer: a power cut in between leaves a bundle that
        nobody installs, which the next update replaces.
        """
        try:
            manifest = check(path, self.arch)
        except UpdateError as exc:
            raise InvalidValue(str(exc)) from None
        bundle = self.folder / BUNDLE_NAME
        try:
            self.folder.mkdir(exist_ok=True)
            os.replace(path, bundle)
            fsync_folder(self.folder)
            asked = {"version": manifest.version, "arch": manifest.arch, "at": _now()}
            write_atomic(self.folder / READY_NAME, json.dumps(asked) + "\n")
        except OSError as exc:
            bundle.unlink(missing_ok=True)
            raise StoreError(f"could not keep the update: {exc.strerror}") from exc
        return manifest


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
