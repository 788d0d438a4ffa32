"""Board switches on the virtual rig, under every engine: no gap, no click, tails ringing on.

What a player would notice if these broke: a dropout or a click when the
footswitch changes the sound between or within songs, the old delay's
repeats cut dead when they should ring on (or ringing on when spillover is
off), or silence when the new board cannot be built.

A take during which the test's server had an xrun (every client may have
missed a cycle, the box's plugins included) fails its test
(:meth:`tests.rig.Rig.require_clean`); it is never taken again, and no gap
is excused. Times are read on the recording's frame clock, never the wall
clock. What xruns switching causes is measured in ``hil/bench_switch``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from appliance.core.controls import PluginType
from appliance.core.errors import PluginLoadFailed
from appliance.engine import Engine, EngineEvent, OwnPlugins, SavedPlugin, TrackPorts
from appliance.engine.faders import FADE_STEPS
from appliance.engine.jack.server import JackServer
from appliance.plugins.catalog import Catalog
from tests.conftest import RIG_PERIOD
from tests.engines import ENGINE_ADAPTERS, EngineFactory
from tests.rig import Rig, fade_heard_frames, gaps, rms_db, sine, window_gains

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
TRACK = "guitar"
AMP = "http://lv2plug.in/plugins/eg-amp"
DELAY = "urn:ardour:a-delay"
BAD = "http://example.org/plugins/no-such-plugin"
RATE = 48000
PERIOD = RIG_PERIOD
#: 2 s of 1 kHz at −12 dBFS.
TONE = sine(1000.0, 2 * RATE, RATE, -12.0)
#: A switch is asked for this far into its recording.
SWITCH_AT = int(0.8 * RATE)
#: 4 s of the same tone: room for a switch asked for 0.8 s in to build its board and fade.
SWITCH_TONE = sine(1000.0, 4 * RATE, RATE, -12.0)
#: The windows :func:`window_gains` reads levels in, frames (10 ms).
WINDOW = 480
#: After ``switch_board`` returns, its last fade step is heard within this many frames.
SETTLED = fade_heard_frames(RATE, PERIOD)
#: Tone bursts (30 ms every 400 ms): the gaps between them hear only a delay's repeats.
BURST_EVERY = RATE * 4 // 10
BURST = RATE * 3 // 100
DELAY_MS = 150.0
#: A burst's RMS level through the new board's −3 dB amp (a −12 dBFS sine is −15 dB RMS).
NOTE_DB = -18.0


def bursts(count: int = 8) -> np.ndarray:
    signal = np.zeros(count * BURST_EVERY, dtype=np.float32)
    tone = sine(1000.0, BURST, RATE, -12.0)
    for i in range(count):
        signal[i * BURST_EVERY : i * BURST_EVERY + BURST] = tone
    return signal


@pytest.fixture(scope="session")
def plugin_type() -> Callable[[str], PluginType]:
    catalog = Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)

    def find(uri: str) -> PluginType:
        found = catalog.lookup(uri)
        assert found is not None, f"{uri} is not installed (scripts/setup installs it)"
        return found

    return find


@pytest.fixture(params=sorted(ENGINE_ADAPTERS))
def engine_factory(request: pytest.FixtureRequest, jack_server: JackServer) -> EngineFactory:
    return ENGINE_ADAPTERS[str(request.param)](jack_server.name)


@pytest_asyncio.fixture
async def engine(engine_factory: EngineFactory, rig: Rig, own_plugins: OwnPlugins) -> AsyncIterator[Engine]:
    """A started engine with faders, its one track from the rig's player to its recorder."""
    events: list[EngineEvent] = []
    engine = engine_factory(
        [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)],
        events.append,
        own=OwnPlugins(fader=own_plugins.fader),  # faders only: what switching needs
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


def amp(plugin_type: Callable[[str], PluginType], plugin_id: str, gain: float) -> SavedPlugin:
    return SavedPlugin(TRACK, plugin_id, plugin_type(AMP), {"gain": gain})


def delay(plugin_type: Callable[[str], PluginType], plugin_id: str) -> SavedPlugin:
    values = {"time": DELAY_MS, "feedback": 70.0, "drywet": 50.0, "lpf": 20000.0, "sync": 0.0}
    return SavedPlugin(TRACK, plugin_id, plugin_type(DELAY), values)


