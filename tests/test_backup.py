"""Backups: the player's data into one archive and back, refused archives, restores cut short.

What a player would notice if these broke: a backup that lacks a pedalboard or
an IR, a restore that mixes the old and the new data after the power went, a
damaged or hostile archive that wipes or overwrites their data, a zip of IRs
that fills the card or lands files outside their folders.

The power cuts here are SIGKILLs of a child process: what it wrote reaches
the disk from the page cache anyway, so they test the order of the steps, not
the fsyncs (a real power cut needs a machine that loses its page cache, as
``tests/killloop.py`` says of the box's own kill test).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.core.board import BOARD_FORMAT
from appliance.core.controls import folder_of_name
from appliance.core.errors import InvalidValue, NameTaken, StoreError, TooLarge
from appliance.core.pedalboards import Pedalboard, Setlist, SetlistEntry, Snapshot
from appliance.frontends import midimap
from appliance.store import archives, backup
from appliance.store.archives import ArchiveLimits, unpack_files_zip
from appliance.store.backup import check_backup, make_backup, recover_restore, restore_backup
from appliance.store.boards import BoardStore
from appliance.store.files import write_atomic
from appliance.store.pedalboards import PedalboardStore
from appliance.store.userfiles import INCOMING

ROOT = Path(__file__).resolve().parent.parent
LIMITS = ArchiveLimits()
#: Rounds of the SIGKILL test, and where its seed comes from.
KILL_ROUNDS = 30
SEED_VARIABLE = "BACKUP_KILL_SEED"


# -- the player's data, made the way the stores make it ------------------------------------


def _board(gain: float, file: str | None = None) -> dict[str, Any]:
    """A board as :meth:`Board.to_dict` writes it: one track, a gain and a cabinet."""
    cabinet: dict[str, Any] = {
        "id": "plugin_2",
        "name": "Cab",
        "plugin": "cabinet",
        "uri": "http://gareus.org/oss/lv2/convoLV2#Mono",
        "bypass": False,
        "values": {},
    }
    if file:
        cabinet["files"] = {"ir": file}
    gain_plugin = {
        "id": "plugin_1",
        "name": "Gain",
        "plugin": "gain",
        "uri": "urn:gain",
        "bypass": False,
        "values": {"gain": gain},
    }
    return {
        "format": BOARD_FORMAT,
        "next_number": 3,
        "tracks": [{"id": "track_001", "chain": [gain_plugin, cabinet]}],
    }


def _mapping(number: int) -> dict[str, Any]:
    """A MIDI mapping as :class:`MidiService` writes it (through :func:`midimap.from_dict`)."""
    return midimap.from_dict(
        {
            "id": f"m{number}",
            "message": "cc",
            "number": number,
            "channel": 1,
            "action": "bypass",
            "plugin_id": "plugin_1",
        }
    ).to_dict()


def _player_data(data_dir: Path, variant: str = "a", file_bytes: int = 4096) -> None:
    """Fill ``data_dir`` as a box that has been played: the board (saved twice, so its last good
    copy is there), pedalboards (one with a name the store quotes), the setlist, MIDI mappings,
    files in every folder; and what is not the player's: the LV2 cache, temporaries, a hidden
    file, links."""
    rng = random.Random(variant)
    boards = BoardStore(data_dir)
    boards.save(_board(-3.0))
    boards.save(_board(-6.0 if variant == "a" else 2.5, "ir/cab 4x12.wav"))
    pedalboards = PedalboardStore(data_dir)
    names = ["Clean", "Lead / Solo?", "Ünïcode 100%"] if variant == "a" else ["Crunch", "Ambient"]
    for index, name in enumerate(names):
        pedalboard = Pedalboard(
            name,
            _board(float(index)),
            [
                Snapshot(
                    "verse", {"track_001": [{"plugin": "gain", "values": {"gain": 1.0}, "bypass": False}]}
                )
            ],
        )
        pedalboards.write(pedalboard)
        pedalboards.write(pedalboard)  # and its last good copy
    pedalboards.write_setlist(Setlist([SetlistEntry(n, None) for n in names], None))
    pedalboards.write_setlist(Setlist([SetlistEntry(n, None) for n in names], 0))
    mappings = [_mapping(n) for n in ((20, 21) if variant == "a" else (64,))]
    write_atomic(data_dir / "midi.json", json.dumps({"mappings": mappings}, indent=1) + "\n")
    files = data_dir / "files"
    player_files = {
        "a": ["ir/cab 4x12.wav", "ir/room.flac", "models/plexi.nam", "other/notes.txt"],
        "b": ["ir/v30.wav", "models/jcm800.nam", "models/aida.json"],
    }[variant]
    for name in player_files:
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        (files / name).write_bytes(rng.randbytes(file_bytes))
    for folder in ("ir", "models", "other"):
        (files / folder).mkdir(parents=True, exist_ok=True)
    # Not the player's:
    (data_dir / "lv2-scan.json").write_text('{"cache": true}')
    (data_dir / ".board.json.999.tmp").write_text("half a bo")
    (files / "ir" / ".DS_Store").write_bytes(b"\0" * 10)
    (files / "ir" / f".up.wav.{os.getpid()}.tmp").write_bytes(b"partial")
    secret = data_dir.parent / f"token-{variant}"
    secret.write_text("pairing token\n")
    (files / "other" / "token-link").symlink_to(secret)


def _tree(root: Path) -> dict[str, object]:
    """Every entry under ``root``: a file's bytes, a link's target, a folder as ``dir``."""
    found: dict[str, object] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = path.read_bytes()
    return found


def _player_part(tree: dict[str, object]) -> dict[str, object]:
    """The part of a tree a backup holds: the JSON files, the pedalboards, the player's files."""
    return {
        key: value
        for key, value in tree.items()
        if key in ("board.json", "setlist.json", "midi.json")
        or (
            key.startswith("pedalboards/")
            and key.endswith(".json")
            and not key.split("/")[-1].startswith(".")
        )
        or (
            key.startswith("files/")
            and key.count("/") == 2
            and not key.split("/")[-1].startswith(".")
            and isinstance(value, bytes)
        )
    }


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    _player_data(folder)
    return folder


