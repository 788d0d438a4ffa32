"""The virtual rig: play test signals into a track and record what comes out.

Two JACK clients on the test's server::

    rig-play-XXXX:play_1..N ──▶ track inputs ─▶ plugins ─▶ track outputs ──▶ rig-rec-XXXX:rec_1..N
             play_1 ──────────────────────────────────────────────────────▶ rig-rec-XXXX:ref_1

Player and recorder are separate clients so that JACK orders the graph player
→ plugins → recorder and everything happens in one cycle: a plugin chain with
no latency of its own records 0 frames late. (One client that both fed and
read the chain would form a cycle, and JACK would add a period.)

The clients run in a child process (:mod:`hil.rig.clients`), never in the
process that runs the tests: their process callbacks are Python, and here the
asyncio loop, numpy analysis or a browser driver would hold the GIL for
periods at a time, which made the rig itself miss cycles; JACK2 closing a
client could also freeze a process whose threads wait for the GIL. This
process has no JACK client: :class:`Rig` and :class:`MockInterface` drive
their child over a socket and read its frame clock from shared memory. A
child that hangs on close is killed and the close fails saying so; every
child ends with the test run (its socket closes, ``--pdeathsig``, and
:func:`end_leftovers`).

On a rig computer (``hil/rig`` measuring a real box) the same two clients
play into and record from the audio interface instead: ``play_to`` and
``record_from`` name the ports (``system:playback_1``, ``system:capture_1``)
and the box is at the other end of the cables. :class:`MockInterface` stands
in for that interface on a test's server.

A take is scheduled on JACK's frame clock: both process callbacks compute,
from ``last_frame_time`` (the same number for every client in a cycle), which
part of the signal this cycle carries, so reference and recording line up
exactly whatever cycle each callback first sees the take in.

A take during which the server had an xrun (every client, the box's
included, may have missed a cycle) is spoiled: it measures the server, not
the box. It is never taken again: :meth:`Rig.require_clean` fails the test
with the xruns named, and :meth:`Rig.measure_gain` (so :meth:`Rig.gain_until`)
calls it on every take. Tests about xruns read :attr:`Rig.last_take_xruns`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import mmap
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from appliance.engine.faders import fade_time
from appliance.engine.jack.server import jack_environment
from appliance.engine.processes import describe_exit, dies_with_parent
from hil.rig.analysis import find_gaps
from hil.rig.analysis import gain_db as gain_db
from hil.rig.analysis import latency_frames as latency_frames
from hil.rig.analysis import longest_gap as longest_gap
from hil.rig.analysis import rms_db as rms_db
from hil.rig.analysis import window_gains as window_gains
from hil.rig.clients import TAKE_LEAD_PERIODS as TAKE_LEAD_PERIODS
from hil.rig.clients import XRUN_REACH as XRUN_REACH
from hil.rig.clients import XRUN_REACH_PERIODS as XRUN_REACH_PERIODS
from hil.rig.clients import SharedClock, frames_since
from hil.rig.signals import noise as noise
from hil.rig.signals import sine as sine

ROOT = Path(__file__).resolve().parent.parent
#: Extra wall-clock seconds a take may take beyond its own length and the xrun reach.
TAKE_TIMEOUT_MARGIN = 5.0
#: How often the loop looks where a take is (for :meth:`Rig.record_during`).
TAKE_POLL_INTERVAL = 0.005
#: How long the reader thread may take to read a gone child's end of file before its socket closes.
READER_END_TIMEOUT = 1.0
#: How long the child may take to open its JACK clients, or to answer a connection request.
RIG_OPEN_TIMEOUT = 10.0
#: How long the child may take to close its clients and exit before it is killed.
RIG_CLOSE_TIMEOUT = 10.0
#: How long a killed child may take to go.
RIG_KILL_TIMEOUT = 5.0
#: How often closing looks whether the child has exited.
EXIT_POLL = 0.02


class RigProcessError(RuntimeError):
    """The rig's JACK process failed: it could not open its clients, died, or hung closing."""


