"""The dry path: when the box ends, each track's input is wired straight to its outputs.

On the Pi the JACK server is a service of its own and outlives the box. If
the box crashes (or is killed, or stops), its plugins end with it and every
track would fall silent until it is back. This small process, started with
the engine, waits for the box to end and then connects each track's inputs
straight to its outputs, so that the player hears the dry guitar meanwhile::

    python -m appliance.engine.jack.drypath --server NAME --pair SRC=DST ...

It ends the moment the box does: its stdin (the box's pipe) closes, or it
gets SIGTERM (``setpriv --pdeathsig`` when the box dies, systemd when the
service stops). Its JACK client is opened at start and never activated, so
it is not in the audio graph and connects at once. The box, back, replaces
these connections with its chains (the wiring owns every straight track
input → output connection).

With a private JACK server (the virtual box) there is nothing to keep: the
server ends with the box.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from types import FrameType
from typing import Any

import jack  # type: ignore[import-untyped]

from .. import TrackPorts
from ..chain import wire_pairs
from ..processes import Child
from .server import jack_environment

log = logging.getLogger("appliance.engine.jack.drypath")

#: How long the keeper may take to wire the dry path and exit once told.
KEEPER_STOP_TIMEOUT = 2.0
#: How long the keeper keeps trying to make the dry connections once the box has ended.
CONNECT_FOR = 30.0
#: Pause between two tries.
CONNECT_RETRY = 0.1

Pair = tuple[str, str]


def dry_pairs(tracks: Iterable[TrackPorts]) -> list[Pair]:
    """Each track's inputs to its outputs, as its empty chain would wire them."""
    return [pair for track in tracks for pair in wire_pairs(track.inputs, track.outputs)]


def argv(server: str | None, pairs: Sequence[Pair]) -> list[str]:
    """The keeper's command line."""
    command = [sys.executable, "-m", "appliance.engine.jack.drypath"]
    if server is not None:
        command += ["--server", server]
    for source, destination in pairs:
        command += ["--pair", f"{source}={destination}"]
    return command


class DryPathKeeper:
    """The keeper process, from the box's side. Loop thread only.

    Args:
        server: the JACK server (None: the default one).
        tracks: whose inputs and outputs it wires when the box ends.
    """

    def __init__(self, server: str | None, tracks: Iterable[TrackPorts]) -> None:
        self.server = server
        self.pairs = dry_pairs(tracks)
        self._child: Child | None = None

    async def start(self) -> None:
        """Start it; a keeper that cannot start is logged (the box runs without it)."""
        env = jack_environment(self.server)
        child = Child(argv(self.server, self.pairs), "dry path", env, stdin=True, output=False)
        try:
            await child.start()
        except OSError as exc:
            log.warning("no dry path on a crash: %s", exc)
            return
        self._child = child

    async def release(self) -> None:
        """The box stops: the keeper wires the dry path now, and ends."""
        child, self._child = self._child, None
        if child is not None:
            stdin = child.stdin
            await child.end(stdin.close if stdin is not None else None, KEEPER_STOP_TIMEOUT)


class _Ended(Exception):
    """The box has ended (SIGTERM)."""


def _ended(signum: int, frame: FrameType | None) -> None:
    raise _Ended


def _connect(client: Any, pairs: Sequence[tuple[str, ...]], deadline: float) -> None:
    """Make every connection, trying again while JACK is busy dropping the dead box's
    clients (seen to take over 5 s); a pair already connected is done."""
    waiting = list(pairs)
    while waiting and time.monotonic() < deadline:
        for pair in list(waiting):
            try:
                client.connect(pair[0], pair[1])
            except jack.JackErrorCode as exc:
                if exc.code != errno.EEXIST:
                    continue  # busy, or a port not there (yet): next round
            except jack.JackError:
                continue
            waiting.remove(pair)
        if waiting:
            time.sleep(CONNECT_RETRY)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="appliance.engine.jack.drypath")
    parser.add_argument("--server")
    parser.add_argument("--pair", action="append", default=[], help="SOURCE=DESTINATION port names")
    options = parser.parse_args(args)
    pairs = [tuple(p.split("=", 1)) for p in options.pair]
    signal.signal(signal.SIGTERM, _ended)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the box's terminal is the box's
    name = f"appliance-drypath-{os.getpid()}"
    client = jack.Client(name, servername=options.server, no_start_server=True)
    try:
        with contextlib.suppress(_Ended):
            sys.stdin.buffer.read()  # until the box's end of the pipe closes
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _connect(client, pairs, time.monotonic() + CONNECT_FOR)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