@pytest.fixture
def other_backup(tmp_path: Path) -> Path:
    """A backup of another box's data (variant ``b``)."""
    other = tmp_path / "other"
    other.mkdir()
    _player_data(other, "b")
    make_backup(other, tmp_path / "other.zip")
    return tmp_path / "other.zip"


# -- making and restoring ------------------------------------------------------------------


def test_backup_holds_exactly_the_players_data(data_dir: Path, tmp_path: Path) -> None:
    """A backup holds the board, setlist, mappings, every pedalboard and file, and nothing else
    (no last good copies, cache, temporaries, hidden files, links, token)."""
    summary = make_backup(data_dir, tmp_path / "backup.zip")
    with zipfile.ZipFile(tmp_path / "backup.zip") as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        manifest = json.loads(archive.read("backup.json"))
    assert names[0] == "backup.json"
    assert sorted(names[1:]) == sorted(_player_part(_tree(data_dir)))
    assert manifest["format"] == "appliance-backup" and manifest["version"] == 1
    assert manifest["created"].endswith("+00:00")
    assert manifest["counts"] == {"board": 1, "setlist": 1, "midi": 1, "pedalboards": 3, "files": 4}
    assert summary.counts == manifest["counts"]
    assert summary.skipped == ()  # what is not the player's is not even mentioned
    assert summary.bytes == sum(
        len(v) for v in _player_part(_tree(data_dir)).values() if isinstance(v, bytes)
    )
    for info in infos:
        stored = info.filename.startswith("files/")
        assert info.compress_type == (zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED), info.filename
    assert not list(tmp_path.glob(".backup.zip.*"))


def test_round_trip_restores_identical_bytes(data_dir: Path, tmp_path: Path) -> None:
    """Made, the data wiped, restored: every pedalboard, file and setting is back byte for byte."""
    before = _tree(data_dir)
    make_backup(data_dir, tmp_path / "backup.zip")
    for name in ("board.json", "board.json.bak", "setlist.json", "setlist.json.bak", "midi.json"):
        (data_dir / name).unlink()
    shutil.rmtree(data_dir / "pedalboards")
    shutil.rmtree(data_dir / "files")
    summary = restore_backup(data_dir, tmp_path / "backup.zip", LIMITS)
    after = _tree(data_dir)
    assert _player_part(after) == _player_part(before)
    assert summary.counts["files"] == 4
    assert after["lv2-scan.json"] == before["lv2-scan.json"]
    assert not (data_dir / ".restore").exists()
    assert PedalboardStore(data_dir).read("Lead / Solo?").name == "Lead / Solo?"
    assert BoardStore(data_dir).load() == _board(-6.0, "ir/cab 4x12.wav")


