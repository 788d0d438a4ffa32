"""The protocol fuzzed against a running virtual box: 100,000 messages, figures.

Run ``python -m hil.bench_fuzz [--messages 100000] [--connections 1] [--seed 1]``.
The box runs as a user runs it (``python -m appliance run``, jalv on its own
JACK dummy server, default limits). Messages come from :mod:`tests.fuzz` (the
protocol's field table as hypothesis strategies, byte mutations of valid
messages, deep nesting, huge numbers, binary frames). With one connection, each
is also carried out on an in-memory box (the same control stack on the
in-memory engine): what it refuses, the box must refuse with the same code,
and what it accepts, the box must accept. With several (``--connections 4``),
their messages are shared out among them and sent at the same time, and their
requests interleave on the box: the in-memory box is not followed. After each
message its connection asks for a structural no-op (a ``PLUGIN_MOVE`` of no
plugin, which waits for any add, remove or load under way) and a PING, so
that every answer is known before the connection's next message.

Printed: messages and rate, accepted and refused by code, disagreements with
the in-memory box (target 0), unexpected codes (``INTERNAL`` or undocumented;
target 0), connections dropped (target 0), the board and pedalboards at the end
against the in-memory box's (target: equal), ``board.json`` 1.5 s after the
last answer against the live board (target: equal; compared before every
request has been answered, it is behind by whatever the queued adds, moves
and loads still change), and the box's RSS at start, peak and end. A
measurement: exits 0 whatever the figures. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from hypothesis.errors import NonInteractiveExampleWarning
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from appliance.control.library import SWITCHING
from appliance.core import protocol
from appliance.core.errors import ERROR_CODES, ApplianceError
from tests import fuzz
from tests.boxproc import BoxProcess, virtual_config
from tests.fakes import ControlStack
from tests.test_fuzz import CATALOG, TRACK

ANSWER_TIMEOUT = 30.0
#: When board.json is read after the last answer: every change is saved 0.75 s after it at most.
SAVED_AFTER = 1.5
#: How often the box's RSS is read.
RSS_EVERY = 5.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


#: Requests the box carries out beside a client's stream (their answers may come later).
STRUCTURAL = {"PLUGIN_ADD", "PLUGIN_REMOVE", "PLUGIN_MOVE", "TUNER_SET"} | set(SWITCHING)


#: How long a structural request without an id is given before the no-op (it cannot be told
#: apart: a load reads its file before it queues for the board, so it may answer after the no-op).
ANONYMOUS_SETTLE = 0.3


def _own_answer(message: str | bytes) -> str | None:
    """The id a structural request's answer will carry ("" for one without an id; None for
    anything else: a message that fails its checks is answered at once, in line)."""
    try:
        request = protocol.decode(message)
    except ApplianceError:
        return None
    return (request.id or "") if request.type in STRUCTURAL else None


async def answers(ws: ClientConnection, message: str | bytes, n: int | str) -> list[dict[str, Any]]:
    """Send a message; wait for a structural one's own answer, then for the answer to a
    structural no-op (every add, remove or load before it is done) and a PING.
    Everything the box sent meanwhile but the answers to those two."""
    await ws.send(message)
    seen: list[dict[str, Any]] = []
    own = _own_answer(message)
    async with asyncio.timeout(ANSWER_TIMEOUT):
        if own == "":
            await asyncio.sleep(ANONYMOUS_SETTLE)
        while own:
            seen.append(answer := json.loads(await ws.recv()))
            if answer.get("reply_to") == own:
                break
        barrier = {"track_id": TRACK, "plugin_id": "barrier", "position": 0}
        await ws.send(json.dumps({"id": f"b{n}", "type": "PLUGIN_MOVE", "data": barrier}))
        while (answer := json.loads(await ws.recv())).get("reply_to") != f"b{n}":
            seen.append(answer)
        await ws.send(json.dumps({"id": f"s{n}", "type": "PING"}))
        while (answer := json.loads(await ws.recv())).get("reply_to") != f"s{n}":
            seen.append(answer)
    return seen


async def expected(reference: ControlStack, message: str | bytes) -> str | None:
    """The in-memory box's verdict: None (accepted) or the error code."""
    try:
        request = protocol.decode(message)
        if request.type != "METERS_SUBSCRIBE":
            await reference.controller.execute(request)
        elif not isinstance(request.data.get("on", True), bool):
            return "INVALID_VALUE"
    except ApplianceError as exc:
        return exc.code
    return None


async def reference_list(reference: ControlStack) -> dict[str, Any]:
    """What the in-memory box answers PEDALBOARD_LIST with."""
    outcome = await reference.controller.execute(protocol.Request("PEDALBOARD_LIST", {}))
    return outcome.reply[0][1]


def state_of(board: dict[str, Any], library: dict[str, Any]) -> dict[str, Any]:
    plugins = [
        (p["plugin_id"], p["plugin"], p["parameters"], p["bypass"])
        for t in board["tracks"]
        for p in t["plugins"]
    ]
    return {"plugins": plugins, "pedalboards": library.get("pedalboards"), "setlist": library.get("setlist")}


@dataclasses.dataclass
class Tally:
    """What the connections saw."""

    codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    disagreements: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    dropped: int = 0


