"""Pedalboards, their snapshots, and the setlist: what they are.

A **pedalboard** is a named board (every track's chain with its values and
bypass, in :meth:`Board.to_dict` form) with up to :data:`MAX_SNAPSHOTS`
**snapshots**: named sets of values and bypass states for its plugins, kept
per chain position so that they do not depend on plugin ids (a loaded
pedalboard's plugins get fresh ids, see :mod:`appliance.control.library`). The
**setlist** is an ordered list of pedalboards, each optionally with a
snapshot, and the position the player is at.

On disk they are :mod:`appliance.store.pedalboards`'s. Pure: no I/O here.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .board import Board, ParameterPlan
from .errors import InvalidMessage, InvalidValue, UnknownSnapshot

PEDALBOARD_FORMAT = 1
SETLIST_FORMAT = 1
MAX_SNAPSHOTS = 8
MAX_SETLIST = 200
NAME_MAX = 64


def check_name(value: object, field_name: str = "data.name") -> str:
    """A pedalboard or snapshot name: 1–64 printable characters, trimmed.

    Raises:
        InvalidMessage: not a string.
        InvalidValue: empty, too long, or with control characters.
    """
    if not isinstance(value, str):
        raise InvalidMessage(f"{field_name} must be a string", {"field": field_name})
    name = value.strip()
    if not name or len(name) > NAME_MAX:
        raise InvalidValue(f"a name has 1 to {NAME_MAX} characters", {"field": field_name})
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise InvalidValue("a name cannot hold control characters", {"field": field_name})
    return name


@dataclass
class Snapshot:
    """Values and bypass per track and chain position: ``{"plugin", "values", "bypass"}`` each."""

    name: str
    tracks: dict[str, list[dict[str, Any]]]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tracks": self.tracks}


@dataclass
class Pedalboard:
    """A named board with its snapshots.

    Attributes:
        board: the chains in :meth:`Board.to_dict` form.
        spillover: whether this board's delay and reverb tails ring on when
            the player switches away from it.
    """

    name: str
    board: dict[str, Any]
    snapshots: list[Snapshot] = field(default_factory=list)
    spillover: bool = True
    #: What other parts of the box keep with this board, by part (``midi``: its knobs'
    #: mappings); a part missing was not there when the pedalboard was saved.
    parts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PEDALBOARD_FORMAT,
            "name": self.name,
            "spillover": self.spillover,
            "board": self.board,
            "snapshots": [s.to_dict() for s in self.snapshots],
            **({"parts": self.parts} if self.parts else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pedalboard:
        """Raises ValueError when the data is not a pedalboard this box can read."""
        if data.get("format") != PEDALBOARD_FORMAT:
            raise ValueError(f"unknown pedalboard format {data.get('format')!r}")
        board = data.get("board")
        if not isinstance(board, dict):
            raise ValueError("no board in the pedalboard")
        snapshots = [
            Snapshot(str(s["name"]), {str(t): list(c) for t, c in dict(s["tracks"]).items()})
            for s in list(data.get("snapshots", []))
        ]
        parts = data.get("parts", {})
        if not isinstance(parts, dict):
            raise ValueError("parts must be an object")
        return cls(str(data["name"]), board, snapshots, bool(data.get("spillover", True)), dict(parts))

    def snapshot(self, name: str) -> Snapshot:
        for snapshot in self.snapshots:
            if snapshot.name == name:
                return snapshot
        raise UnknownSnapshot(f"{self.name!r} has no snapshot {name!r}", {"snapshot": name})

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "spillover": self.spillover, "snapshots": [s.name for s in self.snapshots]}


@dataclass
class SetlistEntry:
    pedalboard: str
    snapshot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"pedalboard": self.pedalboard, "snapshot": self.snapshot}


@dataclass
class Setlist:
    """The songs of the night in order, and where the player is (None: not started)."""

    entries: list[SetlistEntry] = field(default_factory=list)
    position: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SETLIST_FORMAT,
            "entries": [e.to_dict() for e in self.entries],
            "position": self.position,
        }

    @classmethod
    def parse(cls, entries: object, position: object = None) -> Setlist:
        """A setlist from a client's or the file's data.

        Raises:
            InvalidMessage, InvalidValue: naming the entry that is wrong.
        """
        if not isinstance(entries, list):
            raise InvalidMessage("entries must be an array", {"field": "data.entries"})
        if len(entries) > MAX_SETLIST:
            raise InvalidValue(f"a setlist holds at most {MAX_SETLIST} entries", {"field": "data.entries"})
        parsed: list[SetlistEntry] = []
        for index, entry in enumerate(entries):
            where = f"data.entries[{index}]"
            if not isinstance(entry, dict):
                raise InvalidMessage(f"{where} must be {{pedalboard, snapshot}}", {"field": where})
            snapshot = entry.get("snapshot")
            parsed.append(
                SetlistEntry(
                    check_name(entry.get("pedalboard"), f"{where}.pedalboard"),
                    None if snapshot is None else check_name(snapshot, f"{where}.snapshot"),
                )
            )
        if position is not None and (
            isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < len(parsed)
        ):
            raise InvalidValue("position must be an entry's index", {"field": "data.position"})
        return cls(parsed, position)

    def step(self, delta: int) -> int:
        """The position ``delta`` entries on, held at both ends.

        Raises:
            InvalidValue: the setlist is empty.
        """
        if not self.entries:
            raise InvalidValue("the setlist is empty", {"field": "setlist"})
        if self.position is None:
            return 0 if delta > 0 else len(self.entries) - 1
        return max(0, min(self.position + delta, len(self.entries) - 1))


# -- relating pedalboards to the board --------------------------------------------


def layout(board: Mapping[str, Any]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """A board's sound without its ids: per track, each plugin's kind, name, values, bypass
    and the player's files it loads."""
    tracks = []
    for track in board.get("tracks", []):
        chain = [
            (
                p.get("plugin"),
                p.get("name"),
                sorted(dict(p.get("values", {})).items()),
                bool(p.get("bypass")),
                sorted(dict(p.get("files", {})).items()),
            )
            for p in track.get("chain", [])
        ]
        tracks.append((str(track.get("id")), chain))
    return sorted(tracks)