def test_restore_leaves_exactly_the_backup(data_dir: Path, other_backup: Path) -> None:
    """Restoring over other data leaves exactly the backup's pedalboards and files (none of the
    old ones mixed in), and the LV2 cache untouched."""
    restore_backup(data_dir, other_backup, LIMITS)
    after = _tree(data_dir)
    expected = _player_part(_tree(other_backup.parent / "other"))
    assert _player_part(after) == expected
    assert after["lv2-scan.json"] == b'{"cache": true}'
    assert ".board.json.999.tmp" in after  # not the restore's to touch
    assert "board.json.bak" not in after  # the old board's last good copy went with it
    assert "setlist.json.bak" not in after
    assert PedalboardStore(data_dir).names() == ["Ambient", "Crunch"]


def test_damaged_pedalboard_goes_in_as_its_last_good_copy(data_dir: Path, tmp_path: Path) -> None:
    """A damaged pedalboard file does not spoil the backup: its last good copy goes in, as the
    box would load it, and the summary says so."""
    path = PedalboardStore(data_dir).path("Clean")
    good = path.with_name(path.name + ".bak").read_bytes()
    path.write_text('{"format": 1, "name": "Cle')
    summary = make_backup(data_dir, tmp_path / "backup.zip")
    with zipfile.ZipFile(tmp_path / "backup.zip") as archive:
        assert archive.read(f"pedalboards/{path.name}") == good
    assert any("Clean" in s for s in summary.skipped)
    check_backup(tmp_path / "backup.zip", LIMITS)


