"""Pedalboards, snapshots and the setlist over the protocol.

:class:`Library` adds their requests to the :class:`Controller` (docs/protocol.md
"Pedalboards, snapshots, setlist") and keeps what the box is playing: the
pedalboard loaded (as last loaded or saved), the snapshot last recalled,
whether the board has changed since, and the setlist position. Every change
is broadcast as one ``PEDALBOARD_STATE``, which a client that just connected
is told too.

The board itself keeps being saved to ``board.json`` as before; loading a
pedalboard never throws away the board playing without a save of its own
(``board.json`` keeps the new one, the pedalboard files are only written on
request). Runs on the loop's thread; file work runs in a worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..core.board import Board, rename_file_in
from ..core.errors import ApplianceError, InvalidValue, NameTaken, UnknownPedalboard
from ..core.pedalboards import (
    MAX_SNAPSHOTS,
    Pedalboard,
    Setlist,
    Snapshot,
    check_name,
    layout,
    layout_with_file_renamed,
    plan_recall,
    renamed,
    take_snapshot,
)
from ..core.protocol import Request
from ..engine import SavedPlugin
from ..store.pedalboards import PedalboardStore
from .controller import Controller, Event, Outcome

log = logging.getLogger("appliance.control.library")

#: Requests that may load a pedalboard: they run beside the client's other messages.
SWITCHING = ("PEDALBOARD_LOAD", "SETLIST_NEXT", "SETLIST_PREVIOUS", "SETLIST_GO")


class BoardPart(Protocol):
    """A part of the box that keeps something with each pedalboard (the MIDI mappings of its
    knobs): saved with it, and switched with it."""

    key: str

    def kept(self, ids: dict[str, str]) -> Any:
        """What the pedalboard being saved keeps of this part (JSON); ``ids``: the id each
        plugin playing has in the pedalboard's board (they differ once it was loaded)."""
        ...

    async def switched(self, kept: Any, ids: dict[str, str]) -> None:
        """The pedalboard that now plays kept this (None: saved without this part); ``ids``:
        the plugin id each of its saved plugins plays under now."""
        ...


