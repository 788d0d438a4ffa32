"""Runs the rig against a box: its audio ports and its protocol, nothing else.

Where the box is and how the rig's audio reaches it is a
:class:`~hil.rig.setups.Setup`; :func:`measure` is the same for every one:

* :func:`run_virtual` starts, on this machine, a private dummy JACK server,
  the rig's player and recorder (:class:`tests.rig.Rig`) and the box itself
  (``python -m appliance run``) with its one track wired from the rig's
  player to the rig's recorder (:func:`~hil.rig.setups.virtual_setup`);
* :func:`run_box` measures a real box through the rig computer's audio
  interface (:func:`~hil.rig.setups.interface_setup`), taking the
  interface's own latency and response out with a :class:`Calibration`;
* :func:`calibrate` measures that interface with a loopback cable.

Before measuring, the track's plugins are taken off (after saving the board
as the pedalboard :data:`SAVED_BOARD`) and the board is loaded back at the
end. Then the box is a black box, in this order:

1. **Latency, empty board**: noise takes, :func:`~hil.rig.analysis.measure_latency`.
2. **The dry path**: THD+N of a 1 kHz sine and the response from noise.
3. **Latency, 5 plugins**: gate, compressor, eq, tuner and gain added with
   ``PLUGIN_ADD``, none of which reports a latency of its own.
4. **Knob-to-sound** and **footswitch-to-sound**: the gain plugin's gain
   (``PLUGIN_PARAMETER``) and bypass (``PLUGIN_BYPASS``) toggled every
   200 ms in a playing tone, with 1 and then 20 clients connected; each
   change read with :func:`~hil.rig.analysis.frames_to_level` from the frame
   at which it was sent.
5. **Dropouts**: a tone for ``dropout_seconds`` while 20 clients sweep the
   tuner's reference pitch (a control the sound does not depend on), then
   :func:`~hil.rig.analysis.find_dropouts`, beside ``/healthz``'s xruns.
6. **Switching**: ``SNAPSHOT_RECALL`` between two snapshots and
   ``PEDALBOARD_LOAD`` between two pedalboards, 6 dB apart; then the tail: a
   ``PEDALBOARD_LOAD`` away from a board with a delay just as the tone stops
   (does the old board's echo ring on?). Each read with
   :func:`~hil.rig.analysis.analyse_switch`.

Every time is a frame count on the recording's own clock. A take during
which the rig's own JACK server had an xrun is never taken again: its
figures are kept and the take is listed in :attr:`RigRun.spoiled`, which
the report shows beside the section (:func:`note_take`). A virtual box's
traffic stays on 127.0.0.1; every step is bounded in count and time;
everything started is stopped on the way out. Runs on one asyncio loop; the
box's start and stop and ``/healthz`` go through worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.bench_engines import BenchClient
from hil.rig.analysis import (
    GAP_MIN_FRAMES,
    analyse_switch,
    find_dropouts,
    frames_to_level,
    frequency_response,
    gain_db,
    impulse_response,
    measure_latency,
    rms_db,
    thd_n,
)
from hil.rig.calibration import Calibration, now
from hil.rig.results import (
    DropoutResult,
    DryPathResult,
    Excerpt,
    LatencyResult,
    RigRun,
    Spoiled,
    SwitchResult,
    TimingResult,
)
from hil.rig.setups import (
    Box,
    InterfacePorts,
    RigError,
    Setup,
    interface_setup,
    open_interface,
    virtual_setup,
)
from hil.rig.signals import noise, sine
from hil.wsprobe import ProbeClient, ProbeError
from tests.rig import MidiController, Rig

#: The 5-plugin board, in chain order (catalog keys); none reports a latency.
BOARD = ("gate", "compressor", "eq", "tuner", "gain")
#: How long one request may take to be answered (a plugin load included).
REPLY_TIMEOUT = 30.0
#: The pedalboard the box's board is saved as before the rig empties the track.
SAVED_BOARD = "rig: board before the run"
#: The pedalboards the switching measurement saves on the box (deleted at the end).
RIG_PEDALBOARDS = ("rig a", "rig b", "rig tail")
#: The board whose tail the spillover measurement listens for: echoes every 120 ms,
#: each 6 dB quieter than the one before.
TAIL_DELAY = {"time": 120.0, "feedback": 0.5, "wet_dry": 0.5}
#: After loading the board with the delay: its plugins started and the last board's tail gone.
SETTLE_BEFORE_TAIL = 1.0
#: Before a setlist step: the next board loaded in warm standby (where the engine has one).
WARM_SETTLE = 2.0
#: Below this level a recording holds nothing that came back, dBFS.
SILENT_DB = -90.0
#: Why power cuts are not measured.
NO_RELAY = (
    "not implemented: power cuts need a USB relay on a real box's power supply, "
    "which the rig does not drive yet"
)
#: Frames of silence recorded after each latency probe (the longest latency looked for).
LATENCY_SEARCH = 4096
#: Time between two changes in a knob-to-sound take, seconds.
CHANGE_EVERY = 0.2
#: Changes per knob-to-sound take.
CHANGES_PER_TAKE = 10
#: The level change each knob or footswitch makes, dB.
STEP_DB = -6.0
#: How close to the new level counts as heard, dB.
HEARD_WITHIN_DB = 0.5
#: How often each sweeping client sends a value, Hz.
SWEEP_RATE = 30.0
#: Recording kept either side of a switch or a dropout for its plot, seconds.
EXCERPT_BEFORE, EXCERPT_AFTER = 0.02, 0.1


@dataclass(frozen=True)
class RunSettings:
    """What one run does.

    Attributes:
        engine: the virtual box's engine (``jalv`` or ``carla``; a real box has its own).
        rate: sample rate of the private JACK server, Hz (a real rig's is its server's).
        period: its period, frames (likewise).
        track: the box's track the rig plays through.
        latency_takes: noise takes per latency figure.
        changes: changes per knob-to-sound series.
        clients: how many clients are connected in each series.
        switches: switches of each kind.
        dropout_seconds: length of the dropout recording.
        tone_hz: the tone played for levels, clicks and THD+N.
        level_db: its peak level, dBFS.
    """

    engine: str = "jalv"
    rate: int = 48000
    period: int = 128
    track: str = "track_001"
    latency_takes: int = 10
    changes: int = 50
    clients: tuple[int, ...] = (1, 20)
    switches: int = 6
    dropout_seconds: float = 600.0
    tone_hz: float = 1000.0
    level_db: float = -12.0

    def as_dict(self) -> dict[str, Any]:
        """The settings for the report."""
        return {**asdict(self), "board": list(BOARD), "step_db": STEP_DB}


#: The short run: a minute or two on this machine.
QUICK = RunSettings(latency_takes=5, changes=10, clients=(1, 20), switches=2, dropout_seconds=5.0)


@dataclass
class Session:
    """What every step uses: the rig, the box, its one controlling client."""

    settings: RunSettings
    rig: Rig
    box: Box
    link: BenchClient
    latency: int = 0
    plugins: dict[str, str] = field(default_factory=dict)  # catalog key → plugin id
    base_db: float = 0.0  # the board's gain for the tone, every plugin at its value
    spoiled: list[Spoiled] = field(default_factory=list)  # takes the rig's own server spoiled
    midi: MidiController | None = None  # a foot controller the box hears (a virtual box)
    _sent: int = 0

    async def request(self, kind: str, **data: Any) -> dict[str, Any]:
        """One request on the track; the first reply to it (an ERROR raises)."""
        self._sent += 1
        message = {"id": f"rig_{self._sent}", "type": kind, "data": {"track_id": self.settings.track, **data}}
        _, reply = await self.link.request(message, REPLY_TIMEOUT)
        return reply

    async def health(self) -> dict[str, Any]:
        """The box's ``/healthz`` (``{"error": ...}`` when it does not answer)."""
        return await asyncio.to_thread(self.box.healthz)

    def tone(self, seconds: float) -> np.ndarray:
        return sine(
            self.settings.tone_hz,
            round(seconds * self.settings.rate),
            self.settings.rate,
            self.settings.level_db,
        )


