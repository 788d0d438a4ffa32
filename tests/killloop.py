"""The box killed with SIGKILL during a burst of changes, and started again at once, round
after round. Used by ``tests/test_kill_9.py`` (a few rounds) and ``hil/bench_kill.py`` (hundreds).

A SIGKILL ends the box, not the machine: what it wrote is in the page cache
and reaches the disk anyway. So this plays a crash of the box (or ``kill -9``),
not a power cut; real power cuts need a machine that loses its page cache
(a VM killed outright, a relay on a Pi's supply).

Each round starts the virtual box on the same data folder at once after the
round before killed it, while the killed box's JACK server and plugins are
still ending, as systemd does (``Restart=always``, 200 ms), and as a user
does who starts it again by hand. It reads the board the box came back with,
sends a burst of ``PLUGIN_PARAMETER`` changes to one gain (each acknowledged
by its echo, the time noted), and kills the box somewhere in the burst. The
next round's start says what was saved. A change acknowledged more than
:data:`PROMISE` seconds before the kill must be there.

Every kill comes more than :data:`PROMISE` after the round's first
acknowledged change, so that every round tests the promise. The kill times
(and the pace of the bursts) come from one seed: :func:`seed_from_environment`
reads ``KILL_9_SEED`` or makes one up; the run prints it, and the same seed
gives the same kill times again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from appliance.app import private_server_name
from appliance.engine.jack.server import DummySettings, JackServer
from tests.boxproc import BoxProcess, virtual_config

TRACK = "track_001"
#: No change acknowledged this long before the kill may be lost (seconds).
PROMISE = 1.0
#: A kill comes this long after the round's first acknowledged change, at the least and at the most.
KILL_AFTER = (PROMISE + 0.1, PROMISE + 2.0)
#: How long one answer may take.
ANSWER_TIMEOUT = 10.0
#: The environment variable that picks the seed of a run.
SEED_VARIABLE = "KILL_9_SEED"
#: Changes in one burst (more than a kill ever lets through).
BURST = 400
#: The plugins of the board besides the gain that takes the changes: a real board's worth of
#: JACK clients for the killed box's server to drop while the next box starts.
ALSO_ON_THE_BOARD = ("reverb", "delay", "overdrive")


@dataclass
class Round:
    """One burst and its kill: every acknowledged value with when it was acknowledged."""

    acked: list[tuple[float, float]] = field(default_factory=list)
    killed_at: float = 0.0
    back_after: float = 0.0  # seconds from the start of the box to /healthz running


@dataclass
class Verdict:
    """What the next start found of a round."""

    kept: bool  # everything older than PROMISE was there
    lost_age: float  # age at the kill of the oldest acknowledged change that was lost (0: none)
    tested: int  # changes older than PROMISE at the kill (the promise was tested when above 0)


def seed_from_environment() -> int:
    """``KILL_9_SEED`` when set, else a fresh seed (print it: it reproduces the kill times)."""
    given = os.environ.get(SEED_VARIABLE, "").strip()
    return int(given) if given else secrets.randbelow(10**6)


def kill_delays(seed: int, count: int) -> list[float]:
    """The seconds from each round's first acknowledged change to its kill."""
    rng = random.Random(seed)
    return [rng.uniform(*KILL_AFTER) for _ in range(count)]


def config(folder: Path) -> Path:
    """The virtual box on its own server, with a gain and three more plugins on its board."""
    demo = [{"plugin": "gain"}, *({"plugin": name} for name in ALSO_ON_THE_BOARD)]
    return virtual_config(folder, own_server_name=True, demo=demo, data_dir=folder / "data")


async def replayed(ws: ClientConnection, timeout: float) -> tuple[list[str], str | None, float | None]:
    """The board's plugins (by name, in order) as the box replays it, and its gain's id and value."""
    await ws.send(json.dumps({"id": "sync", "type": "PING"}))
    plugins: list[str] = []
    gain: tuple[str | None, float | None] = (None, None)
    async with asyncio.timeout(timeout):
        while (message := json.loads(await ws.recv())).get("reply_to") != "sync":
            if message["type"] == "PLUGIN_ADD":
                plugins.append(message["data"]["plugin"])
                if message["data"]["plugin"] == "gain":
                    gain = (message["data"]["plugin_id"], float(message["data"]["parameters"]["gain"]))
    return plugins, gain[0], gain[1]


async def board(ws: ClientConnection) -> tuple[str, float]:
    """The gain's plugin id and value, as the box replays its board; the whole board must be back."""
    plugins, plugin_id, value = await replayed(ws, ANSWER_TIMEOUT)
    assert plugin_id is not None and value is not None, f"the board came back without its gain: {plugins}"
    assert sorted(plugins) == sorted(["gain", *ALSO_ON_THE_BOARD]), f"the board came back as {plugins}"
    return plugin_id, value


