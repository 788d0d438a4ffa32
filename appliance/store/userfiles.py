"""The player's own files (cabinet IRs, amp models) in the data partition.

They live in one folder per kind under ``<data_dir>/files``::

    files/ir/      impulse responses (.wav, .flac, …)
    files/models/  amp models (.nam, AIDA-X .json)
    files/other/   anything else a plugin loads

A file is named on the wire and in saved boards by its path in that folder
(``ir/cab 4x12.wav``), never by an absolute path, so that a board and a backup
mean the same files on another box. Names are checked here: no ``..``, no
absolute path, no hidden file, nothing but a regular file inside the folder
(a symbolic link that leads out is refused).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Generic, TypeVar

from ..config import FilesConfig
from ..core.controls import FILE_FOLDERS, folder_of_name, folders_for
from ..core.errors import ApplianceError, InvalidValue, NameTaken, NoSpace, StoreError, TooLarge
from .files import fsync_folder

#: The longest name a file may be given (ext4's limit, in bytes of UTF-8).
NAME_BYTES = 255
#: What the card keeps free for the board and the pedalboards, whatever the player uploads.
CARD_RESERVE = 64 << 20
#: The start of an upload's temporary name: hidden, so never listed nor loaded as a file.
INCOMING = ".incoming-"

T = TypeVar("T")


def plain_name(name: object, field: str) -> str:
    """``name`` if it is a plain file name: no folder, not hidden, at most :data:`NAME_BYTES`.

    Raises:
        InvalidValue: it is not, with ``field`` as the detail.
    """
    if (
        not isinstance(name, str)
        or not name.strip()
        or name != name.strip()
        or name.startswith(".")
        or any(c in name for c in "/\\\x00")
        or len(name.encode("utf-8", "replace")) > NAME_BYTES
    ):
        raise InvalidValue(
            f"a file's name is a plain name without a folder, not hidden, at most "
            f"{NAME_BYTES} bytes: not {name!r}",
            {"field": field},
        )
    return name


class UserFiles:
    """The folder of the player's files; names in, real paths out."""

    def __init__(self, root: Path, limits: FilesConfig | None = None) -> None:
        self.root = root
        self.limits = limits or FilesConfig()

    def path(self, name: object, file_types: tuple[str, ...] = ()) -> Path:
        """The real path of the player's file ``name`` (``ir/cab.wav``), checked.

        Raises:
            InvalidValue: not a name of a file in the folder, in a folder that
                does not suit ``file_types``, or no such file.
        """
        if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
            raise InvalidValue(
                f"a file is named by its path in the player's folder, not {name!r}", {"file": name}
            )
        parts = PurePosixPath(name).parts
        if (
            name.startswith("/")
            or len(parts) != 2
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        ):
            raise InvalidValue(
                f"{name!r} is not a file of the player's folder (names look like 'ir/cab.wav')",
                {"file": name},
            )
        folders = folders_for(file_types)
        if parts[0] not in folders:
            raise InvalidValue(
                f"{name!r} is not a kind of file this plugin loads (it takes them from {', '.join(folders)})",
                {"file": name, "folders": list(folders)},
            )
        path = self.root / parts[0] / parts[1]
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise InvalidValue(f"there is no file {name!r} in the player's folder", {"file": name}) from None
        if not real.is_file() or real.parent != (self.root / parts[0]).resolve():
            raise InvalidValue(f"{name!r} is not a file of the player's folder", {"file": name})
        return real

    def _entry(self, name: object) -> tuple[str, str]:
        """The folder and the name in it of the player's file ``name``, checked by :meth:`path`
        (a link inside the folder is the link itself, not what it points at)."""
        self.path(name)
        folder, file = PurePosixPath(str(name)).parts
        return folder, file

    def add_name(self, name: object, new_name: object) -> str:
        """Give the player's file ``name`` (``ir/cab.wav``) a second name in its folder,
        ``new_name`` (``V30.wav``): the first step of a rename, after which both names are
        the same file (a hard link) until :meth:`delete` takes the old one away, so that a
        power cut in between loses neither. The new name (``ir/V30.wav``); durable.

        Raises:
            InvalidValue: ``name`` is not one of the player's files, or ``new_name`` is not a
                plain file name (no folder, not hidden); nothing changed.
            NameTaken: the folder has a file of that name already; nothing changed.
            StoreError: the disk refused; nothing changed.
        """
        folder, old = self._entry(name)
        new_name = plain_name(new_name, "data.new_name")
        renamed = f"{folder}/{new_name}"
        home = self.root / folder
        try:
            os.link(home / old, home / new_name, follow_symlinks=False)
            fsync_folder(home)
        except FileExistsError:
            raise NameTaken(f"{folder}/ has a file called {new_name!r} already", {"file": renamed}) from None
        except OSError as exc:
            raise StoreError(f"could not rename {name!r}: {exc.strerror}") from exc
        return renamed

    def delete(self, name: object) -> None:
        """Remove the player's file ``name``; durable once it returns.

        Raises:
            InvalidValue: not one of the player's files; nothing changed.
            StoreError: the disk refused.
        """
        folder, file = self._entry(name)
        try:
            (self.root / folder / file).unlink()
            fsync_folder(self.root / folder)
        except OSError as exc:
            raise StoreError(f"could not delete {name!r}: {exc.strerror}") from exc

    def listing(self) -> dict[str, list[str]]:
        """Every file, by folder, sorted (hidden and partial files left out)."""
        listed: dict[str, list[str]] = {}
        for kind in FILE_FOLDERS:
            folder = self.root / kind
            names = (
                sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
                if folder.is_dir()
                else []
            )
            listed[kind] = [f"{kind}/{n}" for n in names]
        return listed

    def usage(self) -> int:
        """Bytes the player's files take (each file once, however many names it has)."""
        seen: dict[tuple[int, int], int] = {}
        for kind in FILE_FOLDERS:
            folder = self.root / kind
            for entry in folder.iterdir() if folder.is_dir() else ():
                info = entry.lstat()
                if entry.is_file() and not entry.is_symlink():
                    seen[(info.st_dev, info.st_ino)] = info.st_size
        return sum(seen.values())

    def receive(
        self, name: object, folder: object, declared: int | None, unpack: Callable[[Path, int], list[str]]
    ) -> Incoming[list[str]]:
        """Start receiving the file ``name`` (``cab.wav``) into ``folder`` (None: by its
        extension), or an archive of files (``.zip``) to be unpacked by ``unpack(path, room)``.

        Raises:
            InvalidValue: a bad name or folder; NameTaken: the folder has that name already;
            TooLarge: ``declared`` bytes are over the size cap; NoSpace: over the quota or the
            card's free room. Nothing is written in any of these cases.
        """
        name = plain_name(name, "name")
        archive = name.lower().endswith(".zip") and folder is None
        if folder is None:
            folder = folder_of_name(name)
        if folder not in FILE_FOLDERS:
            raise InvalidValue(
                f"files go into one of {', '.join(FILE_FOLDERS)}, not {folder!r}", {"field": "folder"}
            )
        home = self.root if archive else self.root / str(folder)
        target = home / name
        if not archive and os.path.lexists(target):
            raise NameTaken(f"{folder}/ has a file called {name!r} already", {"file": f"{folder}/{name}"})
        try:
            home.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(home).free - CARD_RESERVE
        except OSError as exc:
            raise StoreError(f"the player's folder cannot take files: {exc.strerror}") from exc
        quota = self.limits.quota_bytes - self.usage()
        room, refusal = min(
            (
                self.limits.max_file_bytes,
                too_large(self.limits.max_file_bytes, "a file", "files.max_file_mb"),
            ),
            (quota, _folder_full(self.limits)),
            (free, _card_full),
            key=lambda pair: pair[0],
        )
        room = max(room, 0)
        if declared is not None and declared > room:
            raise refusal(declared)
        keep: Callable[[Path], list[str]]
        if archive:
            keep = lambda path: unpack(path, min(quota, free))  # noqa: E731
        else:
            keep = lambda path: [self._keep(path, target, f"{folder}/{name}")]  # noqa: E731
        return Incoming(home, room, refusal, keep)

    def _keep(self, path: Path, target: Path, name: str) -> str:
        try:
            os.link(path, target)
        except FileExistsError:
            raise NameTaken(f"there is a file called {name!r} already", {"file": name}) from None
        except OSError as exc:
            raise StoreError(f"could not keep {name!r}: {exc.strerror}") from exc
        fsync_folder(target.parent)
        return name



