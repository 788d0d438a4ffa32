"""The zips the box takes from a player: a backup, a pedalboard shared from another box,
a pack of IRs; the safety rules they all follow, and unpacking a pack into the player's files.

Every member is checked before a byte of it is written: its name (no absolute path, no
``..``, no backslash, no NUL, nothing hidden), its kind (a regular file or a folder: no
link, no device, no encryption), the count of members, and the real unpacked size,
counted while decompressing and never taken from the zip's own headers (a zip bomb stops
at the cap, :class:`ArchiveLimits`). Everything here blocks: call it off the loop.

A player's **zip of files** (:func:`unpack_files_zip`) lands each file in the folder its
extension calls for, all or nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.controls import folder_of_name
from ..core.errors import InvalidValue, NameTaken, NoSpace, ProtocolError, StoreError, TooLarge
from .files import fsync_folder
from .userfiles import INCOMING, plain_name

log = logging.getLogger("appliance.store.archives")

#: How much is read, decompressed or copied at once, bytes.
CHUNK = 1 << 20
#: Room kept free on the card beyond what a restore or an upload unpacks, bytes.
SPARE_BYTES = 16 << 20
#: Folders of a zip that only hold an operating system's litter (macOS's resource forks).
LITTER_FOLDERS = ("__MACOSX",)


@dataclass(frozen=True)
class ArchiveLimits:
    """How much an archive may unpack to. The caps count real bytes, read while decompressing.

    Attributes:
        max_files: members in the archive, folders included (10 000: far more pedalboards and
            files than a player keeps, far fewer than a zip of tiny members needs to hurt).
        max_bytes: the members' unpacked total (2 GiB: a card's worth of IRs and models,
            within what a Pi's data partition holds twice, as a restore needs).
        max_json_bytes: one JSON member, read into memory to be validated (16 MiB: a
            pedalboard is a few KiB).
    """

    max_files: int = 10_000
    max_bytes: int = 2 << 30
    max_json_bytes: int = 16 << 20


class Budget:
    """The unpacked bytes an archive may still produce (:attr:`ArchiveLimits.max_bytes`)."""

    def __init__(self, limits: ArchiveLimits) -> None:
        self.limit = limits.max_bytes
        self.used = 0

    def take(self, member: str, count: int) -> None:
        self.used += count
        if self.used > self.limit:
            raise TooLarge(
                f"{member}: takes the archive past {self.limit} bytes unpacked (the most it may hold)",
                {"member": member, "limit_bytes": self.limit},
            )


def refusal(member: str, reason: str) -> InvalidValue:
    return InvalidValue(f"{member}: {reason}", {"member": member})


def open_zip(archive: Path) -> zipfile.ZipFile:
    """The archive, open; refused when it is not a zip (a truncated one is not)."""
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OverflowError) as exc:
        raise InvalidValue(f"{archive.name}: not a zip archive, or a damaged one ({exc})") from exc
    except OSError as exc:
        raise StoreError(f"cannot read {archive}: {exc.strerror}") from exc


def counted(zipped: zipfile.ZipFile, limits: ArchiveLimits) -> list[zipfile.ZipInfo]:
    """Its members, refused past :attr:`ArchiveLimits.max_files`."""
    infos = zipped.infolist()
    if len(infos) > limits.max_files:
        raise TooLarge(
            f"the archive has {len(infos)} members; at most {limits.max_files} are taken",
            {"members": len(infos)},
        )
    return infos


def is_folder(info: zipfile.ZipInfo) -> bool:
    """A folder member (ignored: folders come with the files in them)."""
    check_kind(info)
    return info.is_dir() or stat.S_ISDIR(info.external_attr >> 16)


def check_kind(info: zipfile.ZipInfo) -> None:
    """Refuse links and anything else that is not a regular file or a folder, and encryption.

    A zip keeps a member's Unix mode in the high half of ``external_attr``; zips made
    elsewhere leave it 0 (a regular file).
    """
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise refusal(info.orig_filename, "is a symbolic link; the box takes none")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise refusal(info.orig_filename, "is not a regular file")
    if info.flag_bits & 0x1:
        raise refusal(info.orig_filename, "is encrypted")


def check_name(name: str, info: zipfile.ZipInfo | None = None) -> str:
    """A member's name, refused when it could land outside its folder or be hidden.

    Returns:
        The name.
    """
    original = info.orig_filename if info is not None else name
    if "\x00" in original:
        raise refusal(repr(original), "has a NUL character in its name")
    if "\\" in name:
        raise refusal(name, "has a backslash in its name")
    if name.startswith("/"):
        raise refusal(name, "is an absolute path")
    parts = name.split("/")
    if ".." in parts:
        raise refusal(name, "leads out of its folder (..)")
    if any(not part for part in parts):
        raise refusal(name, "has an empty part in its name")
    if any(part.startswith(".") for part in parts):
        raise refusal(name, "is hidden, or in a hidden folder; the player's data never is")
    return name


def chunks(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget) -> Iterator[bytes]:
    """The member's bytes as they decompress, each chunk counted against ``budget`` before it
    is given out; the member's CRC is checked at its end (zipfile's own check)."""
    try:
        with zipped.open(info) as member:
            while True:
                try:
                    chunk = member.read(CHUNK)
                except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
                    raise refusal(info.filename, f"is damaged ({exc})") from exc
                if not chunk:
                    return
                budget.take(info.filename, len(chunk))
                yield chunk
    except ProtocolError:
        raise
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError) as exc:
        raise refusal(info.filename, f"cannot be read ({exc})") from exc
    except OSError as exc:
        raise StoreError(f"cannot read the archive: {exc.strerror or exc}") from exc


def read_small(
    zipped: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget, limits: ArchiveLimits
) -> bytes:
    """A JSON member's bytes, refused past :attr:`ArchiveLimits.max_json_bytes`."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks(zipped, info, budget):
        size += len(chunk)
        if size > limits.max_json_bytes:
            raise refusal(info.filename, f"is larger than {limits.max_json_bytes} bytes, too large for JSON")
        parts.append(chunk)
    return b"".join(parts)


