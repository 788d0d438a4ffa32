"""Backups of the player's data, restoring one, and the zips of files a player uploads.

A **backup** is one zip archive of everything the player made under the data
folder, and nothing else::

    backup.json                  the manifest, first: format, version, when, counts
    board.json                   the board (deflated, as every JSON member)
    setlist.json                 the setlist
    midi.json                    the MIDI mappings
    pedalboards/<name>.json      each pedalboard, its name as the store quotes it
    files/<folder>/<name>        the player's files (stored: the Pi's CPU has better to do)

Never in one: the last good copies (``*.bak``), the LV2 scan cache, temporary
files, anything hidden, symbolic links, the pairing token (kept elsewhere).

An archive is checked whole (:func:`check_backup`) before anything is
replaced: every member's name, kind and real unpacked size (counted while
decompressing, never taken from the zip's own headers: a zip bomb stops at the
cap), every JSON member parsed and validated by the code that reads it on the
box. A **restore** is then a journaled swap (:func:`restore_backup`), so that a
power cut at any instant leaves either the whole old data or the whole new::

    check ─▶ unpack to .restore/new ─▶ write .restore/commit ─▶ swap ─▶ remove commit ─▶ remove .restore
    ╰───── cut: no marker ─────────╯    (the commit point)      ╰ marker ╯          ╰── no marker ──╯
     start-up removes .restore,                                  start-up          start-up removes
     the old data stays                                          finishes it       .restore, the new stays

The swap moves each top entry (:data:`SWAPPED`) of the data folder into
``.restore/old/`` and the backup's one into its place; the marker lists which
entries the backup has, so that rerunning it after a cut anywhere, any number
of times, ends in the same state. Entries not in :data:`SWAPPED` (the LV2 scan
cache, a board set aside) are left alone.

A player's **zip of files** (:func:`unpack_files_zip`) follows the same safety
rules and lands each file in the folder its extension calls for, all or
nothing.

Everything here blocks (file I/O, fsync, decompression): call it off the loop,
from a worker thread, one at a time, while nothing else writes the data folder
(the board's saver stopped, uploads refused). After a restore the box must read
its data again (restart the service): what it holds in memory is the old data.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import stat
import time
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.board import Board
from ..core.controls import FILE_FOLDERS, PluginType, folder_of_name
from ..core.errors import InvalidValue, NameTaken, NoSpace, ProtocolError, StoreError, TooLarge
from ..core.pedalboards import Pedalboard, Setlist
from ..frontends import midimap
from .files import fsync_folder, write_atomic
from .userfiles import INCOMING, NAME_BYTES, plain_name

log = logging.getLogger("appliance.store.backup")

#: What the manifest's ``format`` says.
FORMAT = "appliance-backup"
#: The archive version this box writes, and the newest it reads.
VERSION = 1
#: The manifest member, the archive's first.
MANIFEST = "backup.json"
#: The JSON files at the top of the data folder that a backup holds.
TOP_FILES = ("board.json", "setlist.json", "midi.json")
#: The top entries of the data folder a restore replaces; anything else there stays. The last
#: good copies go too (a backup has none): left, a damaged new file would load the old copy.
SWAPPED = (
    "board.json",
    "board.json.bak",
    "setlist.json",
    "setlist.json.bak",
    "midi.json",
    "pedalboards",
    "files",
)
#: The restore's work folder in the data folder (hidden: never a player's).
RESTORE_DIR = ".restore"
#: The commit marker in the work folder: once it exists, the restore goes forward.
COMMIT = "commit"
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


@dataclass(frozen=True)
class BackupSummary:
    """What an archive holds (or what went into one).

    Attributes:
        counts: ``board``, ``setlist``, ``midi`` (0 or 1), ``pedalboards`` and ``files``.
        bytes: the members' unpacked total, the manifest left out.
        created: when the backup was made (UTC, ISO 8601).
        skipped: what :func:`make_backup` left out and why, one sentence each (a file that
            could not be restored: a damaged pedalboard without a good last copy, a name
            no box accepts).
    """

    counts: dict[str, int]
    bytes: int
    created: str
    skipped: tuple[str, ...] = field(default=())


# -- making a backup ------------------------------------------------------------------


def make_backup(data_dir: Path, target: Path) -> BackupSummary:
    """Write a backup of the player's data in ``data_dir`` to ``target``.

    JSON files are validated as :func:`check_backup` will (a damaged pedalboard or board goes
    in as its last good copy, as the box would load it, or is left out and said so in
    ``skipped``), so that what is written is an archive the box restores. The archive is
    written to a hidden temporary beside ``target``, fsynced and renamed: a cut never leaves
    half an archive under ``target``. Blocking: call off the loop.

    Raises:
        StoreError: a file could not be read, or the archive could not be written; ``target``
            is as it was and the temporary is removed.
    """
    skipped: list[str] = []
    documents: list[tuple[str, bytes]] = []
    for name in TOP_FILES:
        text = _good_json(data_dir / name, name, [data_dir / f"{name}.bak"], skipped)
        if text is not None:
            documents.append((name, text))
    for path in _entries(data_dir / "pedalboards"):
        member = f"pedalboards/{path.name}"
        if not path.name.endswith(".json"):
            continue  # the last good copies, anything else the store does not read
        try:
            _check_name(member)
            _place(member)
        except InvalidValue as exc:
            skipped.append(str(exc))
            continue
        text = _good_json(path, member, [path.with_name(path.name + ".bak")], skipped)
        if text is not None:
            documents.append((member, text))
    player_files: list[tuple[str, Path]] = []
    for folder in FILE_FOLDERS:
        for path in _entries(data_dir / "files" / folder):
            member = f"files/{folder}/{path.name}"
            try:
                _check_name(member)
                _place(member)
            except InvalidValue as exc:
                skipped.append(f"{exc}; left out of the backup")
                continue
            player_files.append((member, path))
    counts = {
        "board": int(any(m == "board.json" for m, _ in documents)),
        "setlist": int(any(m == "setlist.json" for m, _ in documents)),
        "midi": int(any(m == "midi.json" for m, _ in documents)),
        "pedalboards": sum(m.startswith("pedalboards/") for m, _ in documents),
        "files": len(player_files),
    }
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    manifest = {"format": FORMAT, "version": VERSION, "created": created, "counts": counts}
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    total = 0
    try:
        with open(tmp, "wb") as raw:
            with zipfile.ZipFile(raw, "w") as archive:
                archive.writestr(
                    _member_info(MANIFEST, time.time(), zipfile.ZIP_DEFLATED),
                    json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                )
                for member, text in documents:
                    archive.writestr(_member_info(member, time.time(), zipfile.ZIP_DEFLATED), text)
                    total += len(text)
                for member, path in player_files:
                    total += _add_file(archive, member, path)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
        fsync_folder(target.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(f"cannot write the backup {target}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    for sentence in skipped:
        log.warning("backup: %s", sentence)
    log.info("backup: wrote %s (%s, %d bytes)", target, counts, total)
    return BackupSummary(counts, total, created, tuple(skipped))


def _entries(folder: Path) -> list[Path]:
    """The regular, not hidden files of ``folder`` (links never), sorted; none if it is missing."""
    try:
        listed = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot read {folder}: {exc.strerror}") from exc
    return [
        Path(entry.path)
        for entry in listed
        if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False)
    ]


def _good_json(path: Path, member: str, fallbacks: list[Path], skipped: list[str]) -> bytes | None:
    """The bytes of the first of ``path`` and its ``fallbacks`` that validates as ``member``;
    None (said in ``skipped``) when none does, or there is no such file."""
    for candidate in (path, *fallbacks):
        try:
            if not stat.S_ISREG(os.lstat(candidate).st_mode):
                continue
            text = candidate.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot read {candidate}: {exc.strerror}") from exc
        try:
            _validate_json(member, text)
        except InvalidValue as exc:
            log.error("backup: %s", exc)
            continue
        if candidate != path:
            skipped.append(f"{member} is missing or damaged; its last good copy went into the backup")
        return text
    if path.exists():
        skipped.append(f"{member} is damaged and has no good last copy; left out of the backup")
    return None


def _member_info(member: str, mtime: float, compression: int) -> zipfile.ZipInfo:
    """A regular file member (mode 0644), dated ``mtime`` (the zip format starts in 1980)."""
    date = time.localtime(max(mtime, 315532800 + 86400))[:6]
    info = zipfile.ZipInfo(member, date_time=date)
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = compression
    return info


def _add_file(archive: zipfile.ZipFile, member: str, path: Path) -> int:
    """Copy the player's file ``path`` into ``archive``, stored; its length. A link put there
    since the listing is not followed (``O_NOFOLLOW``)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as source:
        status = os.fstat(source.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise OSError(f"{path} is no longer a regular file")
        info = _member_info(member, status.st_mtime, zipfile.ZIP_STORED)
        info.file_size = status.st_size  # lets zipfile choose ZIP64 for a file past 2 GiB
        copied = 0
        with archive.open(info, "w") as sink:
            while chunk := source.read(CHUNK):
                sink.write(chunk)
                copied += len(chunk)
        return copied


# -- checking one ---------------------------------------------------------------------


def check_backup(archive: Path, limits: ArchiveLimits) -> BackupSummary:
    """Check the whole backup ``archive``: what :func:`restore_backup` would restore.

    Every member is read to its end (its CRC checked, its real size counted against
    ``limits``), every JSON member parsed and validated by the code that reads it on the
    box. Nothing is written anywhere. Blocking: call off the loop.

    Raises:
        InvalidValue: not an archive this box restores; the message names the member and
            what is wrong with it (``details``: ``member``, where there is one).
        StoreError: the archive could not be read from the card.
    """
    with _open_zip(archive) as zipped:
        infos = _counted(zipped, limits)
        manifest = _manifest(zipped, infos, limits)
        members: list[tuple[zipfile.ZipInfo, str]] = []
        seen: set[str] = set()
        for info in infos:
            if _is_folder(info):
                _check_name(info.filename.rstrip("/"), info)
                continue
            name = _check_name(info.filename, info)
            if name in seen:
                raise _refusal(name, "appears twice in the archive")
            seen.add(name)
            if name != MANIFEST:
                members.append((info, _place(name)))
        counts = {"board": 0, "setlist": 0, "midi": 0, "pedalboards": 0, "files": 0}
        budget = _Budget(limits)
        for info, place in members:
            if place == "files":
                for _chunk in _chunks(zipped, info, budget):
                    pass
            else:
                _validate_json(info.filename, _read_small(zipped, info, budget, limits))
            counts[place] += 1
    promised = manifest.get("counts")
    if promised != counts:
        raise _refusal(MANIFEST, f"lists {promised!r} but the archive holds {counts!r}")
    return BackupSummary(counts, budget.used, str(manifest.get("created", "")))


class _Budget:
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


def _refusal(member: str, reason: str) -> InvalidValue:
    return InvalidValue(f"{member}: {reason}", {"member": member})


def _open_zip(archive: Path) -> zipfile.ZipFile:
    """The archive, open; refused when it is not a zip (a truncated one is not)."""
    try:
        return zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OverflowError) as exc:
        raise InvalidValue(f"{archive.name}: not a zip archive, or a damaged one ({exc})") from exc
    except OSError as exc:
        raise StoreError(f"cannot read {archive}: {exc.strerror}") from exc