class Library:
    """Pedalboards, snapshots and the setlist, served through ``controller``.

    Args:
        controller: the box's one control interface; the library registers
            its requests there.
        store: the files.
        spillover: seconds an old board's tails ring on after a switch (for
            pedalboards that allow it).
        ceiling: the DSP load (%) two boards may reach together: when the
            playing board's load doubled would pass it, the old board's tails
            are cut after the 20 ms crossfade instead of ringing on.
        on_change: called when what the box saves in ``board.json`` changed.
    """

    def __init__(
        self,
        controller: Controller,
        store: PedalboardStore,
        spillover: float,
        on_change: Callable[[], None] = lambda: None,
        ceiling: float = 80.0,
    ) -> None:
        self.controller = controller
        self.store = store
        self.spillover = spillover
        self.ceiling = ceiling
        self.on_change = on_change
        self.current: Pedalboard | None = None
        self.snapshot: str | None = None
        self.setlist = Setlist()
        self.names: list[str] = []
        self._reference: Any = None  # the board's layout when it last matched what was loaded or saved
        self._files = asyncio.Lock()
        self._switching = False
        self._told_modified = False
        self._preparing: asyncio.Task[None] | None = None
        #: The parts that keep something with each pedalboard (:class:`BoardPart`).
        self.parts: list[BoardPart] = []
        handlers = {
            "PEDALBOARD_LIST": self._list,
            "PEDALBOARD_SAVE": self._save,
            "PEDALBOARD_LOAD": self._load,
            "PEDALBOARD_RENAME": self._rename,
            "PEDALBOARD_COPY": self._copy,
            "PEDALBOARD_DELETE": self._delete,
            "SNAPSHOT_SAVE": self._snapshot_save,
            "SNAPSHOT_RECALL": self._snapshot_recall,
            "SNAPSHOT_RENAME": self._snapshot_rename,
            "SNAPSHOT_DELETE": self._snapshot_delete,
            "SETLIST_GET": self._setlist_get,
            "SETLIST_SET": self._setlist_set,
            "SETLIST_NEXT": self._setlist_next,
            "SETLIST_PREVIOUS": self._setlist_previous,
            "SETLIST_GO": self._setlist_go,
        }
        for kind, handler in handlers.items():
            controller.register(kind, handler, structural=kind in SWITCHING)
        controller.greeters.append(lambda: [("PEDALBOARD_STATE", self.state())])

    # -- start and what board.json keeps --------------------------------------------

    async def start(self, saved: dict[str, Any] | None) -> None:
        """Read the pedalboard names and the setlist; take up what ``board.json`` said was playing."""
        self.names = await asyncio.to_thread(self.store.names)
        self.setlist = await asyncio.to_thread(self.store.read_setlist)
        saved = saved or {}
        name = saved.get("pedalboard")
        if isinstance(name, str) and name in self.names:
            try:
                self.current = await asyncio.to_thread(self.store.read, name)
            except UnknownPedalboard:
                log.warning("pedalboard %r was playing but cannot be read", name)
        snapshot = saved.get("snapshot")
        self.snapshot = snapshot if isinstance(snapshot, str) and self.current else None
        if self.current is not None and not saved.get("modified", False):
            self._reference = self._layout()
        self._prepare_neighbours()

    def saved_state(self) -> dict[str, Any]:
        """What ``board.json`` keeps of the library, so that a restart knows what plays."""
        return {
            "pedalboard": self.current.name if self.current else None,
            "snapshot": self.snapshot,
            "modified": self.modified,
        }

    @property
    def modified(self) -> bool:
        """True when the board has changed since its pedalboard was loaded, saved or recalled."""
        return self._reference is None or self._layout() != self._reference

    def state(self) -> dict[str, Any]:
        """``PEDALBOARD_STATE``: what plays, whether it changed, the pedalboards and the setlist."""
        current = self.current
        return {
            "pedalboard": current.name if current else None,
            "snapshot": self.snapshot,
            "modified": self.modified,
            "spillover": current.spillover if current else True,
            "snapshots": [s.name for s in current.snapshots] if current else [],
            "pedalboards": list(self.names),
            "setlist": {
                "entries": [e.to_dict() for e in self.setlist.entries],
                "position": self.setlist.position,
            },
        }

    def _layout(self) -> Any:
        return layout(self.controller.board.to_dict())

    def _matched(self, reference: Any = None) -> None:
        """The board is what was just loaded, saved or recalled: as it is now, or as it was
        when it was written (``reference``, its :func:`layout`: a phone may have changed it
        while the file was written, and then it differs from that file)."""
        self._reference = reference if reference is not None else self._layout()
        self._told_modified = False

    def board_changed(self) -> None:
        """After every change to the board: tell everyone once it differs from its pedalboard."""
        if self._switching or self._told_modified or self._reference is None or not self.modified:
            return
        self._told_modified = True
        self.controller.publish([("PEDALBOARD_STATE", self.state())])
        self._prepare_neighbours()  # a step to the pedalboard it was loads it afresh now

    def _changed(self, events: list[Event] | None = None) -> Outcome:
        """Tell everyone the new state (after ``events``), have it saved, and have the
        setlist's neighbours ready (they may have changed with it)."""
        self.on_change()
        self._prepare_neighbours()
        return Outcome(broadcast=[*(events or []), ("PEDALBOARD_STATE", self.state())])

    # -- warm standby ------------------------------------------------------------------

    def neighbours(self) -> list[str]:
        """The pedalboards a setlist step from here would load: the next entry's, then the
        previous one's (each once; never the one playing unchanged, which only recalls)."""
        setlist = self.setlist
        if not setlist.entries:
            return []
        names: list[str] = []
        for delta in (+1, -1):
            name = setlist.entries[setlist.step(delta)].pedalboard
            playing = self.current is not None and self.current.name == name and not self.modified
            if not playing and name not in names:
                names.append(name)
        return names

    def _prepare_neighbours(self) -> None:
        """Have the engine keep the neighbours loaded and idle (:meth:`Engine.prepare`), in the
        background: the files are read in a worker, the engine loads its racks by itself."""
        if self._preparing is not None:
            self._preparing.cancel()
        self._preparing = asyncio.get_running_loop().create_task(self._prepare(self.neighbours()))

    async def _prepare(self, names: list[str]) -> None:
        boards: list[list[SavedPlugin]] = []
        for name in names:
            try:
                async with self._files:
                    pedalboard = await asyncio.to_thread(self.store.read, name)
            except ApplianceError as exc:
                log.warning("warm standby: pedalboard %r cannot be read: %s", name, exc)
                continue
            incoming = Board(self.controller.board.tracks)
            incoming.restore(pedalboard.board, self.controller.catalog)
            plugins = incoming.instances()
            boards.append([self.controller.saved(t.id, p) for t, p in plugins])
        self.controller.engine.prepare(boards)

    async def _refresh_names(self) -> None:
        self.names = await asyncio.to_thread(self.store.names)

    # -- pedalboards ------------------------------------------------------------------

    @property
    def files_lock(self) -> asyncio.Lock:
        """Held while the pedalboard files change (an import from elsewhere holds it too)."""
        return self._files

    async def pedalboards_added(self) -> None:
        """Pedalboards were written from elsewhere (an import): every phone is told the list."""
        await self._refresh_names()
        self.controller.publish([("PEDALBOARD_STATE", self.state())])

    async def _list(self, request: Request) -> Outcome:
        summaries = []
        async with self._files:
            for name in await asyncio.to_thread(self.store.names):
                try:
                    summaries.append((await asyncio.to_thread(self.store.read, name)).summary())
                except UnknownPedalboard:
                    continue  # unreadable, and logged: not offered
        return Outcome(reply=[("PEDALBOARDS", {"pedalboards": summaries})])

    async def _save(self, request: Request) -> Outcome:
        """Save the board: over the current pedalboard, or as a new one (``name``)."""
        data = request.data
        current = self.current
        name = (
            check_name(data["name"]) if data.get("name") is not None else (current.name if current else None)
        )
        if name is None:
            raise InvalidValue("name the new pedalboard", {"field": "data.name"})
        spillover = data.get("spillover", current.spillover if current else True)
        if not isinstance(spillover, bool):
            raise InvalidValue("spillover must be true or false", {"field": "data.spillover"})
        overwrite = data.get("overwrite", False) is True or (current is not None and name == current.name)
        board = self.controller.board.to_dict()
        board.pop("next_number", None)
        written = layout(board)
        snapshots = list(current.snapshots) if current else []
        same = {p.id: p.id for _, p in self.controller.board.instances()}
        parts = {part.key: part.kept(same) for part in self.parts}
        pedalboard = Pedalboard(name, board, snapshots, spillover, parts)
        async with self._files:
            if overwrite:
                await asyncio.to_thread(self.store.write, pedalboard)
            else:
                await asyncio.to_thread(self.store.create, pedalboard)
            await self._refresh_names()
        self.current = pedalboard
        self._matched(written)
        return self._changed()

    async def _load(self, request: Request) -> Outcome:
        name = check_name(request.data.get("name"))
        snapshot = request.data.get("snapshot")
        return self._changed(
            await self.load(name, None if snapshot is None else check_name(snapshot, "data.snapshot"))
        )

    async def load(self, name: str, snapshot: str | None = None) -> list[Event]:
        """Switch to a pedalboard (and one of its snapshots) while playing; the events of it.

        Raises:
            UnknownPedalboard, UnknownSnapshot: nothing changed.
            PluginLoadFailed: a plugin could not start; the old board plays on.
        """
        async with self._files:
            pedalboard = await asyncio.to_thread(self.store.read, name)
        if snapshot is not None:
            pedalboard.snapshot(snapshot)  # raises before anything changes
        spillover = self.spillover if (self.current.spillover if self.current else True) else 0.0
        load = self.controller.engine.info().dsp_load
        if spillover and 2 * load > self.ceiling:
            log.warning("DSP load %.0f %%: two boards would pass %.0f %%; no spillover", load, self.ceiling)
            spillover = 0.0
        self._switching = True
        try:
            events = await self.controller.switch_board(pedalboard.board, spillover)
        finally:
            self._switching = False
        self.current, self.snapshot = pedalboard, None
        ids = renamed(pedalboard.board, self.controller.board.to_dict())
        for part in self.parts:
            await part.switched(pedalboard.parts.get(part.key), ids)
        if snapshot is not None:
            events += await self._recall(pedalboard, snapshot)
        else:
            self._matched()
        log.info("pedalboard %r loaded%s", name, f" with snapshot {snapshot!r}" if snapshot else "")
        return events

    async def _recall(self, pedalboard: Pedalboard, name: str) -> list[Event]:
        """Recall a snapshot of the pedalboard playing; the events of it."""
        changes, skipped = plan_recall(self.controller.board, pedalboard.snapshot(name))
        for problem in skipped:
            log.warning("snapshot %r: %s", name, problem)
        events = await self.controller.recall(changes)
        self.snapshot = name
        self._matched()
        return events

    async def _rename(self, request: Request) -> Outcome:
        name = check_name(request.data.get("name"))
        new_name = check_name(request.data.get("new_name"), "data.new_name")
        async with self._files:
            await asyncio.to_thread(self.store.rename, name, new_name)
            for entry in self.setlist.entries:
                if entry.pedalboard == name:
                    entry.pedalboard = new_name
            await asyncio.to_thread(self.store.write_setlist, self.setlist)
            await self._refresh_names()
        if self.current is not None and self.current.name == name:
            self.current.name = new_name
        return self._changed()

    async def _copy(self, request: Request) -> Outcome:
        name = check_name(request.data.get("name"))
        new_name = check_name(request.data.get("new_name"), "data.new_name")
        async with self._files:
            pedalboard = await asyncio.to_thread(self.store.read, name)
            pedalboard.name = new_name
            await asyncio.to_thread(self.store.create, pedalboard)
            await self._refresh_names()
        return self._changed()

    async def _delete(self, request: Request) -> Outcome:
        """Delete a pedalboard; the board playing stays (unsaved), the setlist loses its entries."""
        name = check_name(request.data.get("name"))
        async with self._files:
            await asyncio.to_thread(self.store.delete, name)
            kept = [e for e in self.setlist.entries if e.pedalboard != name]
            if len(kept) != len(self.setlist.entries):
                self.setlist = Setlist(kept, None)
                await asyncio.to_thread(self.store.write_setlist, self.setlist)
            await self._refresh_names()
        if self.current is not None and self.current.name == name:
            self.current, self.snapshot, self._reference = None, None, None
        return self._changed()

    # -- snapshots --------------------------------------------------------------------

    def _require_current(self) -> Pedalboard:
        if self.current is None:
            raise UnknownPedalboard(
                "no pedalboard is loaded; save the board as one first", {"pedalboard": None}
            )
        return self.current

    async def _snapshot_save(self, request: Request) -> Outcome:
        """Keep the board's values and bypass as a snapshot of the current pedalboard."""
        current = self._require_current()
        name = check_name(request.data.get("name"))
        chains = [(t, [p[0] for p in chain]) for t, chain in layout(self.controller.board.to_dict())]
        if chains != [(t, [p[0] for p in chain]) for t, chain in layout(current.board)]:
            raise InvalidValue(
                "the chain changed since the pedalboard was saved; save the pedalboard first",
                {"field": "pedalboard"},
            )
        others = [s for s in current.snapshots if s.name != name]
        if len(others) >= MAX_SNAPSHOTS:
            raise InvalidValue(
                f"a pedalboard holds at most {MAX_SNAPSHOTS} snapshots", {"field": "data.name"}
            )
        snapshot = take_snapshot(self.controller.board, name)
        taken = self._layout()
        snapshots = [snapshot if s.name == name else s for s in current.snapshots]
        if len(others) == len(current.snapshots):
            snapshots.append(snapshot)
        await self._keep_snapshots(current, snapshots)
        self.snapshot = name
        self._matched(taken)
        return self._changed()

    async def _snapshot_recall(self, request: Request) -> Outcome:
        """Every value and bypass of the snapshot in one step; no plugin is loaded or removed."""
        current = self._require_current()
        return self._changed(await self._recall(current, check_name(request.data.get("name"))))

    async def _snapshot_rename(self, request: Request) -> Outcome:
        current = self._require_current()
        name = check_name(request.data.get("name"))
        new_name = check_name(request.data.get("new_name"), "data.new_name")
        current.snapshot(name)
        if new_name != name and any(s.name == new_name for s in current.snapshots):
            raise NameTaken(f"{current.name!r} already has a snapshot {new_name!r}", {"name": new_name})
        renamed = [s if s.name != name else dataclasses.replace(s, name=new_name) for s in current.snapshots]
        await self._keep_snapshots(current, renamed)
        if self.snapshot == name:
            self.snapshot = new_name
        return self._changed()

    async def _snapshot_delete(self, request: Request) -> Outcome:
        current = self._require_current()
        name = check_name(request.data.get("name"))
        current.snapshot(name)
        await self._keep_snapshots(current, [s for s in current.snapshots if s.name != name])
        if self.snapshot == name:
            self.snapshot = None
        return self._changed()

    def attach(self, part: BoardPart) -> Callable[[], Awaitable[None]]:
        """Keep ``part`` with each pedalboard; what it calls when what it keeps changed: the
        pedalboard playing keeps it at once, as it keeps a snapshot (a switch away never loses
        a mapping just learned)."""
        self.parts.append(part)

        async def changed() -> None:
            current = self.current
            if current is None:
                return  # an unsaved board: PEDALBOARD_SAVE keeps it
            ids = renamed(self.controller.board.to_dict(), current.board)  # playing → as saved
            updated = dataclasses.replace(current, parts={**current.parts, part.key: part.kept(ids)})
            async with self._files:
                await asyncio.to_thread(self.store.write, updated)
            if self.current is current:
                self.current = updated

        return changed

    async def _keep_snapshots(self, current: Pedalboard, snapshots: list[Snapshot]) -> None:
        """Write the current pedalboard with these snapshots; it is the current one from now on."""
        updated = dataclasses.replace(current, snapshots=snapshots)
        async with self._files:
            await asyncio.to_thread(self.store.write, updated)
        self.current = updated

    # -- the player's files ------------------------------------------------------------

    async def rename_file(self, old: str, new: str) -> list[str]:
        """The player's file ``old`` is called ``new`` now (both names are still there): every
        pedalboard that names it is written with the new name, and the board's reference too,
        so that the board does not read as changed. The pedalboards written."""
        written = []
        async with self._files:
            for name in list(self.names):
                try:
                    pedalboard = await asyncio.to_thread(self.store.read, name)
                    if rename_file_in(pedalboard.board, old, new):
                        await asyncio.to_thread(self.store.write, pedalboard)
                        written.append(name)
                except ApplianceError as exc:
                    log.error("pedalboard %r still names %r: %s", name, old, exc)
        if self.current is not None:
            rename_file_in(self.current.board, old, new)
        if self._reference is not None:
            self._reference = layout_with_file_renamed(self._reference, old, new)
        if written:
            self._prepare_neighbours()  # a warm board holds the file by its old name
        return written

    # -- the setlist ------------------------------------------------------------------

    async def _setlist_get(self, request: Request) -> Outcome:
        return Outcome(reply=[("PEDALBOARD_STATE", self.state())])

    async def _setlist_set(self, request: Request) -> Outcome:
        setlist = Setlist.parse(request.data.get("entries"), request.data.get("position"))
        for index, entry in enumerate(setlist.entries):
            if entry.pedalboard not in self.names:
                raise UnknownPedalboard(
                    f"entry {index}: no pedalboard {entry.pedalboard!r}", {"field": f"data.entries[{index}]"}
                )
        async with self._files:
            await asyncio.to_thread(self.store.write_setlist, setlist)
        self.setlist = setlist
        return self._changed()

    async def _setlist_next(self, request: Request) -> Outcome:
        return await self.go(self.setlist.step(+1))

    async def _setlist_previous(self, request: Request) -> Outcome:
        return await self.go(self.setlist.step(-1))

    async def _setlist_go(self, request: Request) -> Outcome:
        position = request.data.get("position")
        if isinstance(position, bool) or not isinstance(position, int):
            raise InvalidValue("position must be an entry's index", {"field": "data.position"})
        if not 0 <= position < len(self.setlist.entries):
            raise InvalidValue(
                f"the setlist has {len(self.setlist.entries)} entries", {"field": "data.position"}
            )
        return await self.go(position)

    async def go(self, position: int) -> Outcome:
        """Play the setlist's entry at ``position``: its pedalboard, then its snapshot.

        The pedalboard already playing, unchanged, is not loaded again: only
        its snapshot is recalled (no plugin restarts, no switch).
        """
        entry = self.setlist.entries[position]
        current = self.current
        events: list[Event] = []
        if current is None or current.name != entry.pedalboard or self.modified:
            events = await self.load(entry.pedalboard, entry.snapshot)
        elif entry.snapshot is not None:
            events = await self._recall(current, entry.snapshot)
        self.setlist.position = position
        async with self._files:
            await asyncio.to_thread(self.store.write_setlist, self.setlist)
        return self._changed(events)
