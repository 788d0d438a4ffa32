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

from pathlib import Path, PurePosixPath

from ..core.errors import InvalidValue

#: The folders, by kind.
KINDS = ("ir", "models", "other")
#: Which folder a plugin's ``mod:fileTypes`` point at (MOD's names).
FOLDER_OF_TYPE = {"ir": "ir", "cabsim": "ir", "nam": "models", "aidadspmodel": "models"}


class UserFiles:
    """The folder of the player's files; names in, real paths out."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folders_for(self, file_types: tuple[str, ...]) -> tuple[str, ...]:
        """The folders whose files suit a parameter with these ``mod:fileTypes`` (none: every folder)."""
        wanted = {FOLDER_OF_TYPE.get(t, "other") for t in file_types}
        return tuple(k for k in KINDS if k in wanted) if wanted else KINDS

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
        folders = self.folders_for(file_types)
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

    def listing(self) -> dict[str, list[str]]:
        """Every file, by folder, sorted (hidden and partial files left out)."""
        listed: dict[str, list[str]] = {}
        for kind in KINDS:
            folder = self.root / kind
            names = (
                sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
                if folder.is_dir()
                else []
            )
            listed[kind] = [f"{kind}/{n}" for n in names]
        return listed
