"""Persistence: atomic saves, the last good board kept, corrupt files survived."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance.errors import StoreError
from appliance.store import BoardStore, DebouncedSaver


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


def test_unwritable_folder_raises_and_keeps_old(tmp_path: Path) -> None:
    """A failed save raises StoreError and leaves the saved board as it was."""
    store = BoardStore(tmp_path)
    store.save({"n": 1})
    blocker = tmp_path / "data"
    blocker.write_text("a file, not a folder")
    with pytest.raises(StoreError):
        BoardStore(blocker).save({"n": 2})
    assert store.load() == {"n": 1}


async def test_debounced_saver_coalesces_and_flushes(tmp_path: Path) -> None:
    """Many changes make one save after the delay; flush writes what is pending."""
    store = BoardStore(tmp_path)
    state = {"n": 0}
    saver = DebouncedSaver(store, lambda: dict(state), delay=60.0)
    for i in range(50):
        state["n"] = i
        saver.changed()
    assert store.load() is None
    await saver.flush()
    assert store.load() == {"n": 49}


async def test_failed_save_is_retried_not_forgotten(tmp_path: Path) -> None:
    """A save that fails (folder blocked by a file) is retried and lands once the folder is usable."""
    blocked = tmp_path / "data"
    blocked.write_text("not a folder yet")
    store = BoardStore(blocked)
    saver = DebouncedSaver(store, lambda: {"n": 1}, delay=0.01)
    saver.changed()
    for _ in range(500):
        await asyncio.sleep(0.01)
        if saver.failures:
            break
    assert saver.failures >= 1 and store.load() is None
    blocked.unlink()
    for _ in range(500):
        await asyncio.sleep(0.01)
        if saver.failures == 0:
            break
    assert store.load() == {"n": 1}
    assert await saver.flush() is True


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from appliance.store import BoardStore
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