def judge(previous: Round, value: float) -> Verdict:
    """Whether the value a box came back with keeps the promise for the round before."""
    values = [v for _, v in previous.acked]
    newest_kept = values.index(value) if value in values else -1
    lost = previous.acked[newest_kept + 1 :]
    lost_age = previous.killed_at - lost[0][0] if lost else 0.0
    old = [i for i, (t, _) in enumerate(previous.acked) if previous.killed_at - t > PROMISE]
    return Verdict(
        kept=not old or old[-1] <= newest_kept, lost_age=max(0.0, lost_age), tested=len(old)
    )


async def rounds(folder: Path, count: int, seed: int) -> list[tuple[Round, Verdict]]:
    """``count`` rounds on one data folder; each with what the start after it found.

    Raises:
        RuntimeError: a start did not bring the box back healthy (with the box's log).
        AssertionError: a start brought back an incomplete board.
    """
    delays = kill_delays(seed, count)
    judged: list[tuple[Round, Verdict]] = []
    previous: Round | None = None
    killed: BoxProcess | None = None
    try:
        for number in range(count + 1):
            pace = random.Random(f"{seed}-{number}")
            delay = delays[number] if number < count else None
            current, value, box = await one_round(folder, number, pace, delay, killed)
            killed = box
            if previous is not None:
                judged.append((previous, judge(previous, value)))
            previous = current
    finally:
        if killed is not None:
            await asyncio.to_thread(killed.stop, signal.SIGKILL)
        await reclaim(private_server_name(folder / "data"))
    return judged


async def reclaim(name: str) -> None:
    """Give back the JACK server slot a killed box's server kept: start a server of that name
    and stop it cleanly (what the box's next start does). JACK has 8 slots per machine."""
    server = JackServer(name, DummySettings())
    await server.start()
    await server.stop()


async def one_round(
    folder: Path,
    number: int,
    pace: random.Random,
    delay: float | None,
    killed: BoxProcess | None,
) -> tuple[Round, float, BoxProcess | None]:
    """Start the box (at once after ``killed`` was killed), burst, kill after ``delay``.

    Returns the round, the value the box came back with, and the box killed
    (its JACK server and plugins maybe still ending: the next round cleans up
    after it); ``delay`` None: the box is only read and stopped.
    """
    box = BoxProcess(config(folder))
    started = time.monotonic()
    try:
        await asyncio.to_thread(box.start)
    finally:
        if killed is not None:  # what the killed box left, once its successor has started
            await asyncio.to_thread(killed.stop, signal.SIGKILL)
    current = Round(back_after=time.monotonic() - started)
    try:
        ws = await connect(box.ws_url, open_timeout=ANSWER_TIMEOUT)
        try:
            plugin_id, value = await board(ws)
            if delay is None:
                await ws.close()
                await asyncio.to_thread(box.stop)
                return current, value, None
            task = asyncio.ensure_future(burst(ws, plugin_id, number, pace, current))
            async with asyncio.timeout(ANSWER_TIMEOUT):
                while not current.acked:  # the kill is timed from the first acknowledged change
                    if task.done():
                        task.result()  # its error: the box stopped answering
                    await asyncio.sleep(0.005)
            await asyncio.sleep(delay)
            current.killed_at = time.monotonic()
            assert box.proc is not None
            box.proc.send_signal(signal.SIGKILL)  # a crash, as the box sees it
            await asyncio.to_thread(box.proc.wait)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            ws.transport.abort()  # no closing handshake with a dead box
    except BaseException:
        await asyncio.to_thread(box.stop, signal.SIGKILL)
        raise
    return current, value, box


async def burst(
    ws: ClientConnection,
    plugin_id: str,
    number: int,
    pace: random.Random,
    current: Round,
) -> None:
    """Knob changes one after the other, each noted once its echo came back."""
    base = -80.0 if number % 2 else -30.0  # each round's values differ from the last's
    for k in range(BURST):
        sent = round(base + k * 0.1, 1)
        data = {"track_id": TRACK, "plugin_id": plugin_id, "parameter_id": "gain", "parameter_value": sent}
        await ws.send(json.dumps({"id": f"p{k}", "type": "PLUGIN_PARAMETER", "data": data}))
        while json.loads(await ws.recv()).get("reply_to") != f"p{k}":
            pass
        current.acked.append((time.monotonic(), sent))
        await asyncio.sleep(pace.uniform(0.002, 0.03))
