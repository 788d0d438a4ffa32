"""Persistence: atomic saves, the last good board kept, corrupt files survived."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.core.errors import StoreError
from appliance.store.boards import BoardStore, DebouncedSaver


def test_save_then_load(tmp_path: Path) -> None:
    """What is saved is what loads."""
    store = BoardStore(tmp_path / "data")
    store.save({"format": 1, "n": 1})
    assert store.load() == {"format": 1, "n": 1}


def test_nothing_saved_loads_none(tmp_path: Path) -> None:
    """A fresh data folder has no board."""
    assert BoardStore(tmp_path).load() is None


def test_corrupt_file_falls_back_to_last_good(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A corrupt board.json loads the previous good board, is moved aside, and is logged."""
    store = BoardStore(tmp_path)
    store.save({"n": 1})
    store.save({"n": 2})
    store.path.write_text('{"n": 3, "trunc')
    assert store.load() == {"n": 1}
    assert any(p.name.startswith("board.json.corrupt-") for p in tmp_path.iterdir())
    assert "unreadable" in caplog.text


def test_failed_save_raises_and_keeps_the_board(tmp_path: Path) -> None:
    """A save that cannot write its temporary file raises StoreError; the saved board is untouched."""
    store = BoardStore(tmp_path)
    store.save({"n": 1})
    (tmp_path / f".board.json.{os.getpid()}.tmp").mkdir()  # the temporary file cannot be made
    with pytest.raises(StoreError, match="cannot save the board"):
        store.save({"n": 2})
    assert store.load() == {"n": 1}
    assert (tmp_path / "board.json.bak").exists() is False  # nothing was rotated either


class FakeTimer:
    """The saver's clock, moved by hand: ``advance`` runs what has come due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pending: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeHandle:
        handle = FakeHandle(when, callback)
        self.pending.append(handle)
        return handle

    def advance(self, to: float) -> None:
        self.now = to
        for handle in sorted(self.pending, key=lambda h: h.when):
            if not handle.cancelled and handle.when <= to:
                handle.cancelled = True
                handle.callback()
        self.pending = [h for h in self.pending if not h.cancelled]


@dataclass
class FakeHandle:
    when: float
    callback: Callable[[], object]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class CountingStore(BoardStore):
    """A real store that also notes the fake time of each save."""

    def __init__(self, folder: Path, timer: FakeTimer) -> None:
        super().__init__(folder)
        self.timer = timer
        self.saved_at: list[float] = []

    def save(self, data: dict[str, Any]) -> None:
        super().save(data)
        self.saved_at.append(self.timer.now)


async def test_a_burst_of_changes_is_one_save_after_the_quiet_delay(tmp_path: Path) -> None:
    """50 changes within 0.1 s make exactly one save, 0.5 s after the last, with the last value."""
    timer = FakeTimer()
    store = CountingStore(tmp_path, timer)
    state = {"n": 0}
    saver = DebouncedSaver(store, lambda: dict(state), delay=0.5, max_wait=2.0, timer=timer)
    for i in range(50):
        timer.advance(i * 0.002)
        state["n"] = i
        saver.changed()
    timer.advance(0.5)
    await saver.settled()
    assert store.saved_at == [] and store.load() is None
    timer.advance(0.098 + 0.5)
    await saver.settled()
    assert store.saved_at == [pytest.approx(0.598)] and store.load() == {"n": 49}


async def test_a_held_slider_cannot_postpone_the_save_past_the_maximum_wait(tmp_path: Path) -> None:
    """A change every 0.1 s for 10 s (never 0.5 s of quiet): a save at least every 2 s all the same."""
    timer = FakeTimer()
    store = CountingStore(tmp_path, timer)
    state = {"n": 0}
    saver = DebouncedSaver(store, lambda: dict(state), delay=0.5, max_wait=2.0, timer=timer)
    for i in range(100):
        timer.advance(i * 0.1)
        await saver.settled()
        state["n"] = i
        saver.changed()
    timer.advance(10.0)
    await saver.settled()
    times = [0.0, *store.saved_at]
    assert len(store.saved_at) >= 4
    assert max(b - a for a, b in itertools.pairwise(times)) <= 2.0 + 1e-9
    assert store.load() is not None and store.load()["n"] >= 80  # type: ignore[index]


async def test_flush_writes_what_is_pending_at_once(tmp_path: Path) -> None:
    """flush (shutdown) saves a pending change without waiting for the delay."""
    timer = FakeTimer()
    store = CountingStore(tmp_path, timer)
    saver = DebouncedSaver(store, lambda: {"n": 7}, delay=60.0, timer=timer)
    saver.changed()
    assert await saver.flush() is True
    assert store.load() == {"n": 7} and store.saved_at == [0.0]


async def test_failed_save_is_retried_not_forgotten(tmp_path: Path) -> None:
    """A save that fails (folder blocked by a file) is retried and lands once the folder is usable."""
    timer = FakeTimer()
    blocked = tmp_path / "data"
    blocked.write_text("not a folder yet")
    store = CountingStore(blocked, timer)
    saver = DebouncedSaver(store, lambda: {"n": 1}, delay=0.1, timer=timer)
    saver.changed()
    timer.advance(0.1)
    await saver.settled()
    assert saver.failures == 1 and store.saved_at == []
    blocked.unlink()
    timer.advance(0.1 + 0.2)  # the retry comes after delay * 2**failures
    await saver.settled()
    assert saver.failures == 0 and store.load() == {"n": 1}


async def test_changes_do_not_hammer_a_failing_card(tmp_path: Path) -> None:
    """While saves fail, a change every 0.15 s (longer than the 0.1 s quiet delay) does not make
    a write attempt each: the attempts keep their growing backoff. None of the changes is lost."""
    timer = FakeTimer()
    blocked = tmp_path / "data"
    blocked.write_text("not a folder yet")
    attempts: list[float] = []

    class Counting(BoardStore):
        def save(self, data: dict[str, Any]) -> None:
            attempts.append(timer.now)
            super().save(data)

    state = {"n": 0}
    saver = DebouncedSaver(Counting(blocked), lambda: dict(state), delay=0.1, max_wait=2.0, timer=timer)
    for i in range(1, 21):  # 3 s of changes, every 0.15 s; the card fails all along
        timer.advance(i * 0.15)
        await saver.settled()
        state["n"] = i
        saver.changed()
    timer.advance(3.05)
    await saver.settled()
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) <= 5, f"{len(attempts)} write attempts in 3 s on a failing card: {attempts}"
    assert gaps == sorted(gaps), f"the backoff did not grow: {attempts}"
    blocked.unlink()
    timer.advance(60.0)
    await saver.settled()
    assert Counting(blocked).load() == {"n": 20}


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from appliance.store.boards import BoardStore
    store = BoardStore(Path(sys.argv[1]))
    i = 0
    while True:
        i += 1
        store.save({"format": 1, "n": i, "pad": "x" * 20000})
        if i == 3:
            print("ready", flush=True)
    """
)


def test_kill_during_write_loop_never_loses_the_board(tmp_path: Path) -> None:
    """kill -9 in the middle of a save loop always leaves a complete, loadable board."""
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        data = json.loads((tmp_path / "board.json").read_text())
        assert data["n"] >= 3 and len(data["pad"]) == 20000
        assert BoardStore(tmp_path).load() == data
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")], "load() clears cut-short saves"
