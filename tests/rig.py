"""The virtual rig: play test signals into a track and record what comes out.

Two JACK clients on the test's server::

    rig-play-XXXX:play_1..N ──▶ track inputs ─▶ plugins ─▶ track outputs ──▶ rig-rec-XXXX:rec_1..N
             play_1 ──────────────────────────────────────────────────────▶ rig-rec-XXXX:ref_1

Player and recorder are separate clients so that JACK orders the graph player
→ plugins → recorder and everything happens in one cycle: a plugin chain with
no latency of its own records 0 frames late. (One client that both fed and
read the chain would form a cycle, and JACK would add a period.)

On a rig computer (``hil/rig`` measuring a real box) the same two clients
play into and record from the audio interface instead: ``play_to`` and
``record_from`` name the ports (``system:playback_1``, ``system:capture_1``)
and the box is at the other end of the cables. :class:`MockInterface` stands
in for that interface on a test's server.

A take is scheduled on JACK's frame clock: both process callbacks compute,
from ``last_frame_time`` (the same number for every client in a cycle), which
part of the signal this cycle carries, so reference and recording line up
exactly whatever cycle each callback first sees the take in. The callbacks do
numpy slicing and copying only; the loop polls for the end of the take.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import jack
import numpy as np

from hil.rig.analysis import find_gaps
from hil.rig.analysis import gain_db as gain_db
from hil.rig.analysis import latency_frames as latency_frames
from hil.rig.analysis import longest_gap as longest_gap
from hil.rig.analysis import rms_db as rms_db
from hil.rig.analysis import window_gains as window_gains
from hil.rig.signals import noise as noise
from hil.rig.signals import sine as sine

#: Frames between scheduling a take and its first frame (time for both clients to see it).
TAKE_LEAD_PERIODS = 8
#: Extra wall-clock seconds a take may take beyond its own length.
TAKE_TIMEOUT_MARGIN = 5.0
#: How often the loop looks whether a take is complete.
TAKE_POLL_INTERVAL = 0.005
#: How long opening or closing the rig's JACK clients may take.
RIG_OPEN_TIMEOUT = 10.0
#: How long after a missed cycle JACK's notice of the xrun may come, in frames (0.1 s).
XRUN_REACH = 4800
#: Takes spoiled by an xrun of the server that a level probe takes again.
SPOILED_RETAKES = 3
#: How long a parked audio thread sleeps: longer than any run; JACK's cancel ends it first.
PARK_SECONDS = 24 * 3600.0
#: How long closing waits for each audio thread to park (one that runs no cycles never will).
PARK_TIMEOUT = 2.0
#: Pause between the last thread parking and the cancel, so that it is asleep by then.
PARK_SETTLE = 0.05

_WRAP = 1 << 32

T = TypeVar("T")


def _frames_since(now: int, start: int) -> int:
    """Signed distance on JACK's 32-bit frame clock."""
    return ((now - start + (1 << 31)) % _WRAP) - (1 << 31)


# -- signals and measurements -------------------------------------------------------
# The signals and the measurements read off recordings (sine, noise, rms_db, gain_db,
# latency_frames, window_gains, longest_gap) live in hil.rig, which measures a box from
# outside the same way; they are imported above under their own names for the tests.


def difference_db(a: np.ndarray, b: np.ndarray) -> float:
    """Level of ``a - b`` relative to ``b`` in dB (how different two takes are)."""
    return rms_db(a - b) - rms_db(b)


class Parking:
    """Closes JACK clients whose process callbacks are Python, without deadlocking the process.

    JACK2 ends a realtime client's audio thread with ``pthread_cancel`` when the
    client is deactivated. Cancelled while it waits for the GIL, the thread
    dies holding the GIL's mutex and every thread of the process then waits
    for good (the suite hung past its own timeout so). So, before the cancel,
    each process callback calls :meth:`check` and parks: it sleeps with the GIL
    released, and the cancel finds it there. A non-realtime client's thread is
    stopped cooperatively instead and must not be parked.
    """

    def __init__(self) -> None:
        self._requested = False
        self._arrived = threading.Semaphore(0)

    def check(self) -> None:
        """Audio thread, first thing in each process callback: park if closing."""
        if self._requested:
            self._arrived.release()
            time.sleep(PARK_SECONDS)

    def close(self, clients: Sequence[jack.Client]) -> None:
        """Deactivate and close ``clients``, each with a parking process callback. Blocking."""
        if clients and clients[0].realtime:
            self._requested = True
            parked = [self._arrived.acquire(timeout=PARK_TIMEOUT) for _ in clients]
            if any(parked):
                time.sleep(PARK_SETTLE)
        for client in clients:
            client.deactivate()
            client.close()


