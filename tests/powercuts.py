"""Real power cuts: the Debian card in QEMU, unplugged during a burst of knob changes, round
after round. Used by ``tests/test_card.py`` (a few cuts) and ``hil/bench_power.py`` (100).

Killing QEMU loses everything the guest had not written to its virtual disk: its page
cache, the box's unsaved changes, a file half-written: what a player's unplug does to a
Pi (an SD card may also lose writes in its own cache; QEMU's disk keeps every write it
got, so that part is not played here). Each round powers the card up, waits until the
box plays, reads the board it came back with, adds nothing, sends a burst of
``PLUGIN_PARAMETER`` changes to a gain (each acknowledged by its echo, the time noted,
as :mod:`tests.killloop` does for SIGKILL) and pulls the plug somewhere in the burst.
The next round's boot says what was saved: a change acknowledged more than
:data:`~tests.killloop.PROMISE` seconds before the cut must be there, and the whole
board must be back (a damaged board.json is set aside by the box: the board would come
back empty or as the demo).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from image.card.qemu import Machine
from tests.killloop import ANSWER_TIMEOUT, Round, Verdict, burst, judge, kill_delays, replayed

TRACK = "track_001"
#: How long the box may take to answer once it plays (an emulated CPU), seconds.
SLOW_ANSWER = 60.0


@dataclasses.dataclass
class Cut:
    """One round: its burst and cut, what the next boot found, and how long that boot took."""

    round: Round
    verdict: Verdict
    boot_seconds: float


async def board(ws: ClientConnection) -> tuple[list[str], str | None, float | None]:
    """The board's plugins (by name, in order) as the box replays it, and its gain's id and value."""
    return await replayed(ws, SLOW_ANSWER)


async def request(ws: ClientConnection, kind: str, **data: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"id": kind, "type": kind, "data": data}))
    async with asyncio.timeout(SLOW_ANSWER):
        while (message := json.loads(await ws.recv())).get("reply_to") != kind:
            pass
    if message["type"] == "ERROR":
        raise AssertionError(f"{kind} refused: {message['data']}")
    return dict(message)


async def power_cuts(
    machine: Machine, count: int, seed: int, log: Callable[[str], None] = print
) -> list[Cut]:
    """``count`` cuts of ``machine`` (off at the start; left off), each judged by the boot after it.

    Raises:
        MachineError: a boot did not bring the box back playing.
        AssertionError: a boot brought back another board than the one cut.
    """
    delays = kill_delays(seed, count)
    cuts: list[Cut] = []
    previous: Round | None = None
    expected: list[str] | None = None
    for number in range(count + 1):
        machine.power_on()
        try:
            boot_seconds = await asyncio.to_thread(machine.wait_ready)
            token = (await asyncio.to_thread(machine.read_file, "appliance-token.txt")).strip()
            url = f"ws://127.0.0.1:{machine.port}/ws?token={token}"
            ws = await connect(url, open_timeout=SLOW_ANSWER, max_size=None)
            try:
                plugins, plugin_id, value = await board(ws)
                if plugin_id is None:  # the first boot: the demo board, and a gain for the knob
                    added = await request(ws, "PLUGIN_ADD", track_id=TRACK, name="gain")
                    plugin_id, value = added["data"]["plugin_id"], 0.0
                    plugins = [*plugins, "gain"]  # (a second PING on this connection replays nothing)
                if expected is not None and plugins != expected:
                    raise AssertionError(f"round {number}: the board came back as {plugins}, not {expected}")
                expected = plugins
                assert value is not None
                if previous is not None:
                    verdict = judge(previous, value)
                    cuts.append(Cut(previous, verdict, boot_seconds))
                    log(
                        f"cut {number}: back in {boot_seconds:.1f} s, value {value}, "
                        f"{'kept' if verdict.kept else 'LOST'} (oldest lost {verdict.lost_age:.2f} s before the cut)"
                    )
                if number == count:
                    await ws.close()
                    break
                current = Round(back_after=boot_seconds)
                pace = random.Random(f"{seed}-{number}")
                task = asyncio.ensure_future(burst(ws, plugin_id, number, pace, current))
                async with asyncio.timeout(ANSWER_TIMEOUT * 3):
                    while not current.acked:  # the cut is timed from the first acknowledged change
                        if task.done():
                            task.result()
                        await asyncio.sleep(0.005)
                await asyncio.sleep(delays[number])
                current.killed_at = time.monotonic()
                machine.power_cut()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                previous = current
            finally:
                ws.transport.abort()
        finally:
            machine.power_cut()
    return cuts
