"""Runs the rig against a virtual box: its audio ports and its protocol, nothing else.

:func:`run_virtual` starts, on this machine, a private dummy JACK server, the
virtual rig's player and recorder (:class:`tests.rig.Rig`) and the box
itself (``python -m appliance run``, :class:`tests.boxproc.BoxProcess`)
with its one track wired from the rig's player to the rig's recorder. It
then treats the box as a black box, in this order:

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
   ``PEDALBOARD_LOAD`` between two pedalboards, 6 dB apart, each read with
   :func:`~hil.rig.analysis.analyse_switch`.

Every time is a frame count on the recording's own clock. Traffic stays on
127.0.0.1; every step is bounded in count and time; everything started is
stopped on the way out. Runs on one asyncio loop; the box's start and stop
and ``/healthz`` go through worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import appliance
from appliance.engine.jackserver import DummySettings, JackServer
from hil.bench_engines import BenchClient
from hil.rig.analysis import (
    GAP_MIN_FRAMES,
    analyse_switch,
    find_dropouts,
    frames_to_level,
    frequency_response,
    impulse_response,
    measure_latency,
    thd_n,
)
from hil.rig.results import (
    DropoutResult,
    DryPathResult,
    Excerpt,
    LatencyResult,
    RigRun,
    SwitchResult,
    TimingResult,
)
from hil.rig.signals import noise, sine
from hil.wsprobe import ProbeClient
from tests.boxproc import BoxProcess, virtual_config
from tests.rig import Rig

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
TRACK = "track_001"
#: The 5-plugin board, in chain order (catalog keys); none reports a latency.
BOARD = ("gate", "compressor", "eq", "tuner", "gain")
#: How long one request may take to be answered (a plugin load included).
REPLY_TIMEOUT = 30.0
#: How long ``/healthz`` may take.
HEALTH_TIMEOUT = 5.0
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
        engine: the virtual box's engine (``jalv`` or ``carla``).
        rate: sample rate of the private JACK server, Hz.
        period: its period, frames.
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
    latency_takes: int = 10
    changes: int = 50
    clients: tuple[int, ...] = (1, 20)
    switches: int = 6
    dropout_seconds: float = 600.0
    tone_hz: float = 1000.0
    level_db: float = -12.0

    def as_dict(self) -> dict[str, Any]:
        """The settings for the report."""
        return {**asdict(self), "box": "virtual", "board": list(BOARD), "step_db": STEP_DB}


#: The short run: a minute or two on this machine.
QUICK = RunSettings(latency_takes=5, changes=10, clients=(1, 20), switches=2, dropout_seconds=5.0)


def box_version() -> str:
    """The virtual box's version: the package's, and the checkout's commit when there is one."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{appliance.__version__} ({commit})" if commit else appliance.__version__


def _healthz(base: str) -> dict[str, Any]:
    """``GET /healthz`` (a worker thread's call: it blocks)."""
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=HEALTH_TIMEOUT) as response:
            data: dict[str, Any] = json.loads(response.read())
    except OSError as exc:
        return {"error": str(exc)}
    return data


@dataclass
class Session:
    """What every step uses: the rig, the box, its one controlling client."""

    settings: RunSettings
    rig: Rig
    box: BoxProcess
    link: BenchClient
    latency: int = 0
    plugins: dict[str, str] = field(default_factory=dict)  # catalog key → plugin id
    base_db: float = 0.0  # the board's gain for the tone, every plugin at its value
    _sent: int = 0

    async def request(self, kind: str, **data: Any) -> dict[str, Any]:
        """One request on the track; the first reply to it (an ERROR raises)."""
        self._sent += 1
        message = {"id": f"rig_{self._sent}", "type": kind, "data": {"track_id": TRACK, **data}}
        _, reply = await self.link.request(message, REPLY_TIMEOUT)
        return reply

    async def health(self) -> dict[str, Any]:
        return await asyncio.to_thread(_healthz, self.box.base)

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


