"""Backups of the player's data, and restoring one.

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

The safety rules every zip the box takes follows are in :mod:`.archives`.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.board import Board
from ..core.controls import FILE_FOLDERS, PluginType
from ..core.errors import InvalidValue, ProtocolError, StoreError
from ..core.pedalboards import Pedalboard, Setlist
from ..frontends import midimap
from .archives import (
    CHUNK,
    ArchiveLimits,
    Budget,
    check_name,
    check_room,
    chunks,
    counted,
    is_folder,
    open_zip,
    read_small,
    refusal,
    write_member,
)
from .files import fsync_folder, write_atomic
from .userfiles import NAME_BYTES

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
            check_name(member)
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
                check_name(member)
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
    with open_zip(archive) as zipped:
        infos = counted(zipped, limits)
        manifest = _manifest(zipped, infos, limits)
        members: list[tuple[zipfile.ZipInfo, str]] = []
        seen: set[str] = set()
        for info in infos:
            if is_folder(info):
                check_name(info.filename.rstrip("/"), info)
                continue
            name = check_name(info.filename, info)
            if name in seen:
                raise refusal(name, "appears twice in the archive")
            seen.add(name)
            if name != MANIFEST:
                members.append((info, _place(name)))
        counts = {"board": 0, "setlist": 0, "midi": 0, "pedalboards": 0, "files": 0}
        budget = Budget(limits)
        for info, place in members:
            if place == "files":
                for _chunk in chunks(zipped, info, budget):
                    pass
            else:
                _validate_json(info.filename, read_small(zipped, info, budget, limits))
            counts[place] += 1
    promised = manifest.get("counts")
    if promised != counts:
        raise refusal(MANIFEST, f"lists {promised!r} but the archive holds {counts!r}")
    return BackupSummary(counts, budget.used, str(manifest.get("created", "")))


def _manifest(zipped: zipfile.ZipFile, infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> dict[str, Any]:
    """The checked manifest: this format, a version this box reads."""
    found = [info for info in infos if info.filename == MANIFEST]
    if not found:
        raise refusal(MANIFEST, "missing: this is not a backup of the box")
    if len(found) > 1:
        raise refusal(MANIFEST, "appears twice in the archive")
    check_name(MANIFEST, found[0])
    try:
        manifest = json.loads(read_small(zipped, found[0], Budget(limits), limits))
    except ValueError as exc:
        raise refusal(MANIFEST, f"is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise refusal(MANIFEST, f"is not a manifest of format {FORMAT!r}: this is not a backup of the box")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise refusal(MANIFEST, f"has no usable version ({version!r})")
    if version > VERSION:
        raise refusal(
            MANIFEST, f"is version {version}, made by a newer box; this one reads up to version {VERSION}"
        )
    return manifest


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
            raise refusal(name, "names no pedalboard")
        return "pedalboards"
    if len(parts) == 3 and parts[0] == "files" and parts[1] in FILE_FOLDERS:
        if len(parts[2].encode("utf-8", "replace")) > NAME_BYTES:
            raise refusal(name, f"has a name longer than {NAME_BYTES} bytes")
        return "files"
    raise refusal(
        name,
        "is not part of a backup (board.json, setlist.json, midi.json, pedalboards/<name>.json, "
        f"files/<{'|'.join(FILE_FOLDERS)}>/<name>)",
    )


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
        raise refusal(member, f"is not JSON ({exc})") from exc
    try:
        _VALIDATORS[_place(member)](data)
    except (ValueError, TypeError, KeyError, AttributeError, ProtocolError) as exc:
        raise refusal(member, f"is not one the box can read ({exc})") from exc


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
        check_room(data_dir, summary.bytes)
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


def _unpack_backup(archive: Path, new: Path, limits: ArchiveLimits) -> list[str]:
    """Unpack the (checked) backup into ``new``, each file and folder fsynced, with the same
    caps as the check; the entries of :data:`SWAPPED` it made there."""
    folders = [new, new / "pedalboards", new / "files", *(new / "files" / f for f in FILE_FOLDERS)]
    for folder in folders:
        folder.mkdir()
    budget = Budget(limits)
    with open_zip(archive) as zipped:
        for info in counted(zipped, limits):
            if is_folder(info) or info.filename == MANIFEST:
                continue
            name = check_name(info.filename, info)
            _place(name)
            write_member(zipped, info, budget, new / name)
    for folder in reversed(folders):
        fsync_folder(folder)
    return [name for name in SWAPPED if (new / name).exists()]


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