def layout_with_file_renamed(
    before: list[tuple[str, list[tuple[Any, ...]]]], old: str, new: str
) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """A :func:`layout` as it reads once the player's file ``old`` is called ``new``."""
    return [
        (track_id, [(*p[:4], sorted((i, new if f == old else f) for i, f in p[4])) for p in chain])
        for track_id, chain in before
    ]


def renamed(saved: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, str]:
    """Which plugin id of a pedalboard's saved board each plugin plays under now: a loaded
    board's plugins get new ids (the old board still plays beside it during the switch);
    the same track and chain position is the same plugin."""
    chains = {str(t.get("id")): list(t.get("chain", [])) for t in live.get("tracks", [])}
    ids: dict[str, str] = {}
    for track in saved.get("tracks", []):
        for old, new in zip(track.get("chain", []), chains.get(str(track.get("id")), []), strict=False):
            if "id" in old and "id" in new:
                ids[str(old["id"])] = str(new["id"])
    return ids


def take_snapshot(board: Board, name: str) -> Snapshot:
    """The board's values and bypass now, per track and chain position."""
    return Snapshot(
        name,
        {
            track.id: [
                {"plugin": p.type.key, "values": dict(p.values), "bypass": p.bypass} for p in track.chain
            ]
            for track in board.tracks.values()
        },
    )


@dataclass(frozen=True)
class Recall:
    """One plugin's part of a snapshot recall: its checked values, and the bypass."""

    plan: ParameterPlan
    bypass: bool


def plan_recall(board: Board, snapshot: Snapshot) -> tuple[list[Recall], list[str]]:
    """What recalling ``snapshot`` changes on ``board``, checked in full first.

    A position whose plugin is of another kind than when the snapshot was
    taken (the chain was edited since) is left alone and reported.

    Returns:
        (the changes, one sentence per position left alone)
    """
    changes: list[Recall] = []
    skipped: list[str] = []
    for track_id, saved_chain in snapshot.tracks.items():
        track = board.tracks.get(track_id)
        if track is None:
            skipped.append(f"track {track_id} is not configured")
            continue
        for index, saved in enumerate(saved_chain):
            if index >= len(track.chain) or track.chain[index].type.key != saved.get("plugin"):
                skipped.append(f"{track_id} position {index} holds another plugin now")
                continue
            instance = track.chain[index]
            ids = {parameter.id for parameter in instance.type.parameters}
            known = {k: v for k, v in dict(saved.get("values", {})).items() if k in ids}
            plan = board.plan_parameters(track_id, instance.id, known)
            changes.append(Recall(plan, bool(saved.get("bypass", False))))
    return changes, skipped
