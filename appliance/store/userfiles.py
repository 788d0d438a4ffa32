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

import os
from pathlib import Path, PurePosixPath

from ..core.controls import FILE_FOLDERS, folders_for
from ..core.errors import InvalidValue, NameTaken, StoreError
from .files import fsync_folder

#: The longest name a file may be given (ext4's limit, in bytes of UTF-8).
NAME_BYTES = 255


class UserFiles:
    """The folder of the player's files; names in, real paths out."""

    def __init__(self, root: Path) -> None:
        self.root = root

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
        if (
            not isinstance(new_name, str)
            or not new_name.strip()
            or new_name != new_name.strip()
            or new_name.startswith(".")
            or any(c in new_name for c in "/\\\x00")
            or len(new_name.encode("utf-8", "replace")) > NAME_BYTES
        ):
            raise InvalidValue(
                f"a file's new name is a plain name without a folder, not hidden, at most "
                f"{NAME_BYTES} bytes: not {new_name!r}",
                {"field": "data.new_name"},
            )
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