def delayed(played: np.ndarray, frames: int) -> np.ndarray:
    """``played`` as the recording should hold it after ``frames`` of latency (same length)."""
    out = np.zeros_like(played)
    out[frames:] = played[: len(played) - frames]
    return out


# -- steps --------------------------------------------------------------------------


def note_take(rig: Rig, spoiled: list[Spoiled], section: str, what: str) -> int:
    """After a take: list it in ``spoiled`` if the rig's own JACK server had an xrun; its xruns.

    A cycle the rig's server dropped is missing from the recording but not
    from the reference: the take measures the rig's computer as well as the
    box. It is kept (a retake would hide how often this happens) and the
    report marks it.
    """
    if rig.last_take_xruns:
        spoiled.append(Spoiled(section, what, rig.last_take_xruns, tuple(rig.last_take_xrun_frames)))
    return rig.last_take_xruns


async def measure_latency_of(
    rig: Rig,
    settings: RunSettings,
    board: str,
    spoiled: list[Spoiled],
    plugin_latency: int = 0,
    interface_frames: int = 0,
) -> LatencyResult:
    """Noise takes through the board as it is: the lag of each, and one impulse response.

    Args:
        spoiled: where a take the rig's own server spoiled is listed.

    Raises:
        RigError: nothing came back (a cable, the box's input or output, a port name).
    """
    rate = settings.rate
    frames: list[int] = []
    clarity = float("inf")
    impulse: np.ndarray | None = None
    for take in range(settings.latency_takes):
        probe = noise(rate // 10, -20.0, seed=take + 1)
        reference, recorded = await rig.play_and_record(probe, LATENCY_SEARCH)
        note_take(rig, spoiled, "latency", f"noise take {take + 1}, {board}")
        if rms_db(recorded[:, 0]) < SILENT_DB:
            raise RigError(
                f"nothing came back ({board}): check the cables, the ports the rig uses "
                f"({', '.join(rig.play_to + rig.record_from) or 'the box wires itself'}) "
                "and the interface's gain"
            )
        latency = measure_latency(recorded[:, 0], reference, rate, max_lag=LATENCY_SEARCH)
        frames.append(latency.frames)
        clarity = min(clarity, latency.clarity_db)
        if impulse is None:
            impulse = impulse_response(recorded[:, 0], reference, LATENCY_SEARCH // 4)
    return LatencyResult(board, frames, rate, plugin_latency, clarity, impulse, interface_frames)


async def measure_dry_path(
    rig: Rig, settings: RunSettings, latency: int, spoiled: list[Spoiled]
) -> DryPathResult:
    """THD+N of a 1 s tone (its first and last 0.1 s left out) and the response from 2 s of noise.

    Args:
        latency: the round trip as recorded, frames: where the tone starts in the recording.
        spoiled: where a take the rig's own server spoiled is listed.
    """
    rate = settings.rate
    tone = sine(settings.tone_hz, round(1.2 * rate), rate, settings.level_db)
    reference, recorded = await rig.play_and_record(tone, LATENCY_SEARCH)
    note_take(rig, spoiled, "dry_path", "THD+N tone")
    steady = recorded[latency + rate // 10 : latency + rate * 11 // 10, 0]
    distortion = thd_n(steady, rate, settings.tone_hz)
    reference, recorded = await rig.play_and_record(noise(2 * rate, -20.0), LATENCY_SEARCH)
    note_take(rig, spoiled, "dry_path", "response noise")
    response = frequency_response(recorded[:, 0], reference, rate, latency=latency)
    return DryPathResult(distortion, response)


async def empty_track(s: Session) -> str | None:
    """Take every plugin off the track, after saving the board as :data:`SAVED_BOARD`; its name or None.

    A real box comes with a player's board; the latency of the empty board
    and the dry path need the track empty. Nothing is saved when it already is.
    """
    reply = await s.request("BOARD_GET")
    tracks = {t.get("track_id"): t for t in reply["data"].get("tracks", [])}
    if s.settings.track not in tracks:
        raise RigError(f"the box has no track {s.settings.track!r}: it has {', '.join(map(str, tracks))}")
    plugins = [str(p["plugin_id"]) for p in tracks[s.settings.track].get("plugins", [])]
    if not plugins:
        return None
    await s.request("PEDALBOARD_SAVE", name=SAVED_BOARD, overwrite=True)
    for plugin_id in plugins:
        await s.request("PLUGIN_REMOVE", plugin_id=plugin_id)
    return SAVED_BOARD


async def restore_board(s: Session, saved: str | None) -> bool:
    """Load the board :func:`empty_track` saved back; whether that worked (nothing saved: True)."""
    if saved is None:
        return True
    try:
        await s.request("PEDALBOARD_LOAD", name=saved)
    except (ProbeError, TimeoutError):
        return False
    return True


async def tidy_up(s: Session, saved: str | None) -> bool:
    """Load the box's board back and delete the pedalboards the run saved on the box (the
    board stays playing, unsaved); whether the board came back."""
    restored = await restore_board(s, saved)
    for name in (*RIG_PEDALBOARDS, *([saved] if saved is not None else [])):
        with contextlib.suppress(ProbeError, TimeoutError):
            await s.request("PEDALBOARD_DELETE", name=name)
    return restored


async def build_board(s: Session) -> None:
    """The 5-plugin board, every plugin at a value that leaves a steady tone steady."""
    for key in BOARD:
        reply = await s.request("PLUGIN_ADD", name=key, plugin_path="", plugin_id="")
        s.plugins[key] = str(reply["data"]["plugin_id"])
    await s.request(
        "PLUGIN_PARAMETER", plugin_id=s.plugins["compressor"], parameter_id="threshold", parameter_value=0.0
    )
    await s.request(
        "PLUGIN_PARAMETER", plugin_id=s.plugins["compressor"], parameter_id="ratio", parameter_value=1.0
    )
    s.base_db = await steady_gain(s)


async def steady_gain(s: Session, tries: int = 20) -> float:
    """The board's gain for the tone once two clean takes in a row agree (plugins settle).

    A spoiled probe is listed (section ``knob_to_sound``, whose targets this
    level sets) and does not count as agreeing.
    """
    probe = s.tone(0.1)

    async def probe_gain(index: int) -> float | None:
        reference, recorded = await s.rig.play_and_record(probe)
        if note_take(s.rig, s.spoiled, "knob_to_sound", f"level probe {index + 1} of the board"):
            return None
        return gain_db(recorded[:, 0], reference)

    before = await probe_gain(0)
    for index in range(1, tries + 1):
        now = await probe_gain(index)
        if now is not None and before is not None and abs(now - before) <= 0.05:
            return now
        before = now if now is not None else before
    if before is None:
        raise RigError(f"the rig's own xruns spoiled every level probe of the board ({tries + 1} takes)")
    return before


@contextlib.asynccontextmanager
async def extra_clients(count: int, box: Box) -> AsyncIterator[list[ProbeClient]]:
    """``count`` more clients connected to the box (each receives every broadcast)."""
    clients: list[ProbeClient] = []
    try:
        for _ in range(count):
            clients.append(await box.connect(ProbeClient))
        yield clients
    finally:
        for client in clients:
            await client.close()


async def timed_changes(
    s: Session,
    what: str,
    send: Callable[[int], Awaitable[None]],
    target: Callable[[int], float],
    count: int,
) -> tuple[list[int], int]:
    """``count`` changes, one every :data:`CHANGE_EVERY` s in a playing tone; (frames to each, missed).

    ``send(i)`` makes change ``i`` (a coroutine function); ``target(i)`` is the
    gain in dB it leads to. The frame is noted just before each send.
    ``what`` names the series for a spoiled take.
    """
    rate = s.settings.rate
    spacing = round(CHANGE_EVERY * rate)
    heard: list[int] = []
    missed = 0
    done = 0
    while done < count:
        batch = min(CHANGES_PER_TAKE, count - done)
        marks: list[int] = []

        async def changes(first: int = done, batch: int = batch, marks: list[int] = marks) -> None:
            for i in range(batch):
                while s.rig.position() < (i + 1) * spacing:
                    await asyncio.sleep(0.002)
                marks.append(s.rig.position())
                await send(first + i)

        played, recorded, outcome = await s.rig.record_during(
            s.tone(CHANGE_EVERY * (batch + 1.5)), changes, lead_frames=0
        )
        if isinstance(outcome, Exception):
            raise outcome
        note_take(s.rig, s.spoiled, "knob_to_sound", f"{what}, changes {done + 1} to {done + batch}")
        reference = delayed(played, s.latency)
        for i, mark in enumerate(marks):
            end = marks[i + 1] if i + 1 < len(marks) else len(reference)
            frames = frames_to_level(
                recorded[:end, 0],
                mark,
                target(done + i),
                reference=reference[:end],
                tolerance_db=HEARD_WITHIN_DB,
            )
            if frames is None:
                missed += 1
            else:
                heard.append(frames)
        done += batch
    return heard, missed


async def measure_knob_and_footswitch(s: Session) -> list[TimingResult]:
    """Gain and bypass changes of the last plugin, at each client count."""
    gain = s.plugins["gain"]
    results = []
    for count in s.settings.clients:
        async with extra_clients(count - 1, s.box):
            clients = f"{count} client{'s' if count != 1 else ''}"

            async def knob(i: int) -> None:
                await s.request(
                    "PLUGIN_PARAMETER",
                    plugin_id=gain,
                    parameter_id="gain",
                    parameter_value=STEP_DB * ((i + 1) % 2),
                )

            heard, missed = await timed_changes(
                s, f"gain, {clients}", knob, lambda i: s.base_db + STEP_DB * ((i + 1) % 2), s.settings.changes
            )
            results.append(TimingResult(f"gain, {clients}", heard, s.settings.rate, missed))
            await s.request("PLUGIN_PARAMETER", plugin_id=gain, parameter_id="gain", parameter_value=STEP_DB)

            async def footswitch(i: int) -> None:
                await s.request("PLUGIN_BYPASS", plugin_id=gain, bypass=i % 2 == 0)

            heard, missed = await timed_changes(
                s,
                f"bypass, {clients}",
                footswitch,
                lambda i: s.base_db + STEP_DB * (i % 2),
                s.settings.changes,
            )
            results.append(TimingResult(f"bypass, {clients}", heard, s.settings.rate, missed))
            await s.request("PLUGIN_BYPASS", plugin_id=gain, bypass=False)
            await s.request("PLUGIN_PARAMETER", plugin_id=gain, parameter_id="gain", parameter_value=0.0)
            if s.midi is not None:
                results.append(await cc_to_sound(s, s.midi, gain, clients))
    return results


async def cc_to_sound(s: Session, pedal: MidiController, gain: str, clients: str) -> TimingResult:
    """A pedal's CC 7 mapped to the gain (0 to :data:`STEP_DB`): its changes timed as a knob's."""
    mapping = {"id": "rig_cc", "message": "cc", "number": 7, "channel": 1, "action": "parameter"}
    await s.request(
        "MIDI_MAP_SET",
        mapping={**mapping, "plugin_id": gain, "parameter_id": "gain", "minimum": 0.0, "maximum": STEP_DB},
    )
    try:

        async def cc(i: int) -> None:
            await pedal.cc(7, 127 if (i + 1) % 2 else 0)

        heard, missed = await timed_changes(
            s, f"cc, {clients}", cc, lambda i: s.base_db + STEP_DB * ((i + 1) % 2), s.settings.changes
        )
    finally:
        await s.request("MIDI_MAP_DELETE", id="rig_cc")
        await s.request("PLUGIN_PARAMETER", plugin_id=gain, parameter_id="gain", parameter_value=0.0)
    return TimingResult(f"cc, {clients}", heard, s.settings.rate, missed)


@contextlib.asynccontextmanager
async def heard_pedal(s: Session, server: str | None) -> AsyncIterator[MidiController | None]:
    """A MIDI controller on ``server`` once the box listens to it; None without a server, or when
    the box hears no MIDI there (then the report has no CC figures)."""
    if server is None:
        yield None
        return
    pedal = MidiController(server)
    await pedal.open()
    try:
        for _ in range(100):
            state = await s.request("MIDI_GET")
            if pedal.port in state["data"].get("inputs", []):
                break
            await asyncio.sleep(0.05)
        else:
            yield None
            return
        yield pedal
    finally:
        await pedal.close()


async def _sweep(clients: list[ProbeClient], track: str, plugin_id: str, stop: asyncio.Event) -> None:
    """Each client drags the tuner's reference pitch up and down, staggered, until ``stop``."""
    tick = 0
    while not stop.is_set():
        for index, client in enumerate(clients):
            phase = ((tick + index * 7) % 60) / 30.0
            value = 420.0 + 40.0 * (phase if phase <= 1.0 else 2.0 - phase)
            message = {
                "id": f"sweep_{index}_{tick}",
                "type": "PLUGIN_PARAMETER",
                "data": {
                    "track_id": track,
                    "plugin_id": plugin_id,
                    "parameter_id": "reference",
                    "parameter_value": value,
                },
            }
            with contextlib.suppress(Exception):
                client.send_texts([json.dumps(message, separators=(",", ":")).encode()])
        tick += 1
        await asyncio.sleep(1.0 / SWEEP_RATE)


async def measure_dropouts(s: Session) -> DropoutResult:
    """A steady tone while 20 clients sweep a control the sound does not depend on."""
    rate = s.settings.rate
    before = (await s.health()).get("xruns")
    stop = asyncio.Event()
    async with extra_clients(20, s.box) as clients:
        sweeper = asyncio.ensure_future(_sweep(clients, s.settings.track, s.plugins["tuner"], stop))
        try:
            _, recorded = await s.rig.play_and_record(s.tone(s.settings.dropout_seconds))
        finally:
            stop.set()
            await sweeper
    note_take(s.rig, s.spoiled, "dropouts", f"{s.settings.dropout_seconds:g} s of tone")
    after = (await s.health()).get("xruns")
    first = s.latency + rate // 100  # the tone's own start is not a fault
    out = recorded[first : len(recorded) - rate // 100, 0]
    events = [
        dataclasses.replace(e, frame=e.frame + first) for e in find_dropouts(out, rate, s.settings.tone_hz)
    ]
    excerpts = [
        _excerpt(recorded[:, 0], rate, e.frame, f"{e.kind} at {e.frame / rate:.3f} s", {e.kind: e.frame})
        for e in events
    ]
    xruns = after - before if isinstance(before, int) and isinstance(after, int) else None
    return DropoutResult(
        len(out) / rate,
        rate,
        events,
        clients=20,
        xruns=xruns,
        excerpts=excerpts,
        rig_xruns=s.rig.last_take_xruns,
    )


def _excerpt(recorded: np.ndarray, rate: int, at: int, title: str, marks: dict[str, int]) -> Excerpt:
    """The recording from a little before ``at`` to a little after the last mark."""
    first = max(0, at - round(EXCERPT_BEFORE * rate))
    last = min(len(recorded), max([at, *marks.values()]) + round(EXCERPT_AFTER * rate))
    return Excerpt(title, np.array(recorded[first:last]), rate, first, marks)


async def measure_switches(
    s: Session,
    name: str,
    kind: str,
    targets: list[tuple[dict[str, Any], float | None]],
    seconds: float,
    before: dict[str, Any] | None = None,
    settle: float = 0.0,
    send: Callable[[dict[str, Any]], Awaitable[object]] | None = None,
) -> SwitchResult:
    """``settings.switches`` switches with ``kind`` requests, cycling through ``targets``.

    Each target is (request data, the board's gain after it in dB relative to
    :attr:`Session.base_db`); each switch is asked for 0.2 s into a take of
    ``seconds``. With a level of None the tone stops as the switch is asked
    for: what follows is the old board's tail, if it rings on (spillover).
    ``before``: a ``PEDALBOARD_LOAD`` sent before each take, not measured.
    ``settle``: seconds to wait before each take (a warm standby loading).
    ``send``: how the switch is asked for, instead of a ``kind`` request (a MIDI pedal).
    """
    rate = s.settings.rate
    analyses = []
    excerpts = []
    xruns: list[int] = []
    for index in range(s.settings.switches):
        data, level = targets[index % len(targets)]
        marks: list[int] = []
        if before is not None:
            await s.request("PEDALBOARD_LOAD", **before)
            await asyncio.sleep(SETTLE_BEFORE_TAIL)
        if settle:
            await asyncio.sleep(settle)
        signal = s.tone(seconds)
        if level is None:
            signal[rate // 5 :] = 0.0

        async def switch(data: dict[str, Any] = data, marks: list[int] = marks) -> None:
            marks.append(s.rig.position())
            if send is not None:
                await send(data)
            else:
                await s.request(kind, **data)

        played, recorded, outcome = await s.rig.record_during(signal, switch, lead_frames=rate // 5)
        if isinstance(outcome, Exception):
            raise outcome
        # The recording's silent lead-in and the tone's own end are not the switch's.
        first, last = s.latency + s.settings.period, len(recorded) - rate // 100
        mark = marks[0]
        analysis = analyse_switch(
            recorded[first:last, 0],
            mark - first,
            reference=delayed(played, s.latency)[first:last],
            span=rate // 2,
            new_level_db=None if level is None else s.base_db + level,
            tolerance_db=HEARD_WITHIN_DB,
        )
        analysis = dataclasses.replace(analysis, silence_start=analysis.silence_start + first)
        analyses.append(analysis)
        xruns.append(note_take(s.rig, s.spoiled, "switching", f"{name} {index + 1}"))
        shown = {"request": mark}
        if analysis.to_new_sound is not None:
            shown["heard"] = mark + analysis.to_new_sound
        if analysis.longest_silence >= GAP_MIN_FRAMES:
            shown["silence"] = analysis.silence_start
        excerpts.append(_excerpt(recorded[:, 0], rate, mark, f"{name} {index + 1}", shown))
    return SwitchResult(name, analyses, rate, excerpts, xruns)


async def measure_switching(s: Session) -> list[SwitchResult]:
    """Snapshot recall and pedalboard load, between two sounds 6 dB apart."""
    gain = s.plugins["gain"]
    await s.request("PLUGIN_PARAMETER", plugin_id=gain, parameter_id="gain", parameter_value=0.0)
    await s.request("PEDALBOARD_SAVE", name=RIG_PEDALBOARDS[0], overwrite=True)
    await s.request("SNAPSHOT_SAVE", name="loud")
    await s.request("PLUGIN_PARAMETER", plugin_id=gain, parameter_id="gain", parameter_value=STEP_DB)
    await s.request("SNAPSHOT_SAVE", name="quiet")
    snapshots = await measure_switches(
        s, "snapshot recall", "SNAPSHOT_RECALL", [({"name": "loud"}, 0.0), ({"name": "quiet"}, STEP_DB)], 0.6
    )
    await s.request("PEDALBOARD_SAVE", name=RIG_PEDALBOARDS[1], overwrite=True)
    boards = await measure_switches(
        s,
        "pedalboard switch",
        "PEDALBOARD_LOAD",
        [
            ({"name": RIG_PEDALBOARDS[0], "snapshot": "loud"}, 0.0),
            ({"name": RIG_PEDALBOARDS[1], "snapshot": "quiet"}, STEP_DB),
        ],
        2.0,
    )
    steps = await measure_setlist_steps(s)
    return [snapshots, boards, *steps, await measure_spillover(s)]


async def measure_setlist_steps(s: Session) -> list[SwitchResult]:
    """The same two pedalboards as setlist entries, stepped through with NEXT and PREVIOUS:
    where the engine keeps the setlist's neighbours loaded (warm standby, Carla), a step
    wakes one instead of loading it; with a MIDI pedal, the same step by program change
    (program 1: entry 1). The player's setlist is put back afterwards."""
    saved = (await s.request("SETLIST_GET"))["data"]["setlist"]
    entries = [
        {"pedalboard": RIG_PEDALBOARDS[0], "snapshot": "loud"},
        {"pedalboard": RIG_PEDALBOARDS[1], "snapshot": "quiet"},
    ]
    await s.request("PEDALBOARD_LOAD", name=RIG_PEDALBOARDS[0], snapshot="loud")
    await s.request("SETLIST_SET", entries=entries, position=0)
    before = {"name": RIG_PEDALBOARDS[0], "snapshot": "loud"}
    results = []
    try:
        results.append(
            await measure_switches(
                s,
                "setlist step (warm standby)",
                "SETLIST_NEXT",
                [({}, STEP_DB)],
                3.0,  # a cold step (jalv) took over 2 s once on a loaded 2-core VM
                before=before,
                settle=WARM_SETTLE,
            )
        )
        pedal = s.midi
        if pedal is not None:
            mapping = {"id": "rig_pc", "message": "pc", "number": None, "channel": 1, "action": "setlist_go"}
            await s.request("MIDI_MAP_SET", mapping=mapping)
            try:

                async def program(data: dict[str, Any]) -> None:
                    await pedal.pc(1)

                results.append(
                    await measure_switches(
                        s,
                        "program change (warm standby)",
                        "",
                        [({}, STEP_DB)],
                        3.0,
                        before=before,
                        settle=WARM_SETTLE,
                        send=program,
                    )
                )
            finally:
                await s.request("MIDI_MAP_DELETE", id="rig_pc")
    finally:
        with contextlib.suppress(ProbeError, TimeoutError):
            await s.request("SETLIST_SET", entries=saved["entries"], position=saved["position"])
    return results


async def measure_spillover(s: Session) -> SwitchResult:
    """A pedalboard switch as the guitar stops, away from a board with a delay: whether its
    echoes ring on after the switch (the box's spillover) and how loud."""
    reply = await s.request("PLUGIN_ADD", name="delay", plugin_path="", plugin_id="")
    delay = str(reply["data"]["plugin_id"])
    for parameter, value in TAIL_DELAY.items():
        await s.request("PLUGIN_PARAMETER", plugin_id=delay, parameter_id=parameter, parameter_value=value)
    await s.request("PEDALBOARD_SAVE", name=RIG_PEDALBOARDS[2], overwrite=True)
    return await measure_switches(
        s,
        "pedalboard switch, tail",
        "PEDALBOARD_LOAD",
        [({"name": RIG_PEDALBOARDS[0]}, None)],
        1.5,
        before={"name": RIG_PEDALBOARDS[2]},
    )


# -- the run ---


async def connect(box: Box) -> BenchClient:
    """The rig's controlling client, its token accepted (a ``PING`` answered).

    Raises:
        RigError: the box cannot be reached, or refuses the rig (a wrong or missing token).
    """
    try:
        link = await box.connect(BenchClient)
    except (OSError, TimeoutError, ProbeError) as exc:
        raise RigError(f"cannot open {box.url}: {exc or type(exc).__name__}") from exc
    try:
        await link.request({"id": "rig_hello", "type": "PING"}, REPLY_TIMEOUT)
    except (ProbeError, TimeoutError) as exc:
        refused = link.last_error.decode(errors="replace") if link.last_error else str(exc)
        await link.close()
        hint = " (check --token)" if "UNAUTHORIZED" in refused else ""
        raise RigError(f"the box at {box.url} refused the rig{hint}: {refused[:300]}") from exc
    return link


async def measure(
    setup: Setup,
    settings: RunSettings,
    calibration: Calibration | None = None,
    log: Callable[[str], None] = print,
) -> RigRun:
    """Measure the box of ``setup`` through its audio and its protocol; the figures.

    The same for a virtual and a real box. The track is emptied first (its
    board saved as :data:`SAVED_BOARD`) and the board loaded back at the end,
    whatever happened.

    Args:
        setup: the box and the rig's audio wired to it.
        settings: what to measure and how long (rate and period are the rig's).
        calibration: the rig's interface, taken out of the figures (a real box).
        log: where progress lines go.

    Raises:
        RigError: the box refused the rig, has no such track, or nothing came back.
    """
    rig = setup.rig
    settings = dataclasses.replace(settings, rate=rig.samplerate, period=rig.blocksize)
    notes = [] if calibration is None else calibration.check(settings.rate, settings.period, setup.settings)
    interface = 0 if calibration is None else calibration.latency_frames
    link = await connect(setup.box)
    session = Session(settings, rig, setup.box, link)
    saved: str | None = None
    tidied = False
    try:
        run = RigRun(
            settings={**settings.as_dict(), **setup.settings},
            box={"healthz": await session.health(), "version": setup.version},
            spoiled=session.spoiled,  # filled in as the takes go
        )
        if calibration is not None:
            run.calibration = {**calibration.figures(), "notes": notes}
        saved = await empty_track(session)
        run.box["board_saved_as"] = saved
        log("latency, empty board")
        run.latency.append(
            await measure_latency_of(rig, settings, "empty", session.spoiled, interface_frames=interface)
        )
        session.latency = run.latency[0].median or 0
        log("the dry path")
        dry = await measure_dry_path(rig, settings, session.latency, session.spoiled)
        if calibration is not None:
            dry = DryPathResult(
                dry.distortion,
                calibration.box_response(dry.response),
                calibration.distortion,
                calibration.response,
            )
        run.dry_path = dry
        log(f"latency, {len(BOARD)} plugins")
        await build_board(session)
        run.latency.append(
            await measure_latency_of(
                rig, settings, f"{len(BOARD)} plugins", session.spoiled, interface_frames=interface
            )
        )
        log("knob-, footswitch- and pedal-to-sound")
        async with heard_pedal(session, setup.midi_server) as pedal:
            session.midi = pedal
            run.knob_to_sound = await measure_knob_and_footswitch(session)
            log(f"dropouts, {settings.dropout_seconds:g} s")
            run.dropouts = await measure_dropouts(session)
            log("switching")
            run.switching = await measure_switches_or_skip(session, run)
        session.midi = None
        run.skipped.setdefault("recovery", NO_RELAY)
        log("loading the box's board back, deleting the run's pedalboards")
        run.box["board_restored"] = await tidy_up(session, saved)
        tidied = True
        run.box["healthz_after"] = await session.health()
        return run
    finally:
        if not tidied:
            with contextlib.suppress(Exception):
                await tidy_up(session, saved)
        await link.close()


async def run_virtual(settings: RunSettings, workdir: Path, log: Callable[[str], None] = print) -> RigRun:
    """Start a virtual box on a private JACK server, measure it, stop everything; the figures.

    Args:
        settings: what to measure and how long.
        workdir: a folder for the box's config, data and log.
        log: where progress lines go.
    """
    async with virtual_setup(
        settings.engine, settings.rate, settings.period, workdir, settings.track, log
    ) as setup:
        run = await measure(setup, settings, None, log)
        if setup.server is not None:
            run.server_xruns = list(setup.server.xrun_lines)
        return run


async def run_box(
    settings: RunSettings,
    box: Box,
    ports: InterfacePorts,
    calibration: Calibration | None = None,
    version: str | None = None,
    log: Callable[[str], None] = print,
) -> RigRun:
    """Measure a real box through the rig computer's audio interface; the figures.

    Args:
        settings: what to measure and how long (rate and period are the rig's JACK server's).
        box: the box's WebSocket URL and token.
        ports: the rig computer's JACK server and the interface's ports cabled to the box.
        calibration: the interface's loopback calibration (without one, the
            figures include the interface and the report says so).
        version: the box's version, when known (the box does not say).
        log: where progress lines go.

    Raises:
        RigError: the box, the interface or the calibration cannot be used.
    """
    async with interface_setup(box, ports, version, log) as setup:
        run = await measure(setup, settings, calibration, log)
    if calibration is None:
        run.skipped["calibration"] = (
            "no --calibration: every latency, response and time includes the rig's own interface"
        )
    return run


async def calibrate(
    settings: RunSettings, ports: InterfacePorts, log: Callable[[str], None] = print
) -> tuple[Calibration, RigRun]:
    """Measure the rig's interface with a loopback cable (its output straight into its input).

    Returns:
        The calibration, and the same figures as a report (latency and dry
        path; every other section skipped) for its plots.

    Raises:
        RigError: the interface cannot be used, or nothing came back (no cable).
    """
    async with open_interface(ports) as rig:
        settings = dataclasses.replace(settings, rate=rig.samplerate, period=rig.blocksize)
        log(f"calibrating {ports.playback} → {ports.capture} ({settings.rate} Hz, {settings.period} frames)")
        spoiled: list[Spoiled] = []
        latency = await measure_latency_of(rig, settings, "loopback cable", spoiled)
        dry = await measure_dry_path(rig, settings, latency.median or 0, spoiled)
    calibration = Calibration(
        ports.as_dict(),
        settings.rate,
        settings.period,
        list(latency.frames),
        latency.clarity_db,
        dry.distortion,
        dry.response,
        now(),
    )
    why = "a calibration: the interface's loopback cable, no box"
    run = RigRun(
        settings={**settings.as_dict(), "box": "none (loopback cable)", **ports.as_dict()},
        box={},
        latency=[latency],
        dry_path=dry,
        skipped={key: why for key in ("knob_to_sound", "switching", "dropouts", "recovery")},
        calibration=calibration.figures(),
        spoiled=spoiled,
    )
    return calibration, run


async def measure_switches_or_skip(s: Session, run: RigRun) -> list[SwitchResult]:
    """:func:`measure_switching`, or nothing and the reason in :attr:`RigRun.skipped`."""
    try:
        return await measure_switching(s)
    except Exception as exc:  # the box refused (an older box without pedalboards): say so
        run.skipped["switching"] = f"{type(exc).__name__}: {exc}"
        return []