async def drive(
    box: BoxProcess, messages: list[str | bytes], tag: str, tally: Tally, reference: ControlStack | None
) -> None:
    """One connection: each message, its answers; against the in-memory box when there is one."""
    ws = await connect(box.ws_url, max_size=None)
    try:
        for n, message in enumerate(messages):
            verdict = await expected(reference, message) if reference is not None else None
            try:
                seen = await answers(ws, message, f"{tag}{n}")
            except ConnectionClosed:
                tally.dropped += 1
                ws = await connect(box.ws_url, max_size=None)
                continue
            errors = [m["data"]["code"] for m in seen if m["type"] == "ERROR"]
            got = errors[0] if errors else None
            tally.codes[got or "accepted"] += 1
            if any(code not in ERROR_CODES or code == "INTERNAL" for code in errors):
                tally.unexpected.append(f"{message!r:.200} -> {errors}")
            if reference is not None and got != verdict:
                tally.disagreements.append(f"{message!r:.200}: box {got}, in-memory {verdict}")
    finally:
        await ws.close()


async def ask(box: BoxProcess, kind: str) -> dict[str, Any]:
    """One request on a connection of its own; its answer's data."""
    async with connect(box.ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"id": "ask", "type": kind}))
        while (answer := json.loads(await ws.recv())).get("reply_to") != "ask":
            pass
    data: dict[str, Any] = answer["data"]
    return data


def saved_plugins(board_file: Path) -> list[tuple[Any, ...]]:
    """``board.json``'s plugins as :func:`state_of` lists the live board's."""
    data = json.loads(board_file.read_text())
    return [
        (p["id"], p["plugin"], p["values"], p["bypass"]) for t in data["tracks"] for p in t.get("chain", [])
    ]


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=1, help="clients sending at the same time")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    random.seed(args.seed)
    warnings.simplefilter("ignore", NonInteractiveExampleWarning)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as folder:
        root = Path(folder)
        box = BoxProcess(virtual_config(root, own_server_name=True, demo=[], data_dir=root / "data"))
        await asyncio.to_thread(box.start)
        reference = None
        if args.connections == 1:  # several connections interleave: no one order to follow
            reference = ControlStack(CATALOG, root / "reference", TRACK)
            await reference.engine.start()
            await reference.library.start(None)
        assert box.proc is not None
        rss = [rss_kib(box.proc.pid)]
        messages = [fuzz.messages.example() for _ in range(args.messages)]
        started = time.monotonic()
        try:
            sampling = asyncio.create_task(sample_rss(box.proc.pid, rss))
            await asyncio.gather(
                *(
                    drive(box, messages[c :: args.connections], f"c{c}.", tally, reference)
                    for c in range(args.connections)
                )
            )
            elapsed = time.monotonic() - started
            sampling.cancel()
            final = await ask(box, "BOARD_GET")
            library = await ask(box, "PEDALBOARD_LIST")
            await asyncio.sleep(SAVED_AFTER)
            saved = saved_plugins(root / "data" / "board.json")
            later = await ask(box, "BOARD_GET")
            rss.append(rss_kib(box.proc.pid))
        finally:
            await asyncio.to_thread(box.stop)
        live = state_of(final, library)
        kept = saved == live["plugins"] and state_of(later, library) == live
        ends = None
        if reference is not None:
            ends = (live, state_of(reference.controller.board_state(), await reference_list(reference)))

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    rate = args.messages / elapsed
    print(
        f"messages: {args.messages} over {args.connections} connection(s) in {elapsed:.0f} s "
        f"({rate:.0f}/s, seed {args.seed})"
    )
    print("answers: " + ", ".join(f"{code} {count}" for code, count in tally.codes.most_common()))
    if reference is not None:
        disagreements = tally.disagreements
        ok = verdict(not disagreements)
        print(f"disagreeing with the in-memory box: {len(disagreements)}  target 0  {ok}")
        for line in disagreements[:10]:
            print(f"  {line}")
    else:
        print("the in-memory box is not followed: the connections' requests interleave")
    unexpected = tally.unexpected
    print(f"unexpected codes (INTERNAL, unlisted): {len(unexpected)}  target 0  {verdict(not unexpected)}")
    for line in tally.unexpected[:10]:
        print(f"  {line}")
    print(f"connections dropped: {tally.dropped}  target 0  {verdict(not tally.dropped)}")
    if ends is not None:
        same = ends[0] == ends[1]
        print(f"board and pedalboards at the end equal the in-memory box's: {same}  {verdict(same)}")
        if not same:
            print(f"  box:       {ends[0]}\n  in-memory: {ends[1]}")
    print(
        f"board.json {SAVED_AFTER} s after the last answer equals the live board (ids, order, values, "
        f"bypass): {kept}  {verdict(kept)}"
    )
    if not kept:
        print(f"  board.json: {saved}\n  live:       {live['plugins']}")
        print(f"  later:      {state_of(later, library)['plugins']}")
    mib = [kib / 1024 for kib in rss]
    print(f"box RSS: start {mib[0]:.1f} MiB, peak {max(mib):.1f} MiB, end {mib[-1]:.1f} MiB")
    return 0


async def sample_rss(pid: int, into: list[int]) -> None:
    """The box's RSS every :data:`RSS_EVERY` seconds."""
    while True:
        await asyncio.sleep(RSS_EVERY)
        into.append(rss_kib(pid))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