def _counted(zipped: zipfile.ZipFile, limits: ArchiveLimits) -> list[zipfile.ZipInfo]:
    """Its members, refused past :attr:`ArchiveLimits.max_files`."""
    infos = zipped.infolist()
    if len(infos) > limits.max_files:
        raise TooLarge(
            f"the archive has {len(infos)} members; at most {limits.max_files} are taken",
            {"members": len(infos)},
        )
    return infos


def _manifest(zipped: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> dict[str, Any]:
    """The checked manifest: this format, a version this box reads."""
    found = [info for info in infos if info.filename == MANIFEST]
    if not found:
        raise _refusal(MANIFEST, "missing: this is not a backup of the box")
    if len(found) > 1:
        raise _refusal(MANIFEST, "appears twice in the archive")
    _check_name(MANIFEST, found[0])
    try:
        manifest = json.loads(_read_small(zipped, found[0], _Budget(limits), limits))
    except ValueError as exc:
        raise _refusal(MANIFEST, f"is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refusal(MANIFEST, f"is not a manifest of format {FORMAT!r}: this is not a backup of the box")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _refusal(MANIFEST, f"has no usable version ({version!r})")
    if version > VERSION:
        raise _refusal(
            MANIFEST, f"is version {version}, made by a newer box; this one reads up to version {VERSION}"
        )
    return manifest


def _is_folder(info: zipfile.ZipInfo) -> bool:
    """A folder member (ignored: folders come with the files in them)."""
    _check_kind(info)
    return info.is_dir() or stat.S_ISDIR(info.external_attr >> 16)


def _check_kind(info: zipfile.ZipInfo) -> None:
    """Refuse links and anything else that is not a regular file or a folder, and encryption.

    A zip keeps a member's Unix mode in the high half of ``external_attr``; zips made
    elsewhere leave it 0 (a regular file).
    """
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise _refusal(info.orig_filename, "is a symbolic link; the box takes none")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _refusal(info.orig_filename, "is not a regular file")
    if info.flag_bits & 0x1:
        raise _refusal(info.orig_filename, "is encrypted")


def _check_name(name: str, info: zipfile.ZipInfo | None = None) -> str:
    """A member's name, refused when it could land outside its folder or be hidden.

    Returns:
        The name.
    """
    original = info.orig_filename if info is not None else name
    if "\x00" in original:
        raise _refusal(repr(original), "has a NUL character in its name")
    if "\\" in name:
        raise _refusal(name, "has a backslash in its name")
    if name.startswith("/"):
        raise _refusal(name, "is an absolute path")
    parts = name.split("/")
    if ".." in parts:
        raise _refusal(name, "leads out of its folder (..)")
    if any(not part for part in parts):
        raise _refusal(name, "has an empty part in its name")
    if any(part.startswith(".") for part in parts):
        raise _refusal(name, "is hidden, or in a hidden folder; the player's data never is")
    return name


def _place(name: str) -> str:
    """Which part of the player's data member ``name`` is: its count's key in the manifest.

    Raises:
        InvalidValue: not a place a backup holds.
    """
    parts = name.split("/")
    if name == "board.json":
        return "board"
    if name == "setlist.json":
        return "setlist"
    if name == "midi.json":
        return "midi"
    if len(parts) == 2 and parts[0] == "pedalboards" and parts[1].endswith(".json"):
        if not urllib.parse.unquote(parts[1][: -len(".json")]).strip():
            raise _refusal(name, "names no pedalboard")
        return "pedalboards"
    if len(parts) == 3 and parts[0] == "files" and parts[1] in FILE_FOLDERS:
        if len(parts[2].encode("utf-8", "replace")) > NAME_BYTES:
            raise _refusal(name, f"has a name longer than {NAME_BYTES} bytes")
        return "files"
    raise _refusal(
        name,
        "is not part of a backup (board.json, setlist.json, midi.json, pedalboards/<name>.json, "
        f"files/<{'|'.join(FILE_FOLDERS)}>/<name>)",
    )


def _chunks(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> Iterator[bytes]:
    """The member's bytes as they decompress, each chunk counted against ``budget`` before it
    is given out; the member's CRC is checked at its end (zipfile's own check)."""
    try:
        with zipped.open(info) as member:
            while True:
                try:
                    chunk = member.read(CHUNK)
                except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
                    raise _refusal(info.filename, f"is damaged ({exc})") from exc
                if not chunk:
                    return
                budget.take(info.filename, len(chunk))
                yield chunk
    except ProtocolError:
        raise
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError) as exc:
        raise _refusal(info.filename, f"cannot be read ({exc})") from exc
    except OSError as exc:
        raise StoreError(f"cannot read the archive: {exc.strerror or exc}") from exc


def _read_small(
    zipped: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget, limits: ArchiveLimits
) -> bytes:
    """A JSON member's bytes, refused past :attr:`ArchiveLimits.max_json_bytes`."""
    parts: list[bytes] = []
    size = 0
    for chunk in _chunks(zipped, info, budget):
        size += len(chunk)
        if size > limits.max_json_bytes:
            raise _refusal(info.filename, f"is larger than {limits.max_json_bytes} bytes, too large for JSON")
        parts.append(chunk)
    return b"".join(parts)


# -- validating the JSON files, with the code that reads them on the box ----------------


class _NoPlugins:
    """A catalog without plugins: :meth:`Board.restore` keeps every plugin as saved (dormant),
    so that it checks the board's shape without needing the box's plugins."""

    def lookup(self, key: str) -> PluginType | None:
        return None


def _board(data: Any) -> None:
    """As :meth:`appliance.app.Appliance.start` reads it: :meth:`Board.restore`."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    tracks = data.get("tracks", [])
    ids = [t["id"] for t in tracks if isinstance(t, dict) and isinstance(t.get("id"), str)]
    Board(ids).restore(data, _NoPlugins())


def _setlist(data: Any) -> None:
    """As :meth:`PedalboardStore.read_setlist` reads it: :meth:`Setlist.parse`."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    Setlist.parse(data.get("entries"), data.get("position"))


def _midi(data: Any) -> None:
    """As :class:`appliance.frontends.midi.MidiService` reads it: each mapping through
    :func:`midimap.from_dict` (the service leaves a bad one out; a backup may not have one)."""
    if not isinstance(data, dict) or not isinstance(data.get("mappings", []), list):
        raise ValueError("not an object with a list of mappings")
    for index, entry in enumerate(data.get("mappings", [])):
        try:
            midimap.from_dict(entry)
        except InvalidValue as exc:
            raise ValueError(f"mapping {index}: {exc}") from exc


def _pedalboard(data: Any) -> None:
    """As :meth:`PedalboardStore.read` reads it: :meth:`Pedalboard.from_dict`."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    Pedalboard.from_dict(data)


_VALIDATORS: dict[str, Callable[[Any], None]] = {
    "board": _board,
    "setlist": _setlist,
    "midi": _midi,
    "pedalboards": _pedalboard,
}


def _validate_json(member: str, text: bytes) -> None:
    """Refuse a JSON member that does not parse, or that the box would not read."""
    try:
        data = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError included
        raise _refusal(member, f"is not JSON ({exc})") from exc
    try:
        _VALIDATORS[_place(member)](data)
    except (ValueError, TypeError, KeyError, AttributeError, ProtocolError) as exc:
        raise _refusal(member, f"is not one the box can read ({exc})") from exc


# -- restoring one --------------------------------------------------------------------


def restore_backup(data_dir: Path, archive: Path, limits: ArchiveLimits) -> BackupSummary:
    """Replace the player's data in ``data_dir`` with the backup ``archive``, whole:
    :func:`stage_restore`, then :func:`finish_restore`. A cut anywhere leaves either the old
    data or the new; :func:`recover_restore` at start-up tidies up. Blocking: call off the
    loop, while nothing else writes ``data_dir``.

    Raises:
        InvalidValue, TooLarge: the archive is refused (see :func:`check_backup`); nothing
            changed.
        NoSpace, StoreError: the card is too full or refused a write; before the commit
            point nothing changed, after it the next :func:`recover_restore` finishes.
    """
    summary = stage_restore(data_dir, archive, limits)
    finish_restore(data_dir)
    log.info("backup: restored %s (%s, %d bytes)", archive.name, summary.counts, summary.bytes)
    return summary


def stage_restore(data_dir: Path, archive: Path, limits: ArchiveLimits) -> BackupSummary:
    """Check the backup ``archive`` whole, unpack it beside the player's data and commit it.

    The archive is checked first (:func:`check_backup`); when it is refused nothing has
    changed. Then it is unpacked into ``.restore/new`` (every file and folder fsynced) and
    the commit marker is written: the commit point. From there the backup is the player's
    data: :func:`finish_restore` (or :func:`recover_restore` at the next start, which the
    box uses so that nothing running writes the data while it is swapped) puts it in place.
    Entries of ``data_dir`` not in :data:`SWAPPED` are never touched. Blocking: call off
    the loop.

    Raises:
        InvalidValue, TooLarge: the archive is refused; nothing changed.
        NoSpace, StoreError: the card is too full or refused a write; nothing changed.
    """
    summary = check_backup(archive, limits)
    recover_restore(data_dir)  # an earlier restore cut short: finished or undone first
    work = data_dir / RESTORE_DIR
    marker = work / COMMIT
    try:
        _check_room(data_dir, summary.bytes)
        work.mkdir()
        fsync_folder(data_dir)
        present = _unpack_backup(archive, work / "new", limits)
        fsync_folder(work)
        write_atomic(marker, json.dumps({"entries": present}) + "\n")
    except BaseException as exc:
        if not marker.exists():
            with contextlib.suppress(OSError):
                _remove(work)
                fsync_folder(data_dir)
        if isinstance(exc, OSError) and not isinstance(exc, StoreError):
            raise StoreError(f"cannot restore the backup: {exc.strerror or exc}") from exc
        raise
    return summary


def _check_room(folder: Path, needed: int) -> None:
    """Refuse before writing when the card has not room for ``needed`` bytes more."""
    free = shutil.disk_usage(folder).free
    if free < needed + SPARE_BYTES:
        raise NoSpace(
            f"the card has {free >> 20} MB free; {(needed + SPARE_BYTES) >> 20} MB are needed",
            {"free_bytes": free},
        )


def _unpack_backup(archive: Path, new: Path, limits: ArchiveLimits) -> list[str]:
    """Unpack the (checked) backup into ``new``, each file and folder fsynced, with the same
    caps as the check; the entries of :data:`SWAPPED` it made there."""
    folders = [new, new / "pedalboards", new / "files", *(new / "files" / f for f in FILE_FOLDERS)]
    for folder in folders:
        folder.mkdir()
    budget = _Budget(limits)
    with _open_zip(archive) as zipped:
        for info in _counted(zipped, limits):
            if _is_folder(info) or info.filename == MANIFEST:
                continue
            name = _check_name(info.filename, info)
            _place(name)
            _write_member(zipped, info, budget, new / name)
    for folder in reversed(folders):
        fsync_folder(folder)
    return [name for name in SWAPPED if (new / name).exists()]


def _write_member(zipped: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget, path: Path) -> None:
    """Write one member to a new file ``path`` (never over one, never through a link), fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as sink:
        for chunk in _chunks(zipped, info, budget):
            sink.write(chunk)
        sink.flush()
        os.fsync(sink.fileno())


def finish_restore(data_dir: Path) -> None:
    """Swap the committed restore in ``data_dir/.restore`` into place, then remove it.

    For each entry of :data:`SWAPPED`: the live one goes into ``.restore/old``, and the
    backup's, if it has one, into its place (``os.replace``, the data folder fsynced after
    each). Idempotent: cut anywhere, it can run again any number of times (the marker says
    which entries the backup has: an entry it has and ``new`` no longer holds is in place).
    Blocking: call off the loop.

    Raises:
        StoreError: the marker is unreadable, or the card refused a rename or a removal;
            run it again (the box does, at its next start).
    """
    work = data_dir / RESTORE_DIR
    new, old, marker = work / "new", work / "old", work / COMMIT
    try:
        entries = _committed(marker)
        if not old.is_dir():
            old.mkdir()
            fsync_folder(work)
        for name in SWAPPED:
            live = data_dir / name
            if name in entries and not os.path.lexists(new / name):
                continue  # in place already
            if os.path.lexists(live):
                if os.path.lexists(old / name):
                    _remove(old / name)  # left by a writer that came back meanwhile: the old data
                os.replace(live, old / name)
                fsync_folder(data_dir)
                fsync_folder(old)
            if name in entries:
                os.replace(new / name, live)
                fsync_folder(data_dir)
                fsync_folder(new)
        marker.unlink()
        fsync_folder(work)
        _remove(work)
        fsync_folder(data_dir)
    except OSError as exc:
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"cannot finish restoring the backup: {exc.strerror or exc}") from exc


def _committed(marker: Path) -> list[str]:
    """The entries of :data:`SWAPPED` the committed backup has, from its marker."""
    try:
        entries = json.loads(marker.read_text(encoding="utf-8"))["entries"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"the restore's marker {marker} is unreadable ({exc})") from exc
    if not isinstance(entries, list) or not set(entries) <= set(SWAPPED):
        raise StoreError(f"the restore's marker {marker} lists {entries!r}")
    return [str(e) for e in entries]


def recover_restore(data_dir: Path) -> str | None:
    """At start-up, before anything reads ``data_dir``: end a restore that was cut short.

    Committed (the marker is there): it is finished. Not committed: its work folder is
    removed and the old data stays. Blocking: call off the loop.

    Returns:
        A sentence for the log, or None when there was nothing to do.

    Raises:
        StoreError: the card refused; nothing is lost, the next start tries again.
    """
    work = data_dir / RESTORE_DIR
    if not os.path.lexists(work):
        return None
    if (work / COMMIT).exists():
        finish_restore(data_dir)
        return "swapped in the committed backup: the player's data is the backup's now"
    try:
        _remove(work)
        fsync_folder(data_dir)
    except OSError as exc:
        raise StoreError(f"cannot remove the unfinished restore {work}: {exc.strerror or exc}") from exc
    return "removed a restore that was cut short before it was committed: the data is as it was"


def _remove(path: Path) -> None:
    """Remove a file, a link or a whole folder; nothing if it is not there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# -- a player's zip of files ----------------------------------------------------------


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
    with _open_zip(archive) as zipped:
        plan: list[tuple[zipfile.ZipInfo, str, str]] = []
        taken: dict[str, str] = {}
        for info in _counted(zipped, limits):
            name = info.filename.rstrip("/")
            if _is_folder(info):
                _check_traversal(name, info)
                continue
            parts = _check_traversal(name, info)
            if parts[0] in LITTER_FOLDERS or any(p.startswith(".") for p in parts):
                continue
            base = _plain_name(info.filename, parts[-1])
            folder = folder_of_name(base)
            placed = f"{folder}/{base}"
            if placed in taken:
                raise _refusal(info.filename, f"would be {placed}, as {taken[placed]} would")
            taken[placed] = info.filename
            if os.path.lexists(files_root / folder / base):
                raise NameTaken(f"{folder}/ has a file called {base!r} already", {"file": placed})
            plan.append((info, folder, base))
        if not plan:
            raise InvalidValue(f"{archive.name}: the zip holds no files", {"member": None})
        budget = _Budget(limits)
        for info, _folder, _base in plan:
            for _chunk in _chunks(zipped, info, budget):
                pass
        try:
            _check_room(_existing(files_root), budget.used)
            return _place_files(zipped, plan, files_root, limits)
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
        raise _refusal(repr(info.orig_filename), "has a NUL character in its name")
    if "\\" in name:
        raise _refusal(name, "has a backslash in its name")
    if name.startswith("/"):
        raise _refusal(name, "is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refusal(name, "leads out of its folder (..)")
    if not parts:
        raise _refusal(name, "has no name")
    return parts


def _plain_name(member: str, base: str) -> str:
    """A member's base name, if the player's files may have it (:func:`plain_name`)."""
    try:
        return plain_name(base, "name")
    except InvalidValue as exc:
        raise _refusal(member, f"cannot name a player's file ({exc})") from None


def _place_files(
    zipped: zipfile.ZipFile,
    plan: list[tuple[zipfile.ZipInfo, str, str]],
    files_root: Path,
    limits: ArchiveLimits,
) -> list[str]:
    """Write each planned member under its name, all or nothing."""
    budget = _Budget(limits)
    placed: list[Path] = []
    tmp: Path | None = None
    try:
        for index, (info, folder, base) in enumerate(plan):
            home = files_root / folder
            if not home.is_dir():
                home.mkdir(parents=True, exist_ok=True)
                fsync_folder(home.parent)
            tmp = home / f"{INCOMING}unzip-{os.getpid()}-{index}.part"  # swept at start if cut
            _write_member(zipped, info, budget, tmp)
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