def remove_incoming(folder: Path) -> list[Path]:
    """Remove the temporaries under ``folder`` that a power cut or a crash left: of uploads,
    backups, restores and shared pedalboards, and the atomic writes of those (at start)."""
    if not folder.is_dir():
        return []
    left = [p for p in folder.rglob("*") if p.name.startswith((INCOMING, f".{INCOMING}")) and p.is_file()]
    for path in left:
        with contextlib.suppress(OSError):
            path.unlink()
    return left


class Incoming(Generic[T]):
    """One upload arriving: written to a hidden temporary beside where it goes, and given
    its place only once it is whole and on the card (:meth:`keep`, which hands it to
    ``keep``), or removed if anything goes wrong (:meth:`discard`), so that a cut-short
    upload never appears as a file. Blocking: call off the loop (:meth:`discard` is quick
    enough for a cancelled task's cleanup)."""

    def __init__(
        self,
        home: Path,
        room: int,
        refusal: Callable[[int], ApplianceError],
        keep: Callable[[Path], T],
    ) -> None:
        fd, path = tempfile.mkstemp(prefix=INCOMING, suffix=".part", dir=home)
        self.path = Path(path)
        self.handle = os.fdopen(fd, "wb")
        self.room = room
        self.refusal = refusal
        self._keep = keep
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``. Raises TooLarge or NoSpace past the room the upload has, or when
        the card fills; StoreError when it refuses."""
        self.size += len(chunk)
        if self.size > self.room:
            raise self.refusal(self.size)
        try:
            self.handle.write(chunk)
        except OSError as exc:
            raise _disk_error(exc) from exc

    def keep(self) -> T:
        """The upload is whole: on the card, then given its place; what that gave."""
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
        except OSError as exc:
            self.discard()
            raise _disk_error(exc) from exc
        try:
            return self._keep(self.path)
        finally:
            self.discard()

    def discard(self) -> None:
        """Forget the upload: its temporary goes."""
        with contextlib.suppress(OSError):
            self.handle.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def too_large(limit: int, what: str, setting: str) -> Callable[[int], ApplianceError]:
    """The refusal of an upload of ``what`` over ``limit`` bytes (set by ``setting``)."""
    return lambda size: TooLarge(
        f"{what} may be at most {limit >> 20} MB ({setting})", {"limit_bytes": limit}
    )


def _folder_full(limits: FilesConfig) -> Callable[[int], ApplianceError]:
    return lambda size: NoSpace(
        f"the player's files may take at most {limits.quota_mb} MB (files.quota_mb); "
        "delete some to make room",
        {"limit_bytes": limits.quota_bytes},
    )


def _card_full(size: int) -> ApplianceError:
    return NoSpace("the card is too full to take this file; delete some files to make room")


def _disk_error(exc: OSError) -> ApplianceError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _card_full(0)
    return StoreError(f"could not write an upload: {exc.strerror}")