def check_room(folder: Path, needed: int) -> None:
    """Refuse before writing when the card has not room for ``needed`` bytes more."""
    free = shutil.disk_usage(folder).free
    if free < needed + SPARE_BYTES:
        raise NoSpace(
            f"the card has {free >> 20} MB free; {(needed + SPARE_BYTES) >> 20} MB are needed",
            {"free_bytes": free},
        )


def write_member(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, budget: Budget, path: Path) -> None:
    """Write one member to a new file ``path`` (never over one, never through a link), fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as sink:
        for chunk in chunks(zipped, info, budget):
            sink.write(chunk)
        sink.flush()
        os.fsync(sink.fileno())


def unpack_files_zip(archive: Path, files_root: Path, limits: ArchiveLimits) -> list[str]:
    """Add the files of the player's zip ``archive`` to their files under ``files_root``.

    Each regular member goes to the folder its extension calls for
    (:func:`folder_of_name`, as a single upload's) under its base name (the zip's
    folders dropped). Hidden members and macOS's ``__MACOSX`` litter are passed over. The
    whole zip is checked first (names, kinds, the real unpacked sizes against ``limits``,
    every CRC), then each file is written to a hidden temporary in its folder, fsynced and
    linked under its name, so a partial file never appears. All or nothing: when one fails,
    the ones already placed are removed. Blocking: call off the loop.

    Returns:
        The new files' names (``ir/cab.wav``), in the zip's order.

    Raises:
        InvalidValue: a member is refused (traversal, a link, too large in all, a name no
            player's file may have, two of the same name) or the zip is damaged; nothing
            was written.
        NameTaken: a folder has a file of a member's name already; nothing was written.
        StoreError: the card is full or refused a write; nothing is left of the zip.
    """
    with open_zip(archive) as zipped:
        plan: list[tuple[zipfile.ZipInfo, str, str]] = []
        taken: dict[str, str] = {}
        for info in counted(zipped, limits):
            name = info.filename.rstrip("/")
            if is_folder(info):
                _check_traversal(name, info)
                continue
            parts = _check_traversal(name, info)
            if parts[0] in LITTER_FOLDERS or any(p.startswith(".") for p in parts):
                continue
            base = _plain_name(info.filename, parts[-1])
            folder = folder_of_name(base)
            placed = f"{folder}/{base}"
            if placed in taken:
                raise refusal(info.filename, f"would be {placed}, as {taken[placed]} would")
            taken[placed] = info.filename
            if os.path.lexists(files_root / folder / base):
                raise NameTaken(f"{folder}/ has a file called {base!r} already", {"file": placed})
            plan.append((info, folder, base))
        if not plan:
            raise InvalidValue(f"{archive.name}: the zip holds no files", {"member": None})
        budget = Budget(limits)
        for info, _folder, _base in plan:
            for _chunk in chunks(zipped, info, budget):
                pass
        try:
            check_room(_existing(files_root), budget.used)
            return place_files(zipped, plan, files_root, limits)
        except OSError as exc:
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot unpack {archive.name}: {exc.strerror or exc}") from exc


def _existing(path: Path) -> Path:
    """``path``, or its nearest folder that exists (where its files will go)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _check_traversal(name: str, info: zipfile.ZipInfo) -> list[str]:
    """A files zip member's name split in parts, refused when it leads anywhere odd."""
    if "\x00" in info.orig_filename:
        raise refusal(repr(info.orig_filename), "has a NUL character in its name")
    if "\\" in name:
        raise refusal(name, "has a backslash in its name")
    if name.startswith("/"):
        raise refusal(name, "is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refusal(name, "leads out of its folder (..)")
    if not parts:
        raise refusal(name, "has no name")
    return parts


def _plain_name(member: str, base: str) -> str:
    """A member's base name, if the player's files may have it (:func:`plain_name`)."""
    try:
        return plain_name(base, "name")
    except InvalidValue as exc:
        raise refusal(member, f"cannot name a player's file ({exc})") from None


def place_files(
    zipped: zipfile.ZipFile,
    plan: list[tuple[zipfile.ZipInfo, str, str]],
    files_root: Path,
    limits: ArchiveLimits,
) -> list[str]:
    """Write each planned member under its name, all or nothing."""
    budget = Budget(limits)
    placed: list[Path] = []
    tmp: Path | None = None
    try:
        for index, (info, folder, base) in enumerate(plan):
            home = files_root / folder
            if not home.is_dir():
                home.mkdir(parents=True, exist_ok=True)
                fsync_folder(home.parent)
            tmp = home / f"{INCOMING}unzip-{os.getpid()}-{index}.part"  # swept at start if cut
            write_member(zipped, info, budget, tmp)
            try:
                os.link(tmp, home / base, follow_symlinks=False)
            except FileExistsError:
                raise NameTaken(
                    f"{folder}/ has a file called {base!r} already", {"file": f"{folder}/{base}"}
                ) from None
            placed.append(home / base)
            tmp.unlink()
            tmp = None
            fsync_folder(home)
    except BaseException:
        for path in [*placed, *([tmp] if tmp is not None else [])]:
            with contextlib.suppress(OSError):
                path.unlink()
        for home in {p.parent for p in placed}:
            with contextlib.suppress(OSError):
                fsync_folder(home)
        raise
    names = [f"{folder}/{base}" for _info, folder, base in plan]
    log.debug("files: unpacked %d file(s) from a zip", len(names))
    return names