async def measure_latency_of(s: Session, board: str, plugin_latency: int = 0) -> LatencyResult:
    """Noise takes through the board as it is: the lag of each, and one impulse response."""
    rate = s.settings.rate
    frames: list[int] = []
    clarity = float("inf")
    impulse: np.ndarray | None = None
    for take in range(s.settings.latency_takes):
        reference, recorded = await s.rig.play_and_record(
            noise(rate // 10, -20.0, seed=take + 1), LATENCY_SEARCH
        )
        latency = measure_latency(recorded[:, 0], reference, rate, max_lag=LATENCY_SEARCH)
        frames.append(latency.frames)
        clarity = min(clarity, latency.clarity_db)
        if impulse is None:
            impulse = impulse_response(recorded[:, 0], reference, LATENCY_SEARCH // 4)
    return LatencyResult(board, frames, rate, plugin_latency, clarity, impulse)


async def measure_dry_path(s: Session) -> DryPathResult:
    """THD+N of a 1 s tone (its first and last 0.1 s left out) and the response from 2 s of noise."""
    rate = s.settings.rate
    reference, recorded = await s.rig.play_and_record(s.tone(1.2), LATENCY_SEARCH)
    steady = recorded[s.latency + rate // 10 : s.latency + rate * 11 // 10, 0]
    distortion = thd_n(steady, rate, s.settings.tone_hz)
    reference, recorded = await s.rig.play_and_record(noise(2 * rate, -20.0), LATENCY_SEARCH)
    response = frequency_response(recorded[:, 0], reference, rate, latency=s.latency)
    return DryPathResult(distortion, response)


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
    """The board's gain for the tone once two takes in a row agree (plugins settle)."""
    probe = s.tone(0.1)
    before = await s.rig.measure_gain(probe)
    for _ in range(tries):
        now = await s.rig.measure_gain(probe)
        if abs(now - before) <= 0.05:
            return now
        before = now
    return before


@contextlib.asynccontextmanager
async def extra_clients(count: int, port: int) -> AsyncIterator[list[ProbeClient]]:
    """``count`` more clients connected to the box (each receives every broadcast)."""
    clients: list[ProbeClient] = []
    try:
        for _ in range(count):
            clients.append(await ProbeClient.open(HOST, port))
        yield clients
    finally:
        for client in clients:
            await client.close()


async def timed_changes(
    s: Session, send: Callable[[int], Awaitable[None]], target: Callable[[int], float], count: int
) -> tuple[list[int], int]:
    """``count`` changes, one every :data:`CHANGE_EVERY` s in a playing tone; (frames to each, missed).

    ``send(i)`` makes change ``i`` (a coroutine function); ``target(i)`` is the
    gain in dB it leads to. The frame is noted just before each send.
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
        async with extra_clients(count - 1, s.box.port):
            clients = f"{count} client{'s' if count != 1 else ''}"

            async def knob(i: int) -> None:
                await s.request(
                    "PLUGIN_PARAMETER",
                    plugin_id=gain,
                    parameter_id="gain",
                    parameter_value=STEP_DB * ((i + 1) % 2),
                )

            heard, missed = await timed_changes(
                s, knob, lambda i: s.base_db + STEP_DB * ((i + 1) % 2), s.settings.changes
            )
            results.append(TimingResult(f"gain, {clients}", heard, s.settings.rate, missed))
            await s.request("PLUGIN_PARAMETER", plugin_id=gain, parameter_id="gain", parameter_value=STEP_DB)

            async def footswitch(i: int) -> None:
                await s.request("PLUGIN_BYPASS", plugin_id=gain, bypass=i % 2 == 0)

            heard, missed = await timed_changes(
                s, footswitch, lambda i: s.base_db + STEP_DB * (i % 2), s.settings.changes
            )
            results.append(TimingResult(f"bypass, {clients}", heard, s.settings.rate, missed))
            await s.request("PLUGIN_BYPASS", plugin_id=gain, bypass=False)
            await s.request("PLUGIN_PARAMETER", plugin_id=gain, parameter_id="gain", parameter_value=0.0)
    return results


async def _sweep(clients: list[ProbeClient], plugin_id: str, stop: asyncio.Event) -> None:
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
                    "track_id": TRACK,
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
    async with extra_clients(20, s.box.port) as clients:
        sweeper = asyncio.ensure_future(_sweep(clients, s.plugins["tuner"], stop))
        try:
            _, recorded = await s.rig.play_and_record(s.tone(s.settings.dropout_seconds))
        finally:
            stop.set()
            await sweeper
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
    s: Session, name: str, kind: str, targets: list[tuple[dict[str, Any], float]], seconds: float
) -> SwitchResult:
    """``settings.switches`` switches with ``kind`` requests, cycling through ``targets``.

    Each target is (request data, the board's gain after it in dB relative to
    :attr:`Session.base_db`); each switch is asked for 0.2 s into a take of
    ``seconds``.
    """
    rate = s.settings.rate
    analyses = []
    excerpts = []
    xruns: list[int] = []
    for index in range(s.settings.switches):
        data, level = targets[index % len(targets)]
        marks: list[int] = []

        async def switch(data: dict[str, Any] = data, marks: list[int] = marks) -> None:
            marks.append(s.rig.position())
            await s.request(kind, **data)

        played, recorded, outcome = await s.rig.record_during(s.tone(seconds), switch, lead_frames=rate // 5)
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
            new_level_db=s.base_db + level,
            tolerance_db=HEARD_WITHIN_DB,
        )
        analysis = dataclasses.replace(analysis, silence_start=analysis.silence_start + first)
        analyses.append(analysis)
        xruns.append(s.rig.last_take_xruns)
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
    await s.request("PEDALBOARD_SAVE", name="rig a", overwrite=True)
    await s.request("SNAPSHOT_SAVE", name="loud")
    await s.request("PLUGIN_PARAMETER", plugin_id=gain, parameter_id="gain", parameter_value=STEP_DB)
    await s.request("SNAPSHOT_SAVE", name="quiet")
    snapshots = await measure_switches(
        s, "snapshot recall", "SNAPSHOT_RECALL", [({"name": "loud"}, 0.0), ({"name": "quiet"}, STEP_DB)], 0.6
    )
    await s.request("PEDALBOARD_SAVE", name="rig b", overwrite=True)
    boards = await measure_switches(
        s,
        "pedalboard switch",
        "PEDALBOARD_LOAD",
        [({"name": "rig a", "snapshot": "loud"}, 0.0), ({"name": "rig b", "snapshot": "quiet"}, STEP_DB)],
        2.0,
    )
    return [snapshots, boards]


# -- the run ------------------------------------------------------------------------


async def run_virtual(settings: RunSettings, workdir: Path, log: Callable[[str], None] = print) -> RigRun:
    """Start a virtual box on a private JACK server, measure it, stop everything; the figures.

    Args:
        settings: what to measure and how long.
        workdir: a folder for the box's config, data and log.
        log: where progress lines go.
    """
    rate = settings.rate
    server = JackServer(f"rig-{secrets.token_hex(3)}", DummySettings(rate, settings.period, realtime=True))
    await server.start()
    rig = Rig(server.name)
    box: BoxProcess | None = None
    link: BenchClient | None = None
    try:
        await rig.open()
        tracks = [{"id": TRACK, "inputs": list(rig.play_ports), "outputs": list(rig.rec_ports)}]
        config = virtual_config(
            workdir,
            jack_server=server.name,
            dummy=False,
            engine=settings.engine,
            tracks=tracks,
            demo=[],
            data_dir=workdir / "data",
        )
        box = BoxProcess(config)
        log(f"starting a virtual {settings.engine} box on JACK server {server.name}")
        await asyncio.to_thread(box.start)
        client = await BenchClient.open(HOST, box.port, "/ws")
        assert isinstance(client, BenchClient)
        link = client
        session = Session(settings, rig, box, link)
        run = RigRun(
            settings={**settings.as_dict(), "jack_server": server.name, "realtime": server.is_realtime},
            box={"healthz": await session.health(), "version": box_version()},
        )
        log("latency, empty board")
        run.latency.append(await measure_latency_of(session, "empty"))
        session.latency = run.latency[0].median or 0
        log("the dry path")
        run.dry_path = await measure_dry_path(session)
        log("latency, 5 plugins")
        await build_board(session)
        run.latency.append(await measure_latency_of(session, f"{len(BOARD)} plugins"))
        log("knob-to-sound and footswitch-to-sound")
        run.knob_to_sound = await measure_knob_and_footswitch(session)
        log(f"dropouts, {settings.dropout_seconds:g} s")
        run.dropouts = await measure_dropouts(session)
        log("switching")
        run.switching = await measure_switches_or_skip(session, run)
        run.skipped.setdefault("recovery", "power cuts need the real box and a USB relay")
        run.box["healthz_after"] = await session.health()
        return run
    finally:
        if link is not None:
            await link.close()
        if box is not None:
            await asyncio.to_thread(box.stop)
        with contextlib.suppress(Exception):
            await rig.close()
        await server.stop()


async def measure_switches_or_skip(s: Session, run: RigRun) -> list[SwitchResult]:
    """:func:`measure_switching`, or nothing and the reason in :attr:`RigRun.skipped`."""
    try:
        return await measure_switching(s)
    except Exception as exc:  # the box refused (an older box without pedalboards): say so
        run.skipped["switching"] = f"{type(exc).__name__}: {exc}"
        return []
