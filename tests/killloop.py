"""Power cuts while saving: the box killed (SIGKILL) at a random moment during a burst of
changes, then started again. Used by ``tests/test_power_cut.py`` (a few rounds) and
``hil/bench_kill.py`` (hundreds).

Each round starts the virtual box on the same data folder, reads the board it
came back with, sends a burst of ``PLUGIN_PARAMETER`` changes to one gain
(each acknowledged by its echo, the time noted), and kills the box somewhere in
the burst. The next round's start says what was saved. A change acknowledged
more than :data:`PROMISE` seconds before the kill must be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from appliance.app import private_server_name
from appliance.engine.jackserver import DummySettings, JackServer
from tests.boxproc import BoxProcess, virtual_config

TRACK = "track_001"
#: No change acknowledged this long before the cut may be lost (seconds).
PROMISE = 1.0
#: How long one answer may take.
ANSWER_TIMEOUT = 10.0


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


def config(folder: Path) -> Path:
    """The virtual box on its own server, with one gain on its board."""
    return virtual_config(folder, own_server_name=True, demo=[{"plugin": "gain"}], data_dir=folder / "data")


async def board(ws: ClientConnection) -> tuple[str, float]:
    """The gain's plugin id and value, as the box replays its board."""
    await ws.send(json.dumps({"id": "sync", "type": "PING"}))
    found: tuple[str, float] | None = None
    async with asyncio.timeout(ANSWER_TIMEOUT):
        while (message := json.loads(await ws.recv())).get("reply_to") != "sync":
            if message["type"] == "PLUGIN_ADD":
                found = (message["data"]["plugin_id"], float(message["data"]["parameters"]["gain"]))
    assert found is not None, "the board came back without its gain"
    return found


def judge(previous: Round, value: float) -> Verdict:
    """Whether the value a box came back with keeps the promise for the round before."""
    values = [v for _, v in previous.acked]
    newest_kept = values.index(value) if value in values else -1
    lost = previous.acked[newest_kept + 1 :]
    lost_age = previous.killed_at - lost[0][0] if lost else 0.0
    old = [i for i, (t, _) in enumerate(previous.acked) if previous.killed_at - t > PROMISE]
    return Verdict(kept=not old or old[-1] <= newest_kept, lost_age=max(0.0, lost_age))


async def rounds(folder: Path, count: int, seed: int = 1) -> list[tuple[Round, Verdict]]:
    """``count`` rounds on one data folder; each with what the start after it found."""
    rng = random.Random(seed)
    judged: list[tuple[Round, Verdict]] = []
    previous: Round | None = None
    for number in range(count + 1):
        current, value = await one_round(folder, number, rng, last=number == count)
        if previous is not None:
            judged.append((previous, judge(previous, value)))
        previous = current
    await reclaim(private_server_name(folder / "data"))
    return judged


async def reclaim(name: str) -> None:
    """Give back the JACK server slot a killed box's server kept: start a server of that name
    and stop it cleanly (what the box's next start does). JACK has 8 slots per machine."""
    server = JackServer(name, DummySettings())
    await server.start()
    await server.stop()


async def one_round(folder: Path, number: int, rng: random.Random, last: bool = False) -> tuple[Round, float]:
    """Start the box, burst, kill. Returns the round and the value the box came back with."""
    box = BoxProcess(config(folder))
    started = time.monotonic()
    await asyncio.to_thread(box.start)
    current = Round(back_after=time.monotonic() - started)
    try:
        async with connect(box.ws_url, open_timeout=ANSWER_TIMEOUT) as ws:
            plugin_id, value = await board(ws)
            if last:  # only to read what the round before left
                return current, value
            base = -80.0 if number % 2 else -30.0  # each round's values differ from the last's

            async def burst() -> None:
                for k in range(400):
                    sent = round(base + k * 0.1, 1)
                    message = {"track_id": TRACK, "plugin_id": plugin_id, "parameter_id": "gain"}
                    await ws.send(
                        json.dumps(
                            {
                                "id": f"p{k}",
                                "type": "PLUGIN_PARAMETER",
                                "data": {**message, "parameter_value": sent},
                            }
                        )
                    )
                    while json.loads(await ws.recv()).get("reply_to") != f"p{k}":
                        pass
                    current.acked.append((time.monotonic(), sent))
                    await asyncio.sleep(rng.uniform(0.002, 0.03))

            task = asyncio.ensure_future(burst())
            await asyncio.sleep(rng.uniform(0.2, 2.5))
            current.killed_at = time.monotonic()
            assert box.proc is not None
            box.proc.send_signal(signal.SIGKILL)  # a power cut, as the box sees it
            with contextlib.suppress(Exception):
                await task
    finally:
        await asyncio.to_thread(box.stop, signal.SIGKILL)
    return current, value