class SpoiledTake(Exception):
    """A take during which the JACK server had an xrun: it measures the server, not the box.

    Not an :class:`AssertionError`, so that no polling helper that retries
    failed assertions takes it again.
    """


def fade_heard_frames(rate: int, period: int) -> int:
    """Frames from a fade's first step until its last is heard: the steps (a period apart at
    least, :func:`appliance.engine.faders.fade_time`), then up to two periods before a plugin
    has read the last value."""
    return round(fade_time(rate, period) * rate) + 2 * period


def difference_db(a: np.ndarray, b: np.ndarray) -> float:
    """Level of ``a - b`` relative to ``b`` in dB (how different two takes are)."""
    return rms_db(a - b) - rms_db(b)


def gaps(recorded: np.ndarray, offset: int = 0, min_length: int = 3) -> list[tuple[int, int]]:
    """``(start, length)`` of every run of silence in ``recorded`` (a take's samples from
    ``offset`` on), positions in frames into the take. None is excused."""
    return [(gap.start + offset, gap.length) for gap in find_gaps(recorded, min_length=min_length)]


# -- the child processes ---------------------------------------------------------------

#: Every child started and not yet ended, for :func:`end_leftovers`.
_LIVE: set[subprocess.Popen[bytes]] = set()


async def repeat_after(rig: Rig, bpm_hint: float, note_at: int = 2000) -> float:
    """Milliseconds from a note (an impulse played at ``note_at``) to its first repeat, as a
    delay synced to a quarter note plays it; the take is long enough for ``bpm_hint``.

    Raises:
        SpoiledTake: the server had an xrun during the take.
    """
    rate = rig.samplerate
    impulse = np.zeros(note_at + int(rate * 60 / bpm_hint) + rate // 2, dtype=np.float32)
    impulse[note_at] = 0.5
    _, recorded = await rig.play_and_record(impulse)
    rig.require_clean()
    out = np.nan_to_num(np.abs(recorded[:, 0]), nan=1.0)
    assert out.max() < 0.99, "the delay's output is not a clean repeat (NaN: it had no transport)"
    note = int(np.argmax(out))
    after = out.copy()
    after[: note + rate // 20] = 0.0  # past the note itself
    repeat = int(np.argmax(after))
    assert after[repeat] > 0.1, f"no repeat heard after the note (loudest {after[repeat]:.3f})"
    return (repeat - note) * 1000 / rate


def leftovers() -> list[int]:
    """The pids of the rig processes still running (ones a test did not close)."""
    return [proc.pid for proc in list(_LIVE) if proc.poll() is None]


@atexit.register
def end_leftovers(only: Collection[int] | None = None) -> None:
    """End the rig processes still running (``only`` those pids): SIGTERM, on which each
    closes its clients, then SIGKILL after :data:`RIG_CLOSE_TIMEOUT`."""
    procs = [p for p in list(_LIVE) if p.poll() is None and (only is None or p.pid in only)]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    deadline = time.monotonic() + RIG_CLOSE_TIMEOUT
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _LIVE.discard(proc)


class ClientsProcess:
    """A child process running JACK clients (:mod:`hil.rig.clients`), seen from here.

    ``start``/``close``/``request`` are coroutines for one asyncio loop's
    thread (the one that started it); a daemon thread reads the child's
    messages and hands them to that loop.

    Args:
        what: what the clients are, for messages ("the rig rig-play-1a2b").
        config: the child's first message (``kind``, ``server``, ``names``, …).
    """

    def __init__(self, what: str, config: dict[str, Any]) -> None:
        self.what = what
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.clock: SharedClock | None = None
        self._conn: Connection | None = None
        self._reader: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[Any, asyncio.Future[tuple[Any, ...]]] = {}
        self._ended: str | None = None
        self._send_lock = threading.Lock()

    async def start(self) -> tuple[int, int]:
        """Start the child and let it open its clients; (samplerate, blocksize).

        Raises:
            RigProcessError: the clients could not be opened (the reason from JACK).
        """
        self._loop = asyncio.get_running_loop()
        self._ended = None
        ours, theirs = socket.socketpair()
        clock_fd = os.memfd_create("rig-clock")
        try:
            os.ftruncate(clock_fd, SharedClock.SIZE)
            self.clock = SharedClock(mmap.mmap(clock_fd, SharedClock.SIZE))
            argv = [sys.executable, "-m", "hil.rig.clients", str(theirs.fileno()), "--clock", str(clock_fd)]
            # Started from the loop's thread: the child gets SIGTERM when that thread ends.
            self.proc = subprocess.Popen(
                dies_with_parent(argv),
                pass_fds=(theirs.fileno(), clock_fd),
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=jack_environment(self.config.get("server")),
            )
        finally:
            theirs.close()
            os.close(clock_fd)
        _LIVE.add(self.proc)
        self._conn = Connection(ours.detach())
        opened = self._expect("open")
        self._reader = threading.Thread(target=self._read, args=(self._conn,), name="rig-reader", daemon=True)
        self._reader.start()
        self.send(self.config)
        try:
            reply = await asyncio.wait_for(opened, RIG_OPEN_TIMEOUT)
        except BaseException:
            await self.kill()
            raise
        if reply[0] != "ready":
            await self.close()
            raise RigProcessError(f"{self.what} could not open its JACK clients: {reply[1]}")
        return int(reply[1]), int(reply[2])

    def send(self, message: object, data: np.ndarray | None = None) -> None:
        """One message to the child (and an array's bytes after it). Any thread.

        Raises:
            RigProcessError: the child has ended.
        """
        if self._ended is not None or self._conn is None:
            raise RigProcessError(self._ended or f"{self.what} is not open")
        try:
            with self._send_lock:
                self._conn.send(message)
                if data is not None:
                    self._conn.send_bytes(np.ascontiguousarray(data).data.cast("B"))
        except OSError as exc:
            raise RigProcessError(f"{self.what}: its process is gone ({exc})") from exc

    def _expect(self, key: Any) -> asyncio.Future[tuple[Any, ...]]:
        """A future for the child's answer ``key`` (loop thread)."""
        assert self._loop is not None
        future: asyncio.Future[tuple[Any, ...]] = self._loop.create_future()
        if self._ended is not None:
            future.set_exception(RigProcessError(self._ended))
        else:
            self._waiting[key] = future
        return future

    async def request(self, kind: str, *args: Any, timeout: float = RIG_OPEN_TIMEOUT) -> tuple[Any, ...]:
        """A request the child answers ``("done", id, …)`` or ``("failed", id, why)``; what
        followed ``done``.

        Raises:
            RigProcessError: it failed (JACK's reason), or the child has ended.
        """
        key = ("request", secrets.token_hex(4))
        answer = self._expect(key)
        self.send((kind, key, *args))
        reply = await asyncio.wait_for(answer, timeout)
        if reply[0] == "failed":
            raise RigProcessError(f"{self.what}: {kind} {' → '.join(map(str, args))}: {reply[2]}")
        return tuple(reply[2:])

    # -- the reader thread -------------------------------------------------------------

    def _read(self, conn: Connection) -> None:
        """Daemon thread: every message of the child, handed to the loop, until it ends."""
        try:
            while True:
                message = conn.recv()
                if message[0] == "took":
                    message = (*message, conn.recv_bytes(), conn.recv_bytes())
                self._hand_over(message)
        except (EOFError, OSError):
            self._hand_over(("ended",))

    def _hand_over(self, message: tuple[Any, ...]) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(self._on_message, message)

    def _on_message(self, message: tuple[Any, ...]) -> None:
        """Loop thread: settle whatever waits for ``message``."""
        kind = message[0]
        if kind in ("ready", "error"):
            self._settle("open", message)
        elif kind in ("started", "took", "failed", "done"):
            self._settle(message[1] if kind in ("failed", "done") else (kind, message[1]), message)
            if kind == "failed":
                self._settle(("started", message[1]), message)
        elif kind == "shutdown":
            self._end(f"{self.what}: JACK shut its clients down ({message[1]})")
        elif kind == "ended":
            code = self.proc.poll() if self.proc is not None else None
            how = "it is exiting" if code is None else describe_exit(code)
            self._end(f"{self.what}: its process ended ({how})")

    def _settle(self, key: Any, message: tuple[Any, ...]) -> None:
        future = self._waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(message)

    def _end(self, why: str) -> None:
        if self._ended is None:
            self._ended = why
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(RigProcessError(why))

    # -- ending ------------------------------------------------------------------------

    async def close(self) -> None:
        """Ask the child to close its clients and wait :data:`RIG_CLOSE_TIMEOUT` for it to exit.

        Raises:
            RigProcessError: it did not exit in time (it was killed).
        """
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(RigProcessError):
            self.send(("close",))
        deadline = time.monotonic() + RIG_CLOSE_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(EXIT_POLL)
        if proc.poll() is None:
            await self.kill()
            raise RigProcessError(
                f"{self.what}: its JACK clients hung closing for {RIG_CLOSE_TIMEOUT:g} s; "
                f"the process (pid {proc.pid}) was killed"
            )
        self._forget()

    async def kill(self) -> None:
        """SIGKILL the child and wait for it to go."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            deadline = time.monotonic() + RIG_KILL_TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(EXIT_POLL)
        self._forget()

    def _forget(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is not None:
            _LIVE.discard(proc)
        self._end(f"{self.what} is closed")
        conn, self._conn = self._conn, None
        if conn is not None:
            if proc is not None and proc.poll() is not None and self._reader is not None:
                self._reader.join(READER_END_TIMEOUT)  # the child is gone: its end of file is on the way
            conn.close()


# -- the rig ------------------------------------------------------------------------


class Rig:
    """A player and a recorder client on one JACK server, in a child process.

    All methods are for one asyncio loop's thread; the process callbacks
    run on JACK's audio threads in the child and only slice and copy numpy
    arrays.

    Args:
        server_name: the JACK server (``None``: the default server, as on a rig computer).
        channels: how many play and rec ports (the track's width).
        play_to: ports each ``play_i`` is also connected to, in order (an audio
            interface's outputs); by default none, the box connects itself.
        record_from: ports connected to each ``rec_i``, in order (the
            interface's inputs); by default none.
    """

    def __init__(
        self,
        server_name: str | None,
        channels: int = 1,
        *,
        play_to: Sequence[str] = (),
        record_from: Sequence[str] = (),
    ) -> None:
        if len(play_to) > channels or len(record_from) > channels:
            raise ValueError("more ports to connect than the rig has channels")
        self.server_name = server_name
        self.channels = channels
        self.play_to = tuple(play_to)
        self.record_from = tuple(record_from)
        token = secrets.token_hex(2)
        self._names = (f"rig-play-{token}", f"rig-rec-{token}")
        self._process: ClientsProcess | None = None
        self._take_start: int | None = None
        self._takes = 0
        #: The server's xruns during the last take, from its scheduling to a few
        #: periods after its end (:mod:`hil.rig.clients`; a plugin client that missed
        #: its cycle leaves a gap in the recording but not in the reference).
        self.last_take_xruns = 0
        #: Where in the last take JACK told of each xrun, in frames (a little after it happened).
        self.last_take_xrun_frames: list[int] = []
        #: Where in the last :meth:`record_during` take its action started, in frames.
        self.last_action_frame = 0
        self.samplerate = 0
        self.blocksize = 0

    @property
    def play_ports(self) -> tuple[str, ...]:
        """Full names of the player's outputs (a track's inputs)."""
        return tuple(f"{self._names[0]}:play_{i + 1}" for i in range(self.channels))

    @property
    def rec_ports(self) -> tuple[str, ...]:
        """Full names of the recorder's inputs (a track's outputs)."""
        return tuple(f"{self._names[1]}:rec_{i + 1}" for i in range(self.channels))

    @property
    def ref_port(self) -> str:
        """The recorder's dry reference input, fed straight from ``play_1``."""
        return f"{self._names[1]}:ref_1"

    @property
    def pid(self) -> int | None:
        """The child process's pid while open."""
        process = self._process
        return process.proc.pid if process is not None and process.proc is not None else None

    async def open(self) -> None:
        """Start the child: both clients open, ports registered, play_1 → ref_1, ``play_to``
        and ``record_from`` connected.

        Raises:
            RigProcessError: JACK refused (no such server, a name taken).
        """
        if self._process is not None:
            raise RuntimeError("rig is already open")
        process = ClientsProcess(
            f"the rig {self._names[0]}",
            {
                "kind": "rig",
                "server": self.server_name,
                "names": self._names,
                "channels": self.channels,
                "play_to": self.play_to,
                "record_from": self.record_from,
            },
        )
        self.samplerate, self.blocksize = await process.start()
        self._process = process

    async def close(self) -> None:
        """Close both clients and end the child (closing twice is fine).

        Raises:
            RigProcessError: the child hung closing its clients and was killed.
        """
        process, self._process = self._process, None
        self._take_start = None
        if process is not None:
            await process.close()

    async def play_and_record(
        self, signal: np.ndarray, extra_frames: int = 0, timeout: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Play ``signal`` into every play port and record ``len + extra_frames``.

        The take's xruns are in :attr:`last_take_xruns` afterwards; a test that
        asserts on the recording calls :meth:`require_clean` first.

        Args:
            signal: mono ``(frames,)`` (sent to every channel) or ``(frames, channels)``.
            extra_frames: frames to keep recording after the signal ends.
            timeout: wall-clock limit; default the take's length, the xrun
                reach and :data:`TAKE_TIMEOUT_MARGIN`.

        Returns:
            ``(reference, recorded)``: the dry reference ``(length,)`` and the
            recordings ``(length, channels)``, sample-aligned.
        """
        process = self._process
        if process is None:
            raise RuntimeError("rig is not open")
        if self._take_start is not None:
            raise RuntimeError("one take at a time")
        data = np.asarray(signal, dtype=np.float32)
        if data.ndim == 1:
            data = np.repeat(data[:, None], self.channels, axis=1)
        length = data.shape[0] + extra_frames
        reach = max(XRUN_REACH, XRUN_REACH_PERIODS * self.blocksize)
        limit = timeout if timeout is not None else (length + reach) / self.samplerate + TAKE_TIMEOUT_MARGIN
        self._takes += 1
        number = self._takes
        started = process._expect(("started", number))
        took = process._expect(("took", number))
        process.send(("take", number, data.shape[0], data.shape[1], extra_frames), data)
        try:
            async with asyncio.timeout(limit):
                reply = await started
                if reply[0] == "failed":
                    raise RuntimeError(reply[2])
                self._take_start = int(reply[2])
                _, _, xruns, xrun_frames, reference, recorded = await took
        finally:
            self._take_start = None
            took.cancel()
        self.last_take_xruns = int(xruns)
        self.last_take_xrun_frames = list(xrun_frames)
        return (
            np.frombuffer(reference, dtype=np.float32).copy(),
            np.frombuffer(recorded, dtype=np.float32).reshape(length, self.channels).copy(),
        )

    async def record_during(
        self,
        signal: np.ndarray,
        action: Callable[[], Awaitable[object]],
        lead_frames: int = 9600,
        timeout: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, object]:
        """Play and record ``signal``; run ``action`` once ``lead_frames`` of it have played.

        So that a recording covers the whole of a change (a fault, a switch),
        not only its outcome. :attr:`last_action_frame` says where it started.
        ``timeout`` is the take's, as in :meth:`play_and_record`.

        Returns:
            ``(reference, recorded, what action returned or raised)``.
        """
        take = asyncio.ensure_future(self.play_and_record(signal, timeout=timeout))
        while self._take_start is None or self.position() < lead_frames:
            if take.done():
                break
            await asyncio.sleep(TAKE_POLL_INTERVAL)
        self.last_action_frame = self.position()
        try:
            outcome: object = await action()
        except Exception as exc:
            outcome = exc
        reference, recorded = await take
        return reference, recorded, outcome

    def require_clean(self, what: str = "the take") -> None:
        """Fail unless the last take had no xrun of the server: a spoiled take is never used.

        Args:
            what: what the take was for, for the message.

        Raises:
            SpoiledTake: the server had an xrun while it ran.
        """
        if self.last_take_xruns:
            period_ms = 1000 * self.blocksize / self.samplerate if self.samplerate else 0.0
            raise SpoiledTake(
                f"{what}: the JACK server had {self.last_take_xruns} xrun(s) during the take "
                f"(told at frames {self.last_take_xrun_frames} into it; {self.blocksize} frames, "
                f"{period_ms:.1f} ms a period). A take with an xrun is never used nor taken again: "
                "the box made the server miss a cycle, or the server's period is too short for "
                "this machine's load (hil/bench_rig_server.py measures it)"
            )

    def position(self) -> int:
        """Frames into the take under way (0 when none): when, in the recording, something happened."""
        process, start = self._process, self._take_start
        if process is None or start is None or process.clock is None:
            return 0
        now = process.clock.now(self.samplerate)
        return frames_since(now, start) if now is not None else 0

    def stall(self, seconds: float) -> None:
        """Make the player's next process cycle take ``seconds``: an xrun for the whole server."""
        if self._process is None:
            raise RuntimeError("rig is not open")
        self._process.send(("stall", seconds))

    def collect_garbage(self, times: int) -> None:
        """Make the rig's process run ``times`` full garbage collections in its main thread."""
        if self._process is None:
            raise RuntimeError("rig is not open")
        self._process.send(("collect", times))

    async def server_xruns(self) -> int:
        """Every xrun the server told the rig of since it opened (one per missed cycle)."""
        if self._process is None:
            raise RuntimeError("rig is not open")
        (count,) = await self._process.request("xruns")
        return int(count)

    async def measure_gain(self, signal: np.ndarray, channel: int = 0) -> float:
        """A take of ``signal``; the channel's gain against the reference in dB.

        Raises:
            SpoiledTake: the server had an xrun during the take.
        """
        reference, recorded = await self.play_and_record(signal)
        self.require_clean("a level probe")
        return gain_db(recorded[:, channel], reference)

    async def gain_until(
        self,
        accept: Callable[[float], bool],
        signal: np.ndarray | None = None,
        tries: int = 40,
    ) -> float:
        """Measure short takes until ``accept(gain)`` or ``tries`` takes; the last gain.

        A parameter sent to a plugin lands some cycles later: poll like this
        instead of sleeping a fixed time. Every take must be clean.

        Raises:
            SpoiledTake: the server had an xrun during a take.
        """
        probe = signal if signal is not None else sine(frames=2400)
        gain = await self.measure_gain(probe)
        for _ in range(tries - 1):
            if accept(gain):
                break
            gain = await self.measure_gain(probe)
        return gain


# -- a rig computer's audio interface, simulated -------------------------------------


class MockInterface:
    """A rig computer's audio interface on a test's JACK server: two clients and a cable.

    What ``hil.rig run --box`` plays into and records from on a real rig
    computer (``system:playback_1``, ``system:capture_1``) and the sockets on
    the interface's back (line out, line in) where the cables go::

        rig ──▶ iface-out-XXXX:playback_1 ─[delay]─▶ iface-out-XXXX:line_out_1 ──cable──▶ box input
        box output ──cable──▶ iface-in-XXXX:line_in_1 ──▶ iface-in-XXXX:capture_1 ──▶ rig

    The two directions are separate clients so that JACK orders the whole
    chain within one cycle: the interface adds exactly ``delay`` frames (its
    converters, scripted), no period. :meth:`loopback` is the calibration
    cable, line out straight into line in; the box's config names
    :attr:`line_out` as its track's input and :attr:`line_in` as its output.

    Its clients run in a child process, as the rig's do. All methods are for
    one asyncio loop's thread.

    Args:
        server_name: the JACK server.
        delay: frames the playback side delays the signal by.
    """

    def __init__(self, server_name: str, delay: int = 0) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.server_name = server_name
        self.delay = delay
        token = secrets.token_hex(2)
        self._names = (f"iface-out-{token}", f"iface-in-{token}")
        self._process: ClientsProcess | None = None

    @property
    def playback(self) -> str:
        """Where the rig plays (``system:playback_1`` on a rig computer)."""
        return f"{self._names[0]}:playback_1"

    @property
    def capture(self) -> str:
        """What the rig records (``system:capture_1`` on a rig computer)."""
        return f"{self._names[1]}:capture_1"

    @property
    def line_out(self) -> str:
        """The output socket: what a cable carries to the box's input."""
        return f"{self._names[0]}:line_out_1"

    @property
    def line_in(self) -> str:
        """The input socket: where the box's output arrives."""
        return f"{self._names[1]}:line_in_1"

    async def open(self) -> None:
        """Start the child: both clients open, their ports registered (no cable plugged in)."""
        if self._process is not None:
            raise RuntimeError("interface is already open")
        process = ClientsProcess(
            f"the mock interface {self._names[0]}",
            {"kind": "interface", "server": self.server_name, "names": self._names, "delay": self.delay},
        )
        await process.start()
        self._process = process

    async def close(self) -> None:
        """Close both clients and end the child (closing twice is fine).

        Raises:
            RigProcessError: the child hung closing its clients and was killed.
        """
        process, self._process = self._process, None
        if process is not None:
            await process.close()

    async def loopback(self) -> None:
        """Plug the calibration cable: line out straight into line in."""
        await self._cable("connect")

    async def unplug(self) -> None:
        """Pull the calibration cable out again."""
        await self._cable("disconnect")

    async def _cable(self, kind: str) -> None:
        if self._process is None:
            raise RuntimeError("interface is not open")
        await self._process.request(kind, self.line_out, self.line_in)


class MidiController:
    """A MIDI foot controller on a test's JACK server: one JACK client with a MIDI out
    (``midi-XXXX:midi_out``), run in a child process as the rig's clients are.

    Args:
        server_name: the JACK server (the box's, so that the box hears it).
    """

    def __init__(self, server_name: str) -> None:
        self.server_name = server_name
        self.name = f"midi-{secrets.token_hex(2)}"
        self._process: ClientsProcess | None = None

    @property
    def port(self) -> str:
        return f"{self.name}:midi_out"

    async def open(self) -> None:
        process = ClientsProcess(
            f"the MIDI controller {self.name}",
            {"kind": "midi", "server": self.server_name, "name": self.name},
        )
        await process.start()
        self._process = process

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await process.close()

    async def send(self, *messages: bytes | list[int], per_cycle: int = 1) -> int:
        """Send ``messages``, ``per_cycle`` a period; the JACK frame time of the first one's cycle."""
        if self._process is None:
            raise RuntimeError("the MIDI controller is not open")
        events = [bytes(m) for m in messages]
        (frame,) = await self._process.request("send", events, per_cycle, timeout=30.0)
        return int(frame)

    async def cc(self, controller: int, value: int, channel: int = 1) -> int:
        return await self.send([0xB0 | (channel - 1), controller, value])

    async def pc(self, program: int, channel: int = 1) -> int:
        return await self.send([0xC0 | (channel - 1), program])