async def switch(engine: Engine, plugins: list[SavedPlugin], spillover: float) -> list[str]:
    """Switch boards; what the engine's chain was when ``commit`` ran."""
    seen: list[str] = []
    await engine.switch_board(plugins, spillover, lambda: seen.extend(engine.chain(TRACK)))
    return seen


def largest_step(x: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(x.astype(np.float64)))))


async def test_switch_moves_the_sound_without_a_gap_or_a_click(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """From a 0 dB board to a −6 dB board while playing: never silent, never a step
    larger than the tone's own, every 10 ms window between the two levels, 0 dB until
    the switch is asked for and −6 dB once it is done (the recording's frame clock)."""
    await engine.switch_board([amp(plugin_type, "a", 0.0)], 0.0, lambda: None)
    new = [amp(plugin_type, "b", -6.0)]
    done: list[int] = []

    async def act() -> list[str]:
        seen = await switch(engine, new, 0.0)
        done.append(rig.position())
        return seen

    reference, recorded, outcome = await rig.record_during(SWITCH_TONE, act, lead_frames=SWITCH_AT)
    rig.require_clean("the switch's recording")
    assert outcome == ["b"], outcome
    out = recorded[:, 0]
    asked, settled = rig.last_action_frame, done[0] + SETTLED
    print(f"switch asked at frame {asked}, switch_board returned {done[0] - asked} frames later")
    assert settled + 4 * WINDOW <= len(out) - PERIOD, (
        f"the switch returned {done[0] - asked} frames after it was asked: not enough recording left "
        f"to hear the new board ({len(out)} frames)"
    )
    gains = window_gains(out, reference, WINDOW)
    before = gains[1 : asked // WINDOW]
    after = gains[math.ceil(settled / WINDOW) : -1]
    assert np.all(np.abs(before) <= 0.1), f"the old board did not play until the switch: {before}"
    assert np.all(np.abs(after + 6.0) <= 0.1), f"the new board did not play once the switch was done: {after}"
    assert np.all((gains[1:-1] > -6.1) & (gains[1:-1] < 0.1)), f"a window left the two levels: {gains}"
    silent = gaps(out[PERIOD:-PERIOD], offset=PERIOD)
    assert not silent, f"gaps (start, samples) {silent}, the switch asked at {asked}"
    # The two chains' faders are moved by different processes, which may take a step a
    # period apart: the sum may then pass the louder board by one fade step for a period.
    own = largest_step(reference) * (1 + 1 / FADE_STEPS)
    assert largest_step(out) <= own, f"a click: step {largest_step(out):.4f}, the tone's own {own:.4f}"
    assert engine.chain(TRACK) == ["b"]


async def test_spillover_lets_the_old_delay_ring_on(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """With spillover the delay's repeats go on after the switch to a clean board,
    while the new board plays the new notes at once."""
    echoes_after, notes_after = await _switch_during_bursts(engine, rig, plugin_type, spillover=3.0)
    assert min(echoes_after[:2]) > -60.0, f"the repeats stopped at the switch: {echoes_after}"
    assert notes_after == pytest.approx([NOTE_DB] * len(notes_after), abs=0.5), (
        f"the new board is not heard: {notes_after}"
    )


async def test_without_spillover_the_old_repeats_stop(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    echoes_after, notes_after = await _switch_during_bursts(engine, rig, plugin_type, spillover=0.0)
    assert max(echoes_after) < -90.0, f"the old repeats rang on: {echoes_after}"
    assert notes_after == pytest.approx([NOTE_DB] * len(notes_after), abs=0.5), (
        f"the new board is not heard: {notes_after}"
    )


async def _switch_during_bursts(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], spillover: float
) -> tuple[list[float], list[float]]:
    """Switch from the delay to a clean board between two bursts. For every burst that
    starts once the switch is done: the level (dBFS) of its first repeat slot and of the note."""
    signal = bursts()
    await engine.switch_board([delay(plugin_type, "d")], 0.0, lambda: None)
    switched: list[int] = []
    new = [amp(plugin_type, "b", -3.0)]

    async def act() -> None:
        await engine.switch_board(new, spillover, lambda: switched.append(rig.position()))

    _, recorded, outcome = await rig.record_during(signal, act, lead_frames=3 * BURST_EVERY + BURST)
    rig.require_clean("the bursts' recording")
    assert outcome is None, outcome
    out = recorded[:, 0]
    echo = int(DELAY_MS * RATE / 1000)
    before = [rms_db(out[i * BURST_EVERY + echo : i * BURST_EVERY + echo + BURST]) for i in (1, 2)]
    assert min(before) > -40.0, f"the delay board did not repeat before the switch: {before}"
    done = switched[0] + SETTLED + RATE // 50  # the fade is over (its last step heard), 20 ms after
    after = [i for i in range(len(signal) // BURST_EVERY) if i * BURST_EVERY >= done]
    assert len(after) >= 2, f"the switch took too long for the test (done at frame {done})"
    echoes = [rms_db(out[i * BURST_EVERY + echo : i * BURST_EVERY + echo + BURST]) for i in after]
    # The new board alone plays each note: its level, without the old board's repeats in it.
    notes = [rms_db(out[i * BURST_EVERY + 48 : i * BURST_EVERY + BURST - 48]) for i in after]
    return echoes, notes


async def test_a_switch_that_cannot_be_built_leaves_the_old_board_playing(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """A missing plugin on the new board: an error naming it, the old sound unchanged
    throughout, and the old board still answers: a knob on it is heard."""
    await engine.load_board([amp(plugin_type, "a1", -3.0)])
    # the old board as the player hears it (under Carla a loaded plugin fades in after load_board)
    assert await rig.gain_until(lambda g: abs(g + 3.0) <= 0.1, TONE[: RATE // 10]) == pytest.approx(-3.0, abs=0.1)
    broken = plugin_type(AMP).__class__(
        key="nothing", uri=BAD, name="Nothing", controls=(), audio_inputs=("in",), audio_outputs=("out",)
    )
    new = [amp(plugin_type, "b1", -6.0), SavedPlugin(TRACK, "b2", broken, {})]
    reference, recorded, outcome = await rig.record_during(TONE, lambda: switch(engine, new, 3.0))
    rig.require_clean("the failed switch's recording")
    assert isinstance(outcome, PluginLoadFailed), outcome
    assert outcome.plugin_id == "b2"
    gains = window_gains(recorded[:, 0], reference)
    assert np.all(np.abs(gains - -3.0) <= 0.1), f"the old board's sound changed: {gains}"
    assert engine.chain(TRACK) == ["a1"]
    await engine.set_parameters("a1", {"gain": 0.0})  # the old board still answers
    heard = await rig.gain_until(lambda g: abs(g) <= 0.1, TONE[: RATE // 10])
    assert heard == pytest.approx(0.0, abs=0.1), f"the old board did not take the new gain ({heard:.2f} dB)"


async def test_snapshot_values_are_heard_within_two_periods_without_a_gap(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """Values sent in one step (a snapshot recall) change the sound a period or two after
    the first is sent (the median of ten recalls; the frame clock of the recording, not the
    wall clock), and the sound never drops out."""
    await engine.load_board([amp(plugin_type, "a1", 0.0), amp(plugin_type, "a2", 0.0)])
    delays: list[int] = []
    gains = [-6.0, 0.0] * 5
    for gain in gains:
        sent: list[int] = []

        async def recall(gain: float = gain, sent: list[int] = sent) -> None:
            sent.append(rig.position())
            await engine.set_parameters("a1", {"gain": gain})
            await engine.set_parameters("a2", {"gain": gain})

        reference, recorded, outcome = await rig.record_during(TONE[: RATE // 2], recall, lead_frames=RATE // 5)
        rig.require_clean(f"the recall to {gain} dB")
        assert outcome is None, outcome
        out = recorded[:, 0].astype(np.float64)
        silent = gaps(out[PERIOD:-PERIOD], offset=PERIOD)
        assert not silent, f"gaps (start, samples) {silent}, the recall sent at {sent[0]}"
        expected = 10 ** (2 * gain / 20)
        ratio = np.abs(out) / np.maximum(np.abs(reference), 1e-9)
        changed = np.flatnonzero((np.abs(reference) > 0.1) & (np.abs(ratio - expected) < 0.01))
        heard = int(changed[changed >= sent[0] - 2 * PERIOD][0])
        delays.append(heard - sent[0])
    delays.sort()
    assert delays[len(delays) // 2] <= 2 * PERIOD, f"frames from sending to hearing: {delays}"
