"""Pedalboards and the setlist on the data partition.

Under the data folder::

    pedalboards/<name>.json      one per pedalboard (the name percent-encoded)
    pedalboards/<name>.json.bak  its last good copy
    setlist.json                 the setlist (and .bak)

Every write is atomic and keeps the last good copy (:func:`write_atomic`), as
``board.json`` does. :class:`PedalboardStore` blocks: call it from a worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any

from ..core.errors import InvalidMessage, NameTaken, StoreError, UnknownPedalboard
from ..core.pedalboards import Pedalboard, Setlist
from .files import stale_temporaries, write_atomic

log = logging.getLogger("appliance.store.pedalboards")


# -- on disk --------------------------------------------------------------------------


class PedalboardStore:
    """Pedalboard files and the setlist under the data folder. Blocking: call off the loop."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "pedalboards"
        self.setlist_path = data_dir / "setlist.json"

    def path(self, name: str) -> Path:
        return self.folder / (urllib.parse.quote(name, safe=" -_()[]'") + ".json")

    def names(self) -> list[str]:
        """Every saved pedalboard's name, sorted case-insensitively."""
        if not self.folder.is_dir():
            return []
        names = [
            urllib.parse.unquote(entry.name[: -len(".json")])
            for entry in self.folder.iterdir()
            if entry.name.endswith(".json") and not entry.name.startswith(".")
        ]
        return sorted(names, key=lambda n: (n.casefold(), n))

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def read(self, name: str) -> Pedalboard:
        """The pedalboard, or its last good copy when the file is damaged.

        Raises:
            UnknownPedalboard: there is no such pedalboard (or neither copy reads).
        """
        path = self.path(name)
        for stale in stale_temporaries(path):
            with contextlib.suppress(OSError):
                stale.unlink()
        for candidate in (path, path.with_name(path.name + ".bak")):
            try:
                pedalboard = Pedalboard.from_dict(json.loads(candidate.read_text(encoding="utf-8")))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error("pedalboard file %s is unreadable (%s)", candidate, exc)
                continue
            if candidate is not path:
                log.warning("pedalboard %r: loaded its last good copy %s", name, candidate.name)
            pedalboard.name = name
            return pedalboard
        raise UnknownPedalboard(f"no pedalboard {name!r}", {"pedalboard": name})

    def write(self, pedalboard: Pedalboard) -> None:
        """Save atomically, keeping the last good copy.

        Raises:
            StoreError: the card is full or read-only.
        """
        path = self.path(pedalboard.name)
        self._write(path, pedalboard.to_dict())

    def create(self, pedalboard: Pedalboard) -> None:
        """Save a pedalboard under a name nobody uses yet.

        Raises:
            NameTaken, StoreError.
        """
        if self.exists(pedalboard.name):
            raise NameTaken(f"a pedalboard is already called {pedalboard.name!r}", {"name": pedalboard.name})
        self.write(pedalboard)

    def delete(self, name: str) -> None:
        """Remove a pedalboard and its last good copy.

        Raises:
            UnknownPedalboard, StoreError.
        """
        path = self.path(name)
        if not path.exists():
            raise UnknownPedalboard(f"no pedalboard {name!r}", {"pedalboard": name})
        try:
            os.unlink(path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.with_name(path.name + ".bak"))
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc.strerror}") from exc

    def rename(self, name: str, new_name: str) -> Pedalboard:
        """Write the pedalboard under its new name first, then remove the old one (nothing lost
        if the power goes in between: both exist).

        Raises:
            UnknownPedalboard, NameTaken, StoreError.
        """
        pedalboard = self.read(name)
        if new_name != name and self.exists(new_name):
            raise NameTaken(f"a pedalboard is already called {new_name!r}", {"name": new_name})
        pedalboard.name = new_name
        self.write(pedalboard)
        if self.path(new_name) != self.path(name):
            self.delete(name)
        return pedalboard

    def read_setlist(self) -> Setlist:
        """The saved setlist; an empty one if there is none or it cannot be read (logged)."""
        for candidate in (self.setlist_path, self.setlist_path.with_name(self.setlist_path.name + ".bak")):
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
                return Setlist.parse(data.get("entries"), data.get("position"))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, AttributeError, InvalidMessage) as exc:
                log.error("setlist file %s is unreadable (%s)", candidate, exc)
        return Setlist()

    def write_setlist(self, setlist: Setlist) -> None:
        """Raises StoreError."""
        self._write(self.setlist_path, setlist.to_dict())

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False)
        try:
            write_atomic(path, text, backup=path.with_name(path.name + ".bak"))
        except OSError as exc:
            raise StoreError(f"cannot save {path}: {exc.strerror}") from exc