async def in_daemon_thread(work: Callable[[], object], timeout: float) -> None:
    """Run blocking JACK work on a daemon thread and wait ``timeout`` for it.

    ``jack_deactivate`` was seen to hang for good: on the loop's default
    executor that thread would hold the whole test run at exit; a daemon
    thread is left behind and the test fails with a TimeoutError instead.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if not done.done():
            done.set_result(None) if exc is None else done.set_exception(exc)

    def run() -> None:
        try:
            work()
        except BaseException as exc:
            outcome: BaseException | None = exc
        else:
            outcome = None
        with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="rig-jack", daemon=True).start()
    await asyncio.wait_for(done, timeout)


# -- the rig ------------------------------------------------------------------------


@dataclass(eq=False)
class _Take:
    """One scheduled play-and-record. Written by the JACK callbacks."""

    start: int
    signal: np.ndarray  # (frames, channels)
    reference: np.ndarray  # (length,)
    recorded: np.ndarray  # (length, channels)
    done: bool = False
    xruns: int = 0  # the server's xruns while the take ran: samples may be missing
    xrun_frames: list[int] = field(default_factory=list)  # where each was told, in frames into the take


class Rig:
    """A player and a recorder client on one JACK server.

    ``open``/``close``/``play_and_record`` are coroutines for the loop's
    thread; the process callbacks run on JACK's audio thread and only slice
    and copy numpy arrays.

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
        self._player: jack.Client | None = None
        self._recorder: jack.Client | None = None
        self._outs: tuple[jack.OwnPort, ...] = ()
        self._ref: jack.OwnPort | None = None
        self._recs: tuple[jack.OwnPort, ...] = ()
        self._take: _Take | None = None
        self._stall = 0.0
        #: The server's xruns during the last take (a plugin client that missed its
        #: cycle leaves a gap in the recording but not in the reference).
        self.last_take_xruns = 0
        #: Where in the last take JACK told of each xrun, in frames (a little after it happened).
        self.last_take_xrun_frames: list[int] = []
        #: Where in the last :meth:`record_during` take its action started, in frames.
        self.last_action_frame = 0
        self.samplerate = 0
        self.blocksize = 0
        self._parking = Parking()

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

    async def open(self) -> None:
        """Open both clients, register ports, connect play_1 → ref_1, ``play_to`` and ``record_from``."""
        await asyncio.wait_for(asyncio.to_thread(self._open), RIG_OPEN_TIMEOUT)

    async def close(self) -> None:
        """Deactivate and close both clients."""
        await in_daemon_thread(self._close, RIG_OPEN_TIMEOUT)

    async def play_and_record(
        self, signal: np.ndarray, extra_frames: int = 0, timeout: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Play ``signal`` into every play port and record ``len + extra_frames``.

        Args:
            signal: mono ``(frames,)`` (sent to every channel) or ``(frames, channels)``.
            extra_frames: frames to keep recording after the signal ends.
            timeout: wall-clock limit; default the take's length plus
                :data:`TAKE_TIMEOUT_MARGIN`.

        Returns:
            ``(reference, recorded)``: the dry reference ``(length,)`` and the
            recordings ``(length, channels)``, sample-aligned.
        """
        if self._recorder is None:
            raise RuntimeError("rig is not open")
        if self._take is not None:
            raise RuntimeError("one take at a time")
        data = np.asarray(signal, dtype=np.float32)
        if data.ndim == 1:
            data = np.repeat(data[:, None], self.channels, axis=1)
        data = np.ascontiguousarray(data)
        length = data.shape[0] + extra_frames
        start = (self._recorder.frame_time + TAKE_LEAD_PERIODS * self.blocksize) % _WRAP
        take = _Take(
            start=start,
            signal=data,
            reference=np.zeros(length, dtype=np.float32),
            recorded=np.zeros((length, self.channels), dtype=np.float32),
        )
        limit = timeout if timeout is not None else length / self.samplerate + TAKE_TIMEOUT_MARGIN
        self._take = take
        try:
            async with asyncio.timeout(limit):
                while not take.done:
                    await asyncio.sleep(TAKE_POLL_INTERVAL)
        finally:
            self._take = None
        self.last_take_xruns = take.xruns
        self.last_take_xrun_frames = list(take.xrun_frames)
        return take.reference, take.recorded

    async def record_during(
        self, signal: np.ndarray, action: Callable[[], Awaitable[object]], lead_frames: int = 9600
    ) -> tuple[np.ndarray, np.ndarray, object]:
        """Play and record ``signal``; run ``action`` once ``lead_frames`` of it have played.

        So that a recording covers the whole of a change (a fault, a switch),
        not only its outcome.

        Returns:
            ``(reference, recorded, what action returned or raised)``.
        """
        take = asyncio.ensure_future(self.play_and_record(signal))
        while self._take is None or _frames_since(self._frame_time(), self._take.start) < lead_frames:
            if take.done():
                break
            await asyncio.sleep(TAKE_POLL_INTERVAL)
        current = self._take
        self.last_action_frame = _frames_since(self._frame_time(), current.start) if current else 0
        try:
            outcome: object = await action()
        except Exception as exc:
            outcome = exc
        reference, recorded = await take
        return reference, recorded, outcome

    async def unspoiled(self, take: Callable[[], Awaitable[T]]) -> T:
        """Run ``take`` (something that records once) again while the server spoils it.

        A recording during which the virtual server had an xrun (every client,
        the box's included, missed a cycle) measures the server, not the box:
        it is taken again, up to :data:`SPOILED_RETAKES` times. Returns the
        last result either way; :attr:`last_take_xruns` says whether it was spoiled.
        """
        for _ in range(SPOILED_RETAKES):
            result = await take()
            if not self.last_take_xruns:
                return result
        return await take()

    def unexplained_gaps(self, recorded: np.ndarray, offset: int = 0) -> list[tuple[int, int]]:
        """``(start, length)`` of every gap in ``recorded`` (the last take's samples from
        ``offset`` on) that no xrun of the server explains.

        JACK tells of an xrun on its notification thread, some cycles after the
        cycle that was missed; a gap that starts within :data:`XRUN_REACH` frames
        before such a notice is the server's (every client missed that cycle),
        not the box's.
        """
        notices = self.last_take_xrun_frames
        return [
            (gap.start + offset, gap.length)
            for gap in find_gaps(recorded, min_length=3)
            if not any(0 <= notice - (gap.start + offset) <= XRUN_REACH for notice in notices)
        ]

    def position(self) -> int:
        """Frames into the take under way (0 when none): when, in the recording, something happened."""
        current = self._take
        return _frames_since(self._frame_time(), current.start) if current is not None else 0

    def stall(self, seconds: float) -> None:
        """Make the player's next process cycle take ``seconds``: an xrun for the whole server."""
        self._stall = seconds

    def _frame_time(self) -> int:
        assert self._recorder is not None
        return int(self._recorder.frame_time)

    async def measure_gain(self, signal: np.ndarray, channel: int = 0) -> float:
        """A take of ``signal``; the channel's gain against the reference in dB.

        A take during which the server had an xrun is taken again (up to
        :data:`SPOILED_RETAKES` times): it measures the virtual server, not
        the box.
        """
        for _ in range(SPOILED_RETAKES):
            reference, recorded = await self.play_and_record(signal)
            if not self.last_take_xruns:
                break
        return gain_db(recorded[:, channel], reference)

    async def gain_until(
        self,
        accept: Callable[[float], bool],
        signal: np.ndarray | None = None,
        tries: int = 40,
    ) -> float:
        """Measure short takes until ``accept(gain)`` or ``tries`` takes; the last gain.

        A parameter sent to a plugin lands some cycles later: poll like this
        instead of sleeping a fixed time.
        """
        probe = signal if signal is not None else sine(frames=2400)
        gain = await self.measure_gain(probe)
        for _ in range(tries - 1):
            if accept(gain):
                break
            gain = await self.measure_gain(probe)
        return gain

    # -- worker thread --------------------------------------------------------------

    def _open(self) -> None:
        player = jack.Client(self._names[0], servername=self.server_name, no_start_server=True)
        recorder = jack.Client(self._names[1], servername=self.server_name, no_start_server=True)
        self._player, self._recorder = player, recorder
        self._parking = Parking()  # a rig opened again plays again
        player.set_process_callback(self._play)
        recorder.set_process_callback(self._record)
        recorder.set_xrun_callback(self._xrun)
        self.samplerate = player.samplerate
        self.blocksize = player.blocksize
        player.activate()
        recorder.activate()
        self._outs = tuple(player.outports.register(f"play_{i + 1}") for i in range(self.channels))
        self._ref = recorder.inports.register("ref_1")
        self._recs = tuple(recorder.inports.register(f"rec_{i + 1}") for i in range(self.channels))
        player.connect(self.play_ports[0], self.ref_port)
        for source, target in zip(self.play_ports, self.play_to, strict=False):
            player.connect(source, target)
        for source, target in zip(self.record_from, self.rec_ports, strict=False):
            recorder.connect(source, target)

    def _close(self) -> None:
        self._parking.close([c for c in (self._player, self._recorder) if c is not None])
        self._player = self._recorder = None

    # -- JACK's audio thread ---------------------------------------------------------

    def _play(self, frames: int) -> None:
        self._parking.check()
        if self._stall:
            stall, self._stall = self._stall, 0.0
            time.sleep(stall)  # on purpose: the rig plays a misbehaving client
        outs = self._outs
        for port in outs:
            port.get_array().fill(0.0)
        take = self._take
        player = self._player
        if take is None or player is None:
            return
        offset = _frames_since(player.last_frame_time, take.start)
        total = take.signal.shape[0]
        if offset + frames <= 0 or offset >= total:
            return
        a, b = max(0, -offset), min(frames, total - offset)
        for i, port in enumerate(outs):
            port.get_array()[a:b] = take.signal[offset + a : offset + b, i]

    def _xrun(self, delayed_usecs: float) -> None:
        """JACK's notification thread: the server missed a deadline during a take."""
        take = self._take
        if take is not None and not take.done:
            take.xruns += 1
            if self._recorder is not None:
                take.xrun_frames.append(_frames_since(self._frame_time(), take.start))

    def _record(self, frames: int) -> None:
        self._parking.check()
        take = self._take
        recorder = self._recorder
        ref = self._ref
        if take is None or take.done or recorder is None or ref is None:
            return
        offset = _frames_since(recorder.last_frame_time, take.start)
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

    ``open``/``close``/``loopback`` are coroutines for the loop's thread; the
    process callbacks run on JACK's audio thread and only copy numpy arrays.

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
        self._clients: tuple[jack.Client, ...] = ()
        self._ports: dict[str, jack.OwnPort] = {}
        self._line = np.zeros(0, dtype=np.float32)
        self._parking = Parking()

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
        """Open both clients and register their ports (no cable plugged in)."""
        await asyncio.wait_for(asyncio.to_thread(self._open), RIG_OPEN_TIMEOUT)

    async def close(self) -> None:
        """Deactivate and close both clients."""
        await in_daemon_thread(self._close, RIG_OPEN_TIMEOUT)

    async def loopback(self) -> None:
        """Plug the calibration cable: line out straight into line in."""
        client = self._clients[0]
        await asyncio.wait_for(
            asyncio.to_thread(client.connect, self.line_out, self.line_in), RIG_OPEN_TIMEOUT
        )

    async def unplug(self) -> None:
        """Pull the calibration cable out again."""
        client = self._clients[0]
        await asyncio.wait_for(
            asyncio.to_thread(client.disconnect, self.line_out, self.line_in), RIG_OPEN_TIMEOUT
        )

    def _open(self) -> None:
        out = jack.Client(self._names[0], servername=self.server_name, no_start_server=True)
        inp = jack.Client(self._names[1], servername=self.server_name, no_start_server=True)
        self._clients = (out, inp)
        self._parking = Parking()
        self._line = np.zeros(self.delay + out.blocksize, dtype=np.float32)
        out.set_process_callback(self._play)
        inp.set_process_callback(self._capture)
        self._ports = {
            "playback": out.inports.register("playback_1"),
            "line_out": out.outports.register("line_out_1"),
            "line_in": inp.inports.register("line_in_1"),
            "capture": inp.outports.register("capture_1"),
        }
        out.activate()
        inp.activate()

    def _close(self) -> None:
        self._parking.close(self._clients)
        self._clients = ()

    # -- JACK's audio thread ---------------------------------------------------------

    def _play(self, frames: int) -> None:
        self._parking.check()
        source = self._ports["playback"].get_array()
        target = self._ports["line_out"].get_array()
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
        self._parking.check()
        self._ports["capture"].get_array()[:] = self._ports["line_in"].get_array()
