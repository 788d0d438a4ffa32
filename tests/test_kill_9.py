"""The box killed with SIGKILL (a crash, ``kill -9``) and started again at once: it plays its
whole board again, and no acknowledged change is lost.

What a player would notice if this broke: after a crash the box comes back
with an older sound than the one they had set, with no board at all, or
serving the phones but silent (its plugins wired into the killed box's JACK
server, which was still ending). A SIGKILL keeps the page cache, so this is a
crash of the box, not a power cut (not tested yet: that needs a machine that
loses its page cache).

The rounds (:mod:`tests.killloop`) each kill the box at a moment drawn from a
seed, printed in the output; ``KILL_9_SEED=<seed>`` runs the same kill times
again. The 500-round run is ``hil/bench_kill.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from appliance import config as config_module
from appliance.app import Box, private_server_name
from appliance.config import Config
from appliance.core.board import BOARD_FORMAT
from appliance.engine import EngineEvent, OwnPlugins, TrackPorts
from appliance.engine.jack.server import DummySettings, JackServer, jack_environment, unique_server_name
from appliance.store.boards import BoardStore
from tests.boxproc import BoxProcess, free_port, virtual_config
from tests.conftest import require_jalv_tools
from tests.fakes import FakeEngine
from tests.killloop import PROMISE, SEED_VARIABLE, config, rounds, seed_from_environment

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(300)]

ROUNDS = 8
#: How long the killed box's jackd is made to take to end, in the staged restarts.
OLD_SERVER_ENDS_AFTER = 3.0
#: How long a jackd is made to take to start, in the staged restarts (a loaded machine).
SLOW_JACKD_DELAY = 0.3


async def test_changes_and_the_board_survive_kill_9_and_a_restart_at_once(tmp_path: Path) -> None:
    """8 kills at moments of a burst drawn from the printed seed, each box started again at
    once: every start is healthy with its whole board, and keeps every change acknowledged
    more than 1 s before the kill (every kill comes after some)."""
    require_jalv_tools()
    seed = seed_from_environment()
    print(f"kill -9 rounds: seed {seed} ({SEED_VARIABLE}={seed} runs the same kill times)")
    judged = await rounds(tmp_path, ROUNDS, seed)
    assert len(judged) == ROUNDS
    for number, (_, verdict) in enumerate(judged):
        where = f"round {number} ({SEED_VARIABLE}={seed})"
        assert verdict.tested, f"{where} was killed before any change was {PROMISE} s old"
        assert verdict.kept, f"{where} lost a change {verdict.lost_age:.2f} s old (promise: {PROMISE} s)"
    print("oldest change lost per kill (s):", [round(v.lost_age, 2) for _, v in judged])
    print("start to healthy (s):", [round(k.back_after, 2) for k, _ in judged])


def slow_jackd(folder: Path) -> Path:
    """A folder whose ``jackd`` starts the real one :data:`SLOW_JACKD_DELAY` late (a loaded
    machine): the readiness probe then always runs before the new server has decided anything."""
    real = shutil.which("jackd")
    assert real is not None
    folder.mkdir(exist_ok=True)
    wrapper = folder / "jackd"
    wrapper.write_text(f'#!/bin/sh\nsleep {SLOW_JACKD_DELAY}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return folder


async def stop_later(server: JackServer, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await server.stop()


async def answers(server_name: str) -> bool:
    """Whether a JACK server of that name answers a client (``jack_lsp``)."""
    probe = await asyncio.create_subprocess_exec(
        "jack_lsp",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=jack_environment(server_name),
    )
    return await asyncio.wait_for(probe.wait(), 5) == 0


async def test_a_jack_server_waits_for_the_old_server_of_its_name_to_end(tmp_path: Path) -> None:
    """A server started while another of its name is still ending (a killed box's) says it is up
    only once the old one has gone and it answers itself: the old one answered the readiness
    probe before, and the box wired its plugins into a server about to vanish."""
    require_jalv_tools()
    name = unique_server_name("kill9")
    old = JackServer(name)
    await old.start()
    new = JackServer(name, jackd=str(slow_jackd(tmp_path / "bin") / "jackd"))
    ending = asyncio.create_task(stop_later(old, OLD_SERVER_ENDS_AFTER))
    try:
        await new.start()
        assert not old.is_running, "the new server said it was up while the old one still ran"
        assert new.is_running, f"the new server is not running: {new.output_tail()}"
        assert await answers(name)
    finally:
        await ending
        await old.stop()
        await new.stop()


async def test_a_box_restarted_while_the_killed_box_s_server_still_ends_plays_its_board(
    tmp_path: Path,
) -> None:
    """The box killed and started again at once, while the killed box's jackd still ends (held
    here for 3 s; jackd slow to start, as on a loaded machine): the new box waits for it, comes
    up on its own server and plays its whole board (it came up on the old server and went
    silent with it, or exited with "Cannot connect to server socket")."""
    require_jalv_tools()
    path = config(tmp_path)
    first = BoxProcess(path)
    await asyncio.to_thread(first.start)
    await asyncio.to_thread(first.stop)  # its board saved
    name = private_server_name(tmp_path / "data")
    old = JackServer(name, DummySettings())  # the killed box's jackd, still ending
    await old.start()
    env = {"PATH": f"{slow_jackd(tmp_path / 'bin')}:{os.environ['PATH']}"}
    box = BoxProcess(path, env=env)
    ending = asyncio.create_task(stop_later(old, OLD_SERVER_ENDS_AFTER))
    try:
        await asyncio.to_thread(box.start)
        assert ending.done(), "the box came up on the killed box's server, which was about to end"
        await ending
        await asyncio.sleep(1.0)  # long enough for a lost server to show
        with urllib.request.urlopen(box.base + "/healthz", timeout=5) as response:
            report = json.loads(response.read())
        assert report["running"], f"the box is not healthy: {report}\n{box.log_tail()}"
        assert report["plugins_running"] == 4, f"{report}\n{box.log_tail()}"
        assert await answers(name)
    finally:
        await ending
        await old.stop()
        await asyncio.to_thread(box.stop)


class EngineLostAsItStarts(FakeEngine):
    """An engine whose first start loses its JACK server at once (the killed box's server,
    ending): it says so and is down until started again."""

    def __init__(self, tracks: Sequence[TrackPorts], on_event: Callable[[EngineEvent], None]) -> None:
        super().__init__(tracks, on_event)
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        self.chains = {t: [] for t in self.tracks}
        self.down = self.starts == 1
        await super().start()
        if self.down:
            self.on_event(EngineEvent("engine-died", None, "JACK server gone", needs_restart=True))


def saved_board(plugins: Mapping[str, str]) -> dict[str, Any]:
    """A ``board.json`` of plugin id → catalog key on track_001."""
    chain = [
        {"id": pid, "name": key, "plugin": key, "uri": "", "bypass": False, "values": {}}
        for pid, key in plugins.items()
    ]
    return {"format": BOARD_FORMAT, "next_number": 9, "tracks": [{"id": "track_001", "chain": chain}]}


async def test_an_engine_that_loses_its_server_as_the_box_starts_is_started_again_with_the_board(
    tmp_path: Path,
) -> None:
    """The engine loses its JACK server while the box starts (before the box has a controller):
    the box starts it again and loads the whole board (the loss was ignored, every plugin failed
    with "the jalv engine is not running", and the box stayed unhealthy and silent)."""
    loaded: Config = config_module.load(virtual_config(tmp_path, demo=[]))
    loaded = dataclasses.replace(loaded, server=dataclasses.replace(loaded.server, port=free_port()))
    board = {"plugin_1": "gain", "plugin_2": "reverb", "plugin_3": "delay"}
    await asyncio.to_thread(BoardStore(loaded.data_dir).save, saved_board(board))
    engines: list[EngineLostAsItStarts] = []

    def maker(cfg: Config, on_event: Callable[[EngineEvent], None], own: OwnPlugins) -> EngineLostAsItStarts:
        tracks = [TrackPorts(t.id, t.inputs, t.outputs) for t in cfg.tracks]
        engines.append(EngineLostAsItStarts(tracks, on_event))
        return engines[-1]

    box = Box(loaded, engine_maker=maker)
    try:
        await box.start()
        async with asyncio.timeout(10):
            while not box.health()[0]:
                await asyncio.sleep(0.05)
        (engine,) = engines
        assert engine.starts == 2
        assert engine.chain("track_001") == list(board)
        assert box.controller is not None
        assert [p.id for _, p in box.controller.board.instances()] == list(board)
    finally:
        await box.stop()
