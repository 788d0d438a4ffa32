"""One pedalboard as one file, to play it on another box: the pedalboard and the player's
files it loads (its cabinet IRs, its amp models)::

    pedalboard.json          {"format": "appliance-pedalboard", "version": 1, "pedalboard": {…}}
    files/<folder>/<name>    each of the player's files its plugins load

An import is checked whole before anything is written (:mod:`.archives`' rules, the
pedalboard read as the box reads its own, every plugin it uses looked up on this box),
then the files go in first (each whole before it takes its name) and the pedalboard last,
so a cut in between leaves files no pedalboard names yet, never a pedalboard without its
files. Nothing on the box is replaced: a pedalboard or a file whose name is taken (by a
different file) comes in under the next free name, ``Gig (2)``, ``cab (2).wav``, and the
pedalboard names the file as it came in. A file the box has already, byte for byte, is
used as it is. Everything here blocks: call it off the loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..core.board import rename_file_in
from ..core.controls import FILE_FOLDERS
from ..core.errors import InvalidValue, PluginNotAllowed, StoreError
from ..core.pedalboards import Pedalboard
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
    place_files,
    read_small,
    refusal,
)
from .files import fsync_folder
from .pedalboards import PedalboardStore
from .userfiles import UserFiles, plain_name

#: What ``pedalboard.json`` says it is.
FORMAT = "appliance-pedalboard"
#: The version this box writes, and the newest it reads.
VERSION = 1
DOCUMENT = "pedalboard.json"


@dataclass
class Imported:
    """What an import brought.

    Attributes:
        name: the pedalboard's name on this box.
        files: the player's files it added (``ir/cab.wav``).
        reused: files this box had already, the same bytes.
        renamed: files that came in under another name (a different file had theirs).
    """

    name: str
    files: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)


def files_named(board: Mapping[str, Any]) -> list[str]:
    """The player's files a board (:meth:`Board.to_dict` form) names, sorted."""
    named: set[str] = set()
    for track in board.get("tracks", []):
        for saved in track.get("chain", []):
            named.update(str(f) for f in (saved.get("files") or {}).values() if f)
    return sorted(named)


def export_pedalboard(pedalboards: PedalboardStore, files: UserFiles, name: str, target: Path) -> list[str]:
    """Write the pedalboard ``name`` and the player's files it loads to the zip ``target``
    (a temporary renamed over it when whole). The files it names that are not on the box
    (left out: the other box loads the pedalboard without them and says which).

    Raises:
        UnknownPedalboard: no such pedalboard. StoreError: the card refused.
    """
    pedalboard = pedalboards.read(name)
    missing: list[str] = []
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(temporary, "w") as zipped:
            document = {"format": FORMAT, "version": VERSION, "pedalboard": pedalboard.to_dict()}
            zipped.writestr(DOCUMENT, json.dumps(document, indent=1), zipfile.ZIP_DEFLATED)
            for named in files_named(pedalboard.board):
                try:
                    path = files.path(named)
                except InvalidValue:
                    missing.append(named)
                    continue
                zipped.write(path, f"files/{named}", zipfile.ZIP_STORED)
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, StoreError):
            raise StoreError(f"cannot write the shared pedalboard: {exc.strerror or exc}") from exc
        raise
    return missing


def import_pedalboard(
    archive: Path,
    pedalboards: PedalboardStore,
    files: UserFiles,
    installed: Callable[[str], object | None],
    limits: ArchiveLimits,
) -> Imported:
    """Add the shared pedalboard ``archive`` and its files to this box.

    Args:
        installed: looks a plugin up by catalog key or URI (the catalog's ``lookup``).

    Raises:
        InvalidValue: not a shared pedalboard, or an unsafe or damaged one (the member
            and why). TooLarge, NoSpace: over ``limits`` or the card's room.
        PluginNotAllowed: it uses plugins this box lacks (``details.missing``: name and URI
            of each). StoreError: the card refused. In every case nothing was kept.
    """
    with open_zip(archive) as zipped:
        document, members = _members(zipped, limits)
        pedalboard = _pedalboard(read_small(zipped, document, Budget(limits), limits))
        _check_plugins(pedalboard, installed)
        budget = Budget(limits)
        digests = {named: _digest(chunks(zipped, info, budget)) for named, info in members.items()}
        check_room(files.root if files.root.exists() else files.root.parent, budget.used)
        imported = Imported(pedalboard.name)
        plan: list[tuple[zipfile.ZipInfo, str, str]] = []
        for named, info in members.items():
            folder, base = PurePosixPath(named).parts
            kept, there = _free_name(files.root / folder, base, digests[named])
            if kept != base:
                imported.renamed[named] = f"{folder}/{kept}"
                rename_file_in(pedalboard.board, named, f"{folder}/{kept}")
            if there:
                imported.reused.append(f"{folder}/{kept}")
            else:
                plan.append((info, folder, kept))
        imported.files = place_files(zipped, plan, files.root, limits) if plan else []
    try:
        pedalboard.name = imported.name = _free_pedalboard_name(pedalboards, pedalboard.name)
        pedalboards.create(pedalboard)
    except BaseException:
        for named in imported.files:
            with contextlib.suppress(OSError):
                (files.root / named).unlink()
                fsync_folder((files.root / named).parent)
        raise
    return imported


