"""The rig's JACK clients, in a process of their own: ``python -m hil.rig.clients FD``.

The rig's player and recorder (and :class:`tests.rig.MockInterface`'s two
clients) have Python process callbacks: each period, JACK's audio thread
needs the GIL. In the process that runs the tests, the asyncio loop, numpy
analysis or a browser driver holds the GIL for up to the interpreter's
switch interval (5 ms, two periods at 128 frames), and the rig itself then
missed cycles; and JACK2, closing a client, cancels threads that may be
waiting for the GIL, which froze that process for good. So the clients live
here, in a child whose main thread only waits on its socket: the GIL is
free for the audio threads, and the parent process has no JACK client at all.

The parent (:mod:`tests.rig`) starts this module with one end of a socket
pair (file descriptor ``FD``) and a memfd for the frame clock (``--clock``),
and speaks :mod:`multiprocessing.connection` messages over the socket::

    parent                                      child
    {config}                              ──▶
                                          ◀──   ("ready", samplerate, blocksize) | ("error", text)
    ("take", id, frames, channels, extra) ──▶   (then the signal's bytes)
                                          ◀──   ("started", id, first frame)
                                          ◀──   ("took", id, xruns, xrun frames) + reference + recorded bytes
    ("stall", seconds)                    ──▶   (no answer: the player's next cycle sleeps)
    ("collect", times)                    ──▶   (no answer: full garbage collections, here)
    ("xruns", id)                         ──▶
                                          ◀──   ("done", id, xruns since the clients opened)
    ("connect" | "disconnect", id, a, b)  ──▶
                                          ◀──   ("done", id) | ("failed", id, text)
    ("close",)                            ──▶
                                          ◀──   ("closed",), then the child exits

A take's xruns are every xrun JACK tells of from the moment the take is
scheduled until a few periods (:data:`XRUN_REACH_PERIODS`, at least
:data:`XRUN_REACH` frames) after its last frame: JACK tells of an xrun on its
notification thread, a little after the cycle that was missed.
The child ends by itself when its socket closes (the parent died), on
SIGTERM (``setpriv --pdeathsig``), or when JACK shuts its clients down.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import mmap
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import jack

#: Periods between scheduling a take and its first frame (time for both clients to see it).
TAKE_LEAD_PERIODS = 3
#: How long after a take's last frame an xrun notice still counts for it: this many
#: periods, and at least :data:`XRUN_REACH` frames (50 ms). JACK finds an xrun at the
#: next cycle and tells of it on its notification thread: here 4 to 5 ms after a
#: 128-frame cycle was missed.
XRUN_REACH_PERIODS = 4
XRUN_REACH = 2400
#: How often the main thread looks whether a take is complete, seconds.
TAKE_POLL = 0.002
#: How often it looks for JACK's shutdown when nothing is under way, seconds.
IDLE_POLL = 0.05
#: The GIL's switch interval here, seconds (Python's default is 5 ms, two periods at 128 frames).
SWITCH_INTERVAL = 0.0005
#: The realtime priority of this process's other threads that take the GIL (its main thread,
#: JACK's notification thread): the lowest, under every audio thread, above every ordinary task.
GIL_HOLDER_PRIORITY = 1
#: Exit status when JACK shut the clients down (the server went away).
EXIT_SHUTDOWN = 3

_WRAP = 1 << 32
#: mlockall(2)'s flags: what is mapped now, and whatever is mapped later (populated at once).
_MCL_CURRENT, _MCL_FUTURE = 1, 2


def lock_memory() -> str | None:
    """Lock this process's memory, present and future, so that JACK's audio threads here never
    wait for a page: one paged out, or one first touched (a fault takes the process's memory
    lock, which the main thread may hold while it maps a take's buffers, and a busy machine may
    not run it again for longer than a period). Returns why not, where locking is not allowed.
    """
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def lift_this_thread() -> str | None:
    """Give the calling thread the lowest realtime priority; why not, where not allowed.

    An audio thread here waits for the GIL whenever another thread of this process
    holds it, and an ordinary thread that a busy machine preempts while holding it
    keeps it until the machine runs it again: beside a second test process, the
    player's callback overran a 21 ms period so (jackd: "rig-play was not finished,
    state = Running") while a realtime probe on both cores never waited 7 ms.
    Realtime, the holder runs on as soon as it is ready and lets the GIL go.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(GIL_HOLDER_PRIORITY))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def frames_since(now: int, start: int) -> int:
    """Signed distance on JACK's 32-bit frame clock."""
    return ((now - start + (1 << 31)) % _WRAP) - (1 << 31)