def test_failed_backup_leaves_no_archive(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup that fails half-way (the card full) leaves the earlier archive as it was and no
    half archive or temporary beside it."""
    target = tmp_path / "backup.zip"
    target.write_bytes(b"the earlier backup")
    real = backup._add_file
    calls = []

    def failing(archive: zipfile.ZipFile, member: str, path: Path) -> int:
        calls.append(member)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(archive, member, path)

    monkeypatch.setattr(backup, "_add_file", failing)
    with pytest.raises(StoreError, match="No space left"):
        make_backup(data_dir, target)
    assert target.read_bytes() == b"the earlier backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.zip", "data", "token-a"]


# -- refused archives ----------------------------------------------------------------------


def _members(archive: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(archive) as zipped:
        return [(info, zipped.read(info)) for info in zipped.infolist()]


def _write_zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name: some tests want one
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
            for info, data in members:
                zipped.writestr(info, data)
    return path


def _with(good: Path, out: Path, *extra: tuple[zipfile.ZipInfo | str, bytes], drop: str = "") -> Path:
    """The good backup, its manifest as it was, with ``extra`` members added and the members
    whose names start with ``drop`` left out."""
    members: list[tuple[zipfile.ZipInfo | str, bytes]] = [
        (i, d) for i, d in _members(good) if not (drop and i.filename.startswith(drop))
    ]
    return _write_zip(out, members + list(extra))


def _manifest(**fields: object) -> bytes:
    data = {"format": "appliance-backup", "version": 1, "created": "2024-01-01T00:00:00+00:00", "counts": {}}
    data.update(fields)
    return json.dumps(data).encode()


def _info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def _patched(good: Path, out: Path, find: bytes, replace: bytes) -> Path:
    data = good.read_bytes()
    assert data.count(find) >= 1
    out.write_bytes(data.replace(find, replace))
    return out


def _crc_broken(good: Path, out: Path) -> Path:
    """A stored member with one byte of its data changed (its CRC no longer matches)."""
    with zipfile.ZipFile(good) as zipped:
        info = zipped.getinfo("files/models/jcm800.nam")
        body = zipped.read(info)
    data = bytearray(good.read_bytes())
    at = bytes(data).index(body[:64]) + 100
    data[at] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


def _encrypted(good: Path, out: Path) -> Path:
    """A member marked encrypted (bit 0 of its flags, in its local and its central header)."""
    _with(good, out, ("files/other/secret.txt", b"x"))
    data = bytearray(out.read_bytes())
    local = bytes(data).index(b"files/other/secret.txt")
    central = bytes(data).index(b"files/other/secret.txt", local + 1)
    data[local - 30 + 6] |= 0x1
    data[central - 46 + 8] |= 0x1
    out.write_bytes(bytes(data))
    return out


BAD_PEDALBOARD = json.dumps({"format": 2, "name": "x", "board": {}}).encode()
BAD_SETLIST = json.dumps(
    {"format": 1, "entries": [{"pedalboard": "a", "snapshot": None}], "position": 5}
).encode()
BAD_MIDI = json.dumps(
    {"mappings": [{"id": "m", "message": "cc", "number": 1, "channel": 17, "action": "tuner"}]}
).encode()
BAD_BOARD = json.dumps({"format": 99, "tracks": []}).encode()

#: Refused archives: what makes one from the good backup, and a piece of the refusal's message.
REFUSED: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "not a zip": (lambda g, o: (o.write_bytes(b"PK\x03\x04 not really"), o)[1], "not a zip"),
    "truncated": (lambda g, o: (o.write_bytes(g.read_bytes()[: g.stat().st_size // 2]), o)[1], "not a zip"),
    "bad CRC": (_crc_broken, "files/models/jcm800.nam"),
    "no manifest": (lambda g, o: _write_zip(o, [(i, d) for i, d in _members(g)[1:]]), "backup.json: missing"),
    "wrong format": (
        lambda g, o: _write_zip(o, [("backup.json", _manifest(format="zip"))]),
        "not a manifest",
    ),
    "newer version": (lambda g, o: _write_zip(o, [("backup.json", _manifest(version=2))]), "newer box"),
    "bad version": (
        lambda g, o: _write_zip(o, [("backup.json", _manifest(version="1"))]),
        "no usable version",
    ),
    "manifest not JSON": (lambda g, o: _write_zip(o, [("backup.json", b"{")]), "backup.json: is not JSON"),
    "absolute": (lambda g, o: _with(g, o, ("/board.json", b"{}")), "/board.json: is an absolute path"),
    "dot dot": (lambda g, o: _with(g, o, ("files/ir/../../../evil.wav", b"x")), "leads out"),
    "backslash": (lambda g, o: _with(g, o, ("files\\ir\\evil.wav", b"x")), "backslash"),
    "NUL": (
        lambda g, o: _patched(_with(g, o, ("files/ir/evilXname.wav", b"x")), o, b"evilXname", b"evil\0name"),
        "NUL",
    ),
    "hidden file": (lambda g, o: _with(g, o, ("files/ir/.evil.wav", b"x")), "files/ir/.evil.wav: is hidden"),
    "hidden folder": (lambda g, o: _with(g, o, (".ssh/authorized_keys", b"x")), "is hidden"),
    "cache": (lambda g, o: _with(g, o, ("lv2-scan.json", b"{}")), "lv2-scan.json: is not part of a backup"),
    "last good copy": (lambda g, o: _with(g, o, ("board.json.bak", b"{}")), "board.json.bak: is not part"),
    "unknown folder": (
        lambda g, o: _with(g, o, ("files/presets/x.wav", b"x")),
        "files/presets/x.wav: is not part",
    ),
    "subfolder": (lambda g, o: _with(g, o, ("files/ir/sub/x.wav", b"x")), "files/ir/sub/x.wav: is not part"),
    "not a pedalboard file": (
        lambda g, o: _with(g, o, ("pedalboards/x.txt", b"x")),
        "pedalboards/x.txt: is not part",
    ),
    "long name": (
        lambda g, o: _with(g, o, ("files/ir/" + "x" * 252 + ".wav", b"x")),
        "longer than 255 bytes",
    ),
    "duplicate": (
        lambda g, o: _with(g, o, ("files/ir/v30.wav", b"again")),
        "files/ir/v30.wav: appears twice",
    ),
    "symlink": (
        lambda g, o: _with(g, o, (_info("files/ir/link.wav", stat.S_IFLNK | 0o777), b"/etc/passwd")),
        "symbolic link",
    ),
    "fifo": (
        lambda g, o: _with(g, o, (_info("files/ir/pipe.wav", stat.S_IFIFO | 0o644), b"")),
        "not a regular file",
    ),
    "encrypted": (_encrypted, "encrypted"),
    "JSON not parsing": (
        lambda g, o: _with(g, o, ("pedalboards/x.json", b"{not json")),
        "pedalboards/x.json: is not JSON",
    ),
    "pedalboard invalid": (
        lambda g, o: _with(g, o, ("pedalboards/x.json", BAD_PEDALBOARD)),
        "pedalboards/x.json: is not one the box can read",
    ),
    "setlist invalid": (
        lambda g, o: _with(g, o, ("setlist.json", BAD_SETLIST), drop="setlist.json"),
        "setlist.json: is not one",
    ),
    "midi invalid": (
        lambda g, o: _with(g, o, ("midi.json", BAD_MIDI), drop="midi.json"),
        "midi.json: is not one",
    ),
    "board invalid": (
        lambda g, o: _with(g, o, ("board.json", BAD_BOARD), drop="board.json"),
        "board.json: is not one",
    ),
    "counts differ": (lambda g, o: _with(g, o, drop="files/models/aida.json"), "backup.json: lists"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_archive_changes_nothing(
    case: str, data_dir: Path, other_backup: Path, tmp_path: Path
) -> None:
    """A damaged, foreign or hostile archive is refused, naming the member and why, and the
    player's data is left byte for byte as it was."""
    make, expected = REFUSED[case]
    archive = make(other_backup, tmp_path / "bad.zip")
    before = _tree(data_dir)
    with pytest.raises(InvalidValue) as refused:
        restore_backup(data_dir, archive, LIMITS)
    assert expected in str(refused.value), str(refused.value)
    assert _tree(data_dir) == before
    with pytest.raises(InvalidValue):
        check_backup(archive, LIMITS)


def test_too_many_members_refused(data_dir: Path, other_backup: Path) -> None:
    """An archive of more members than the cap is refused before anything is read or written."""
    before = _tree(data_dir)
    with pytest.raises(TooLarge, match="at most 5"):
        restore_backup(data_dir, other_backup, ArchiveLimits(max_files=5))
    assert _tree(data_dir) == before
    check_backup(other_backup, ArchiveLimits(max_files=9))  # 1 + board, setlist, midi, 2 + 3


def _bomb(path: Path, member: str, size: int, manifest: bool = True) -> Path:
    """A zip with one member of ``size`` zero bytes, deflated to almost nothing."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zipped:
        if manifest:
            zipped.writestr(
                "backup.json",
                _manifest(counts={"board": 0, "setlist": 0, "midi": 0, "pedalboards": 0, "files": 1}),
            )
        with zipped.open(member, "w") as sink:
            block = bytes(1 << 20)
            for _ in range(size >> 20):
                sink.write(block)
    return path


def test_zip_bomb_refused_without_writing_it(data_dir: Path, tmp_path: Path) -> None:
    """A small archive that unpacks to more than the cap is refused once the real bytes pass
    it, and nothing of it is written to the card."""
    archive = _bomb(tmp_path / "bomb.zip", "files/other/zeros.bin", 64 << 20)
    assert archive.stat().st_size < 1 << 20
    before = _tree(data_dir)
    with pytest.raises(
        TooLarge, match=re.escape("files/other/zeros.bin: takes the archive past 16777216 bytes")
    ):
        restore_backup(data_dir, archive, ArchiveLimits(max_bytes=16 << 20))
    assert _tree(data_dir) == before
    assert check_backup(archive, ArchiveLimits(max_bytes=64 << 20)).bytes == 64 << 20


def test_lying_sizes_do_not_pass(data_dir: Path, tmp_path: Path) -> None:
    """An archive whose headers claim small sizes for a large member is refused (the real bytes
    are not what the zip says), and nothing is written."""
    archive = _bomb(tmp_path / "bomb.zip", "files/other/zeros.bin", 8 << 20)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zipped:
        info = zipped.getinfo("files/other/zeros.bin")
    # Claim 1 KiB unpacked, in the local and the central header.
    real = (8 << 20).to_bytes(4, "little")
    assert data.count(real) == 2, info
    archive.write_bytes(bytes(data).replace(real, (1024).to_bytes(4, "little")))
    before = _tree(data_dir)
    with pytest.raises(InvalidValue, match=re.escape("files/other/zeros.bin")):
        restore_backup(data_dir, archive, ArchiveLimits(max_bytes=4 << 20))
    assert _tree(data_dir) == before
    with pytest.raises(InvalidValue, match=re.escape("files/other/zeros.bin")):
        check_backup(archive, LIMITS)


# -- restores cut short ----------------------------------------------------------------------


class _Cut(BaseException):
    """The process is gone: no more writes."""


@contextlib.contextmanager
def _cut_after(steps: int) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Every call that changes the disk (or makes it durable) after the first ``steps`` raises
    :class:`_Cut`, as if the power went there; the calls made are noted. fsync does nothing
    (the order of the steps is under test here, not the card)."""
    done: list[tuple[str, tuple[Any, ...]]] = []
    names = ("replace", "rename", "unlink", "rmdir", "mkdir", "link", "open", "fsync")
    real = {name: getattr(os, name) for name in names}

    def gate(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if len(done) >= steps:
                raise _Cut(name)
            done.append((name, args))
            return None if name == "fsync" else real[name](*args, **kwargs)

        return call

    with pytest.MonkeyPatch.context() as patch:
        for name in names:
            patch.setattr(os, name, gate(name))
        yield done


def _live(root: Path) -> dict[str, object]:
    """The tree without the restore's work folder."""
    return {k: v for k, v in _tree(root).items() if not k.startswith(".restore")}


def test_cut_at_every_step_leaves_old_or_new(data_dir: Path, other_backup: Path, tmp_path: Path) -> None:
    """Cut at any step of a restore (and again at any step of the recovery that follows), the
    next start finds all the old data if the cut came before the commit point, else all the
    backup's, never a mix."""
    template = tmp_path / "template"
    shutil.copytree(data_dir, template, symlinks=True)
    old = _tree(template)
    done_dir = tmp_path / "done"
    shutil.copytree(template, done_dir, symlinks=True)
    restore_backup(done_dir, other_backup, LIMITS)
    new = _tree(done_dir)
    assert new != old
    landed = {"before the commit": 0, "mid-swap": 0, "after the swap": 0}
    steps = 0
    while True:
        run = tmp_path / f"run{steps}"
        shutil.copytree(template, run, symlinks=True)
        finished = False
        with contextlib.suppress(_Cut), _cut_after(steps) as calls:
            restore_backup(run, other_backup, LIMITS)
            finished = True
        committed = any(
            name == "replace" and str(args[1]).endswith(".restore/commit") for name, args in calls
        )
        if (run / ".restore" / "commit").exists():
            landed["mid-swap"] += 1
            # The recovery cut too, at each step in turn, each from where the one before stopped.
            for again in range(500):
                with contextlib.suppress(_Cut), _cut_after(again):
                    recover_restore(run)
                    break
        elif not finished:
            landed["after the swap" if committed else "before the commit"] += 1
        said = recover_restore(run)
        assert recover_restore(run) is None
        after = _tree(run)
        if committed:
            assert after == new, f"cut after {steps} steps, committed"
        else:
            assert after == old, f"cut after {steps} steps, not committed"
            assert said is None or "as it was" in said
        shutil.rmtree(run)
        if finished:
            break
        steps += 1
    print(f"\n{steps} steps to a restore; cuts: {landed}")
    assert all(count > 5 for count in landed.values()), landed


CHILD = """
import sys
from pathlib import Path
from appliance.store.backup import ArchiveLimits, restore_backup
print("ready", flush=True)
restore_backup(Path(sys.argv[1]), Path(sys.argv[2]), ArchiveLimits())
print("done", flush=True)
"""


def _restore_in_child(data: Path, archive: Path, kill_after: float | None) -> float | None:
    """Run a restore in a child process, SIGKILLed ``kill_after`` seconds after it starts (None:
    let it finish); how long the restore took (None: killed)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), str(archive)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    start = time.monotonic()
    took = None
    if kill_after is None:
        assert child.stdout.readline().strip() == "done"
        took = time.monotonic() - start
        assert child.wait(timeout=60) == 0
    else:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=kill_after)
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    child.stdout.close()
    return took


def test_killed_restore_leaves_old_or_new(data_dir: Path, tmp_path: Path) -> None:
    """A box killed at a random instant of a restore (30 times) comes back with either all the
    old data or all the backup's, never a mix; once committed, always the backup's."""
    big = tmp_path / "big"
    big.mkdir()
    _player_data(big, "b", file_bytes=2 << 20)  # 6 MiB of files
    make_backup(big, tmp_path / "big.zip")
    old = _tree(data_dir)
    template = tmp_path / "template"
    shutil.copytree(data_dir, template, symlinks=True)
    durations = []
    for warm in ("cold", "warm"):  # the second, with the archive in the page cache, as the kills' are
        first = tmp_path / warm
        shutil.copytree(template, first, symlinks=True)
        durations.append(_restore_in_child(first, tmp_path / "big.zip", None))
    duration = durations[-1]
    assert duration is not None
    new = _tree(first)
    seed = int(os.environ.get(SEED_VARIABLE, random.randrange(1 << 30)))
    rng = random.Random(seed)
    landed = {
        "before it began": 0,
        "before the commit": 0,
        "mid-swap": 0,
        "after the swap": 0,
        "after it ended": 0,
    }
    for round_ in range(KILL_ROUNDS):
        run = tmp_path / f"run{round_}"
        shutil.copytree(template, run, symlinks=True)
        _restore_in_child(run, tmp_path / "big.zip", rng.uniform(0, duration * 1.2))
        work = run / ".restore"
        marker = (work / "commit").exists()
        live = _live(run)
        if marker:
            where = "mid-swap"
        elif work.exists():
            where = "after the swap" if live == new else "before the commit"
        else:
            where = "after it ended" if live == new else "before it began"
        landed[where] += 1
        recover_restore(run)
        after = _tree(run)
        why = f"round {round_}: killed {where} (seed {seed})"
        assert after in (old, new), why
        if marker:
            assert after == new, why
        else:
            assert after == live, why  # without the marker the recovery leaves the data alone
        shutil.rmtree(run)
    print(f"\nrestore {duration * 1000:.0f} ms; kills (seed {seed}, {SEED_VARIABLE}): {landed}")
    assert landed["before the commit"] > 0, landed


def test_recover_with_nothing_to_do(data_dir: Path) -> None:
    """A start with no restore under way changes nothing and logs nothing."""
    before = _tree(data_dir)
    assert recover_restore(data_dir) is None
    assert _tree(data_dir) == before


# -- a player's zip of files -----------------------------------------------------------------


@pytest.fixture
def files_root(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "files"
    (root / "ir").mkdir(parents=True)
    (root / "ir" / "taken.wav").write_bytes(b"the player's own")
    return root


def test_files_zip_lands_by_extension(files_root: Path, tmp_path: Path) -> None:
    """A zip of IRs and models puts each file in its folder under its own name, skipping
    macOS's litter, with no temporary left."""
    wav, nam = os.urandom(70000), os.urandom(5000)
    archive = _write_zip(
        tmp_path / "pack.zip",
        [
            ("Pack/", b""),
            ("Pack/IRs/Cab 4x12.WAV", wav),
            ("Pack/Amp.nam", nam),
            ("Pack/readme.txt", b"hello"),
            ("__MACOSX/Pack/._Amp.nam", b"fork"),
            ("Pack/.DS_Store", b"x"),
        ],
    )
    names = unpack_files_zip(archive, files_root, LIMITS)
    assert names == ["ir/Cab 4x12.WAV", "models/Amp.nam", "other/readme.txt"]
    assert (files_root / "ir" / "Cab 4x12.WAV").read_bytes() == wav
    assert (files_root / "models" / "Amp.nam").read_bytes() == nam
    assert (files_root / "other" / "readme.txt").read_bytes() == b"hello"
    assert sorted(p.name for p in (files_root / "ir").iterdir()) == ["Cab 4x12.WAV", "taken.wav"]
    assert not [p for p in files_root.rglob(".*")]


def _damaged_files_zip(path: Path) -> Path:
    """A zip whose second member has one byte of its data changed (its CRC no longer matches)."""
    body = os.urandom(5000)
    _write_zip(path, [("first.wav", b"fine")])
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as zipped:
        zipped.writestr(zipfile.ZipInfo("second.wav"), body)
    data = bytearray(path.read_bytes())
    data[bytes(data).index(body) + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


#: Refused zips of files: their members (or a maker) and a piece of the refusal's message.
FILES_REFUSED: dict[str, tuple[Callable[[Path], Path], type[Exception], str]] = {
    "traversal": (
        lambda p: _write_zip(p, [("ok.wav", b"x"), ("../../etc/evil.wav", b"x")]),
        InvalidValue,
        "leads out",
    ),
    "absolute": (
        lambda p: _write_zip(p, [("ok.wav", b"x"), ("/etc/evil.wav", b"x")]),
        InvalidValue,
        "absolute",
    ),
    "backslash": (
        lambda p: _write_zip(p, [("ok.wav", b"x"), ("..\\evil.wav", b"x")]),
        InvalidValue,
        "backslash",
    ),
    "symlink": (
        lambda p: _write_zip(p, [("ok.wav", b"x"), (_info("cab.wav", stat.S_IFLNK | 0o777), b"/etc/passwd")]),
        InvalidValue,
        "symbolic link",
    ),
    "taken": (lambda p: _write_zip(p, [("ok.wav", b"x"), ("IRs/taken.wav", b"x")]), NameTaken, "taken.wav"),
    "twice": (
        lambda p: _write_zip(p, [("a/cab.wav", b"x"), ("b/cab.wav", b"y")]),
        InvalidValue,
        "would be ir/cab.wav",
    ),
    "long name": (
        lambda p: _write_zip(p, [("ok.wav", b"x"), ("x" * 256 + ".wav", b"x")]),
        InvalidValue,
        "cannot name a player's file",
    ),
    "spaces around": (
        lambda p: _write_zip(p, [("ok.wav", b"x"), ("dir/ cab.wav", b"x")]),
        InvalidValue,
        "cannot name a player's file",
    ),
    "bomb": (
        lambda p: _bomb(p, "zeros.wav", 64 << 20, manifest=False),
        TooLarge,
        "zeros.wav: takes the archive past",
    ),
    "second member a bomb": (
        lambda p: _write_zip(p, [("ok.wav", b"x"), ("zeros.wav", bytes(20 << 20))]),
        TooLarge,
        "zeros.wav: takes the archive past",
    ),
    "too many": (
        lambda p: _write_zip(p, [(f"{n}.wav", b"x") for n in range(11)]),
        TooLarge,
        "at most 10",
    ),
    "empty": (lambda p: _write_zip(p, [("__MACOSX/._x", b"x")]), InvalidValue, "holds no files"),
    "not a zip": (lambda p: (p.write_bytes(b"RIFF....WAVE"), p)[1], InvalidValue, "not a zip"),
    "damaged member": (_damaged_files_zip, InvalidValue, "second.wav: is damaged"),
}


@pytest.mark.parametrize("case", list(FILES_REFUSED))
def test_refused_files_zip_leaves_nothing(
    case: str, files_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zip of files that leads out, holds links, a bomb, a damaged member, names taken or no
    player could give, is refused naming the member before a byte of it is written."""
    make, error, expected = FILES_REFUSED[case]
    archive = make(tmp_path / "pack.zip")
    before = _tree(tmp_path / "data")
    written = []
    monkeypatch.setattr(archives, "place_files", lambda *args: written.append(args))
    with pytest.raises(error) as refused:
        unpack_files_zip(archive, files_root, ArchiveLimits(max_files=10, max_bytes=16 << 20))
    assert expected in str(refused.value), str(refused.value)
    assert not written
    assert _tree(tmp_path / "data") == before


def test_files_zip_all_or_nothing(files_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the card refuses one file of a zip, the files of it already placed are removed: the
    player's folders are as before."""
    archive = _write_zip(tmp_path / "pack.zip", [("a.wav", b"a"), ("b.nam", b"b"), ("c.wav", b"c")])
    before = _tree(tmp_path / "data")
    real = os.link
    calls = []

    def link(src: Any, dst: Any, **kwargs: Any) -> None:
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(StoreError, match="No space left"):
        unpack_files_zip(archive, files_root, LIMITS)
    monkeypatch.undo()
    after = _tree(tmp_path / "data")
    assert {k: v for k, v in after.items() if v != "dir"} == {k: v for k, v in before.items() if v != "dir"}


def test_files_zip_cut_shows_no_partial_file(files_root: Path, tmp_path: Path) -> None:
    """Cut at any step of unpacking a zip, the player's folders show only whole files of it
    (or none); what is left half-written is hidden and named for the start-up sweep."""
    members = {"a.wav": os.urandom(3 << 20), "b.nam": os.urandom(1000), "c.txt": b"c"}
    archive = _write_zip(tmp_path / "pack.zip", list(members.items()))
    whole = {f"{folder_of_name(n)}/{n}": d for n, d in members.items()}
    template = tmp_path / "template"
    shutil.copytree(files_root, template)
    steps = 0
    while True:
        shutil.rmtree(files_root)
        shutil.copytree(template, files_root)
        finished = False
        with contextlib.suppress(_Cut), _cut_after(steps):
            unpack_files_zip(archive, files_root, LIMITS)
            finished = True
        for path in files_root.rglob("*"):
            name = str(path.relative_to(files_root))
            if path.is_dir() or name == "ir/taken.wav":
                continue
            if path.name.startswith("."):
                assert path.name.startswith(INCOMING), name
            else:
                assert path.read_bytes() == whole[name], f"{name} after {steps} steps"
        if finished:
            break
        steps += 1
    assert steps > 10