def _members(
    zipped: zipfile.ZipFile, limits: ArchiveLimits
) -> tuple[zipfile.ZipInfo, dict[str, zipfile.ZipInfo]]:
    """The pedalboard's document and its files (by name), every member's name and kind checked."""
    document: zipfile.ZipInfo | None = None
    members: dict[str, zipfile.ZipInfo] = {}
    for info in counted(zipped, limits):
        name = check_name(info.filename.rstrip("/"), info)
        if is_folder(info):
            continue
        parts = name.split("/")
        if name == DOCUMENT and document is None:
            document = info
        elif len(parts) == 3 and parts[0] == "files" and parts[1] in FILE_FOLDERS and parts[2] not in members:
            try:
                plain_name(parts[2], "member")
            except InvalidValue as exc:
                raise refusal(name, f"cannot name a player's file ({exc})") from None
            members[f"{parts[1]}/{parts[2]}"] = info
        else:
            raise refusal(
                name,
                "is not part of a shared pedalboard (one pedalboard.json, "
                f"files/<{'|'.join(FILE_FOLDERS)}>/<name>), or appears twice",
            )
    if document is None:
        raise refusal(DOCUMENT, "missing: this is not a pedalboard shared by a box")
    return document, members


def _pedalboard(text: bytes) -> Pedalboard:
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a shared pedalboard of format {FORMAT!r}")
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION:
            raise ValueError(f"version {version!r}; this box reads up to version {VERSION}")
        pedalboard = Pedalboard.from_dict(data["pedalboard"])
        if not isinstance(pedalboard.name, str) or not pedalboard.name.strip():
            raise ValueError("the pedalboard has no name")
        return pedalboard
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise refusal(DOCUMENT, f"is not one the box can read ({exc})") from exc


def _check_plugins(pedalboard: Pedalboard, installed: Callable[[str], object | None]) -> None:
    missing: list[dict[str, str]] = []
    for track in pedalboard.board.get("tracks", []):
        for saved in track.get("chain", []):
            key, uri = str(saved.get("plugin", "")), str(saved.get("uri", ""))
            if installed(key) is None and installed(uri) is None:
                entry = {"name": str(saved.get("name") or key), "uri": uri}
                if entry not in missing:
                    missing.append(entry)
    if missing:
        names = ", ".join(f"{m['name']} ({m['uri']})" for m in missing)
        raise PluginNotAllowed(
            f"this box lacks {names}; install it, then import the pedalboard again", {"missing": missing}
        )


def _digest(stream: Any) -> str:
    """The SHA-256 of a stream of chunks (the member read whole: its CRC and size checked)."""
    digest = hashlib.sha256()
    for chunk in stream:
        digest.update(chunk)
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _free_name(folder: Path, base: str, digest: str) -> tuple[str, bool]:
    """The name a file of ``digest`` goes by in ``folder``, and whether it is there already:
    ``base``, or ``stem (2).ext``, ``(3)``… past the names taken by different files."""
    stem, dot, extension = base.rpartition(".")
    if not stem:
        stem, dot, extension = base, "", ""
    candidate, number = base, 1
    while os.path.lexists(folder / candidate):
        if (folder / candidate).is_file() and _file_digest(folder / candidate) == digest:
            return candidate, True
        number += 1
        candidate = f"{stem} ({number}){dot}{extension}"
    return candidate, False


def _free_pedalboard_name(pedalboards: PedalboardStore, name: str) -> str:
    candidate, number = name, 1
    while pedalboards.exists(candidate):
        number += 1
        candidate = f"{name} ({number})"
    return candidate