class SharedClock:
    """The frame clock, shared by the child (writes each cycle) and the parent (reads).

    Four int64 slots in shared memory: a sequence number (odd while a write
    is under way), the frame time of the last cycle, ``time.monotonic_ns()``
    when the player saw it, and the period. The parent extrapolates between
    cycles as ``jack_frame_time`` does.
    """

    SIZE = 4 * 8

    def __init__(self, buffer: mmap.mmap) -> None:
        self._buffer = buffer
        self._slots = np.frombuffer(buffer, dtype=np.int64, count=4)

    def write(self, frame: int, blocksize: int) -> None:
        """Audio thread (the player's), once a cycle."""
        slots = self._slots
        slots[0] += 1
        slots[1] = frame
        slots[2] = time.monotonic_ns()
        slots[3] = blocksize
        slots[0] += 1

    def now(self, samplerate: int) -> int | None:
        """The frame time now, extrapolated from the last cycle; None before the first cycle."""
        slots = self._slots
        for _ in range(1000):
            sequence = int(slots[0])
            frame, stamp = int(slots[1]), int(slots[2])
            if sequence % 2 == 0 and int(slots[0]) == sequence:
                break
        else:
            return None
        if sequence == 0:
            return None
        elapsed = max(0, time.monotonic_ns() - stamp)
        return (frame + elapsed * samplerate // 1_000_000_000) % _WRAP


class _Ended(Exception):
    """SIGTERM: the parent died (``--pdeathsig``) or someone ends the rig."""


def _ended(signum: int, frame: FrameType | None) -> None:
    raise _Ended


@dataclass(eq=False)
class _Take:
    """One scheduled play-and-record. Written by the JACK callbacks."""

    id: int
    start: int
    signal: np.ndarray  # (frames, channels)
    reference: np.ndarray  # (length,)
    recorded: np.ndarray  # (length, channels)
    done: bool = False
    xruns: int = 0
    xrun_frames: list[int] = field(default_factory=list)  # where each was told, in frames into the take


class Clients:
    """What the two kinds of child share: the socket, closing, JACK's shutdown."""

    def __init__(self, conn: Connection, clock: SharedClock, config: dict[str, Any]) -> None:
        self.conn = conn
        self.clock = clock
        self.config = config
        self.clients: tuple[jack.Client, ...] = ()
        self.closing = False
        self.shutdown: str | None = None

    def open(self) -> tuple[int, int]:
        """Open, activate and connect the clients; (samplerate, blocksize)."""
        raise NotImplementedError

    def handle(self, message: tuple[Any, ...]) -> None:
        """One message from the parent (other than ``close``)."""
        kind = message[0]
        if kind in ("connect", "disconnect"):
            _, request, source, target = message
            try:
                getattr(self.clients[0], kind)(source, target)
            except Exception as exc:
                self.conn.send(("failed", request, f"{type(exc).__name__}: {exc}"))
            else:
                self.conn.send(("done", request))
        else:
            raise ValueError(f"unknown message {kind!r}")

    def tick(self) -> float:
        """Main thread, between messages: look after the take under way; the next poll's timeout."""
        return IDLE_POLL

    def close(self) -> None:
        """Deactivate the clients, the one downstream first, then close them. Blocking.

        JACK2 cancels a realtime client's audio thread once the server has
        taken the client out of the graph; here nothing else holds the GIL,
        so that thread has finished its last cycle and waits for the next one
        (a cancellation point), not for the GIL.
        """
        self.closing = True
        for client in reversed(self.clients):
            client.deactivate()
        for client in self.clients:
            client.close()
        self.clients = ()

    def _shutdown(self, status: Any, reason: str) -> None:
        """JACK's thread: the server shut the clients down (it went away)."""
        self.shutdown = reason or "the JACK server went away"


class RigClients(Clients):
    """The rig's player and recorder (see :class:`tests.rig.Rig`)."""

    def __init__(self, conn: Connection, clock: SharedClock, config: dict[str, Any]) -> None:
        super().__init__(conn, clock, config)
        self.channels = int(config["channels"])
        self._outs: tuple[jack.OwnPort, ...] = ()
        self._ref: jack.OwnPort | None = None
        self._recs: tuple[jack.OwnPort, ...] = ()
        self._take: _Take | None = None
        self._reach_until: int | None = None
        self._stall = 0.0
        self._blocksize = 0
        self._last_notice: int | None = None
        self._lifted = False  # JACK's notification thread made realtime (at its first notice)
        #: Every xrun JACK told of since the clients opened.
        self.xruns = 0

    def open(self) -> tuple[int, int]:
        import jack

        server = self.config["server"]
        play, rec = self.config["names"]
        player = jack.Client(play, servername=server, no_start_server=True)
        recorder = jack.Client(rec, servername=server, no_start_server=True)
        self.clients = (player, recorder)
        player.set_process_callback(self._play)
        recorder.set_process_callback(self._record)
        recorder.set_xrun_callback(self._xrun)
        player.set_shutdown_callback(self._shutdown)
        self._blocksize = player.blocksize
        player.activate()
        recorder.activate()
        self._outs = tuple(player.outports.register(f"play_{i + 1}") for i in range(self.channels))
        self._ref = recorder.inports.register("ref_1")
        self._recs = tuple(recorder.inports.register(f"rec_{i + 1}") for i in range(self.channels))
        plays = [f"{play}:play_{i + 1}" for i in range(self.channels)]
        recs = [f"{rec}:rec_{i + 1}" for i in range(self.channels)]
        player.connect(plays[0], f"{rec}:ref_1")
        for source, target in zip(plays, self.config["play_to"], strict=False):
            player.connect(source, target)
        for source, target in zip(self.config["record_from"], recs, strict=False):
            recorder.connect(source, target)
        return player.samplerate, player.blocksize

    def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "take":
            _, take_id, frames, channels, extra = message
            data = np.frombuffer(self.conn.recv_bytes(), dtype=np.float32).reshape(frames, channels)
            self._schedule(take_id, data, extra)
        elif kind == "stall":
            self._stall = float(message[1])
        elif kind == "collect":
            for _ in range(int(message[1])):
                gc.collect()
        elif kind == "xruns":
            self.conn.send(("done", message[1], self.xruns))
        else:
            super().handle(message)

    def _schedule(self, take_id: int, data: np.ndarray, extra_frames: int) -> None:
        if self._take is not None:
            self.conn.send(("failed", take_id, "one take at a time"))
            return
        length = data.shape[0] + extra_frames
        recorder = self.clients[1]
        start = (recorder.frame_time + TAKE_LEAD_PERIODS * self._blocksize) % _WRAP
        self._reach_until = None
        self._take = _Take(
            id=take_id,
            start=start,
            signal=data,
            # written here, not first in the audio thread: a first touch page-faults, and a
            # fault can wait for this process's memory lock while the main thread holds it
            reference=np.full(length, 0.0, dtype=np.float32),
            recorded=np.full((length, self.channels), 0.0, dtype=np.float32),
        )
        self.conn.send(("started", take_id, start))

    def tick(self) -> float:
        take = self._take
        if take is None:
            return IDLE_POLL
        if not take.done:
            return TAKE_POLL
        if self._reach_until is None:
            reach = max(XRUN_REACH, XRUN_REACH_PERIODS * self._blocksize)
            self._reach_until = (take.start + len(take.reference) + reach) % _WRAP
        if frames_since(self.clients[1].frame_time, self._reach_until) < 0:
            return TAKE_POLL
        self._take = None  # later notices are no longer this take's
        self.conn.send(("took", take.id, take.xruns, list(take.xrun_frames)))
        self.conn.send_bytes(take.reference.data.cast("B"))
        self.conn.send_bytes(np.ascontiguousarray(take.recorded).data.cast("B"))
        return IDLE_POLL

    # -- JACK's audio thread ---------------------------------------------------------

    def _play(self, frames: int) -> None:
        player = self.clients[0]
        self.clock.write(player.last_frame_time, frames)
        if self._stall:
            stall, self._stall = self._stall, 0.0
            time.sleep(stall)  # on purpose: the rig plays a misbehaving client
        outs = self._outs
        for port in outs:
            port.get_array().fill(0.0)
        take = self._take
        if self.closing or take is None:
            return
        offset = frames_since(player.last_frame_time, take.start)
        total = take.signal.shape[0]
        if offset + frames <= 0 or offset >= total:
            return
        a, b = max(0, -offset), min(frames, total - offset)
        for i, port in enumerate(outs):
            port.get_array()[a:b] = take.signal[offset + a : offset + b, i]

    def _record(self, frames: int) -> None:
        if self.closing:
            return
        take = self._take
        ref = self._ref
        if take is None or take.done or ref is None:
            return
        offset = frames_since(self.clients[1].last_frame_time, take.start)
        total = take.reference.shape[0]
        if offset + frames <= 0:
            return
        if offset < total:
            a, b = max(0, -offset), min(frames, total - offset)
            take.reference[offset + a : offset + b] = ref.get_array()[a:b]
            for i, port in enumerate(self._recs):
                take.recorded[offset + a : offset + b, i] = port.get_array()[a:b]
        if offset + frames >= total:
            take.done = True

    def _xrun(self, delayed_usecs: float) -> None:
        """JACK's notification thread: the server missed a deadline; it counts for the take
        under way (from its scheduling to :data:`XRUN_REACH` frames after its end).

        JACK2 tells of one missed cycle once for each client that had not
        finished it: a notice within half a period of the last is the same xrun.
        """
        if self.closing:
            return
        if not self._lifted:
            self._lifted = True
            lift_this_thread()
        now = self.clients[1].frame_time
        last, self._last_notice = self._last_notice, now
        if last is not None and 0 <= frames_since(now, last) < self._blocksize // 2:
            return
        self.xruns += 1
        take = self._take
        if take is not None:
            take.xruns += 1
            take.xrun_frames.append(frames_since(now, take.start))


class InterfaceClients(Clients):
    """:class:`tests.rig.MockInterface`'s two clients: a delay line and a straight copy."""

    def __init__(self, conn: Connection, clock: SharedClock, config: dict[str, Any]) -> None:
        super().__init__(conn, clock, config)
        self.delay = int(config["delay"])
        self._ports: dict[str, jack.OwnPort] = {}
        self._line = np.zeros(0, dtype=np.float32)

    def open(self) -> tuple[int, int]:
        import jack

        server = self.config["server"]
        out_name, in_name = self.config["names"]
        out = jack.Client(out_name, servername=server, no_start_server=True)
        inp = jack.Client(in_name, servername=server, no_start_server=True)
        self.clients = (out, inp)
        self._line = np.zeros(self.delay + out.blocksize, dtype=np.float32)
        out.set_process_callback(self._play)
        inp.set_process_callback(self._capture)
        out.set_shutdown_callback(self._shutdown)
        self._ports = {
            "playback": out.inports.register("playback_1"),
            "line_out": out.outports.register("line_out_1"),
            "line_in": inp.inports.register("line_in_1"),
            "capture": inp.outports.register("capture_1"),
        }
        out.activate()
        inp.activate()
        return out.samplerate, out.blocksize

    # -- JACK's audio thread ---------------------------------------------------------

    def _play(self, frames: int) -> None:
        self.clock.write(self.clients[0].last_frame_time, frames)
        source = self._ports["playback"].get_array()
        target = self._ports["line_out"].get_array()
        if self.closing:
            target.fill(0.0)
            return
        delay, line = self.delay, self._line
        if not delay:
            target[:] = source
            return
        if len(line) < delay + frames:  # the period grew: start the line again
            self._line = line = np.zeros(delay + frames, dtype=np.float32)
        line[delay : delay + frames] = source
        target[:] = line[:frames]
        line[:delay] = line[frames : frames + delay]

    def _capture(self, frames: int) -> None:
        if self.closing:
            self._ports["capture"].get_array().fill(0.0)
            return
        self._ports["capture"].get_array()[:] = self._ports["line_in"].get_array()


class MidiClients(Clients):
    """:class:`tests.rig.MidiController`'s client: a foot controller's MIDI out on the server.

    ``send`` queues messages; the audio thread writes up to ``per_cycle`` of them a period
    (a flood: many), and the request is answered once the last is written, with the frame
    time of the cycle that carried the first (the rig's frame clock, on the same server).
    """

    def __init__(self, conn: Connection, clock: SharedClock, config: dict[str, Any]) -> None:
        super().__init__(conn, clock, config)
        #: (request, message, per cycle, is the request's last): appended here, taken by JACK's thread.
        self._queue: collections.deque[tuple[Any, bytes, int, bool]] = collections.deque()
        #: (request, frame time of its first message): appended by JACK's thread, answered here.
        self._written: collections.deque[tuple[Any, int]] = collections.deque()
        self._first: dict[Any, int] = {}  # JACK's thread only
        self._port: jack.OwnMidiPort | None = None

    def open(self) -> tuple[int, int]:
        import jack

        client = jack.Client(self.config["name"], servername=self.config["server"], no_start_server=True)
        self.clients = (client,)
        self._port = client.midi_outports.register("midi_out")
        client.set_process_callback(self._process)
        client.set_shutdown_callback(self._shutdown)
        client.activate()
        return client.samplerate, client.blocksize

    def handle(self, message: tuple[Any, ...]) -> None:
        if message[0] != "send":
            super().handle(message)
            return
        _, request, events, per_cycle = message
        for i, data in enumerate(events):
            self._queue.append((request, bytes(data), max(1, int(per_cycle)), i == len(events) - 1))

    def tick(self) -> float:
        while self._written:
            request, frame = self._written.popleft()
            self.conn.send(("done", request, frame))
        return 0.002 if self._queue else IDLE_POLL

    # -- JACK's audio thread ---------------------------------------------------------

    def _process(self, frames: int) -> None:
        port = self._port
        assert port is not None
        port.clear_buffer()
        now = self.clients[0].last_frame_time
        written = 0
        while self._queue and not self.closing and written < self._queue[0][2]:
            request, data, _, last = self._queue.popleft()
            # jack.JackError (jack is imported in open): longer than the port's buffer holds in
            # a period; dropped, as a real port drops it
            with contextlib.suppress(Exception):
                port.write_midi_event(min(written, frames - 1), data)
            written += 1
            first = self._first.setdefault(request, now)
            if last:
                self._written.append((request, self._first.pop(request, first)))


KINDS: dict[str, type[Clients]] = {"rig": RigClients, "interface": InterfaceClients, "midi": MidiClients}


def serve(conn: Connection, clock: SharedClock) -> int:
    """Open the clients the first message asks for, then answer messages until told to close.

    Returns:
        The exit status: 0 closed, :data:`EXIT_SHUTDOWN` when JACK shut the clients down.
    """
    config: dict[str, Any] = conn.recv()
    clients = KINDS[config["kind"]](conn, clock, config)
    try:
        samplerate, blocksize = clients.open()
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        with contextlib.suppress(Exception):
            clients.close()
        return 1
    gc.freeze()  # the clients' own objects too: see main()
    conn.send(("ready", samplerate, blocksize))
    timeout = IDLE_POLL
    try:
        while True:
            if clients.shutdown is not None:
                conn.send(("shutdown", clients.shutdown))
                return EXIT_SHUTDOWN  # the server is gone: nothing to close there
            if conn.poll(timeout):
                message = conn.recv()
                if message[0] == "close":
                    break
                clients.handle(message)
            timeout = clients.tick()
    except (EOFError, OSError, _Ended):
        pass  # the parent is gone, or ends the rig: close cleanly all the same
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    clients.close()
    with contextlib.suppress(OSError):
        conn.send(("closed",))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fd", type=int, help="this end of the socket pair to the parent")
    parser.add_argument("--clock", type=int, required=True, help="a memfd for the shared frame clock")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _ended)
    sys.setswitchinterval(SWITCH_INTERVAL)
    refused = lock_memory()
    if refused:
        print(f"rig clients: memory not locked ({refused}); a page fault may cost a cycle", file=sys.stderr)
    refused = lift_this_thread()
    if refused:
        print(f"rig clients: not realtime ({refused}); a busy machine may hold up the audio", file=sys.stderr)
    os.environ.setdefault("JACK_NO_AUDIO_RESERVATION", "1")
    # Python's cyclic garbage collector holds the GIL for the whole of a collection, and a
    # full one went through every object of the imports (numpy, JACK's cffi bindings): 9.4 ms
    # idle, and longer on a busy machine, during which neither audio callback could run (jackd:
    # "rig-rec was not finished" in a 21 ms period). Frozen, those objects are never looked at
    # again: a full collection takes microseconds. A take makes no reference cycles to collect.
    gc.freeze()
    clock = SharedClock(mmap.mmap(args.clock, SharedClock.SIZE))
    with Connection(args.fd) as conn:
        status = serve(conn, clock)
    if status == EXIT_SHUTDOWN:  # closing a client of a dead server may hang: leave at once
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
