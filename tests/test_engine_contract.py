"""The engine contract: one suite, run against every engine adapter present.

Each test gets a fresh JACK dummy server (48000 Hz, the suite's period), the virtual
rig (:mod:`tests.rig`) and an engine whose one track reads the rig's player
and feeds its recorder. Audio claims are checked on recorded samples; a
failure's "nothing changed" is checked on one recording that spans the whole
fault, window by window, so a dropout that recovers cannot pass.

Adding an adapter: put a factory in :data:`ENGINE_ADAPTERS`. Tests
parametrised with ``carla`` are skipped, with the reason, where Carla is
absent (conftest); the jalv engine is always tested.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jack
import numpy as np
import pytest
import pytest_asyncio

from appliance.core.controls import Control, PluginType
from appliance.core.errors import EngineError, PluginLoadFailed
from appliance.engine import Engine, EngineEvent, SavedPlugin, TrackPorts
from appliance.engine.chain import Stage, chain_connections, connection_changes
from appliance.engine.jack.server import DummySettings, JackServer
from appliance.plugins.catalog import Catalog
from tests import fakes
from tests.conftest import RIG_PERIOD, require_jalv_tools
from tests.engines import ENGINE_ADAPTERS, EngineFactory, GraphFault
from tests.rig import Rig, difference_db, gain_db, latency_frames, noise, rms_db, sine, window_gains

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
TRACK = "guitar"
AMP = "http://lv2plug.in/plugins/eg-amp"
TS9 = "http://guitarix.sourceforge.net/plugins/gxts9#ts9sim"
COMP = "urn:ardour:a-comp"
#: Tolerance of every gain claim, in dB.
TOLERANCE_DB = 0.1
#: The probe for gain claims: 0.1 s of 1 kHz at −12 dBFS.
PROBE = sine(1000.0, 4800, 48000, -12.0)
#: The probe a fault is recorded over: 1 s of 1 kHz at −12 dBFS.
LONG_PROBE = sine(1000.0, 48000, 48000, -12.0)
#: How long an engine event may take to arrive.
EVENT_TIMEOUT = 30.0
#: A plugin start this slow (seconds of pre-roll) outlasts anything a test does meanwhile.
SLOW_START = 3.0


# -- plugin types -----------------------------------------------------------------------


#: A plugin that is not installed anywhere.
BAD = PluginType(
    key="nothing",
    uri="http://example.org/plugins/no-such-plugin",
    name="Nothing",
    controls=(),
    audio_inputs=("in",),
    audio_outputs=("out",),
)


@pytest.fixture(scope="session")
def plugin_type() -> Callable[[str], PluginType]:
    """URI → PluginType, read from the plugins' own LV2 data by the catalog."""
    catalog = Catalog.load(ROOT / "config" / "plugins.yaml", scan=False)

    def find(uri: str) -> PluginType:
        found = catalog.lookup(uri)
        assert found is not None, f"{uri} is not installed (scripts/setup installs it)"
        return found

    return find


@pytest.fixture
def rerouted(plugin_type: Callable[[str], PluginType]) -> PluginType:
    """a-comp told it has no enable control: 2 in (one a side-chain), 1 out, so no engine
    can bypass it inside its host; every engine routes the chain around it."""
    return dataclasses.replace(plugin_type(COMP), enable_symbol=None)


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(params=sorted(ENGINE_ADAPTERS))
def engine_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine_factory(engine_name: str, jack_server: JackServer) -> EngineFactory:
    """A factory for the adapter under test, aimed at this test's JACK server."""
    return ENGINE_ADAPTERS[engine_name](jack_server.name)


@pytest.fixture
def events() -> list[EngineEvent]:
    """Every event the engine under test reported, in order."""
    return []


@pytest.fixture
def fault() -> GraphFault:
    return GraphFault()


@pytest_asyncio.fixture
async def engine(
    engine_factory: EngineFactory, rig: Rig, events: list[EngineEvent], fault: GraphFault
) -> AsyncIterator[Engine]:
    """A started engine whose track plays from the rig's player into its recorder."""
    engine = engine_factory([TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], events.append, graph_fault=fault)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


# -- helpers ----------------------------------------------------------------------------


def _near(target_db: float) -> Callable[[float], bool]:
    return lambda gain: abs(gain - target_db) <= TOLERANCE_DB


async def _wait_event(events: list[EngineEvent], kind: str, plugin_id: str | None) -> EngineEvent:
    try:
        async with asyncio.timeout(EVENT_TIMEOUT):
            while True:
                for event in events:
                    if event.kind == kind and event.plugin_id == plugin_id:
                        return event
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"no {kind} event for {plugin_id}; events: {events}") from None


async def _add_amp(
    engine: Engine, plugin_type: Callable[[str], PluginType], plugin_id: str, gain: float, position: int
) -> None:
    await engine.add_plugin(TRACK, plugin_id, plugin_type(AMP), position, {"gain": gain})


async def _steady_through(rig: Rig, action: Callable[[], Any]) -> tuple[np.ndarray, object]:
    """Record 1 s of the probe with ``action`` run in its middle; each 10 ms window's gain."""
    reference, recorded, outcome = await rig.record_during(LONG_PROBE, action)
    rig.require_clean("the recording around the change")
    return window_gains(recorded[:, 0], reference), outcome


def _steady(rig: Rig, gains: np.ndarray, target_db: float, tolerance: float = TOLERANCE_DB) -> str | None:
    """None when every window reads ``target_db``; else what went wrong, xruns of the server included."""
    if bool(np.all(np.abs(gains - target_db) <= tolerance)):
        return None
    worst = float(gains[int(np.argmax(np.abs(gains - target_db)))])
    why = f"a window read {worst:.1f} dB against {target_db:.1f}"
    return why


# -- the contract -----------------------------------------------------------------------


async def test_empty_chain_passes_the_dry_signal(engine: Engine, rig: Rig) -> None:
    """An empty chain passes the signal unchanged: 0.0 dB and 0 frames late."""
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    reference, recorded = await rig.play_and_record(noise(4800), extra_frames=512)
    rig.require_clean("a latency probe")
    assert latency_frames(recorded[:, 0], reference, max_lag=512) == 0
    assert gain_db(recorded[:, 0], reference) == pytest.approx(0.0, abs=TOLERANCE_DB)


async def test_amp_applies_its_gain(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """eg-amp added at −6 dB makes the track read −6.0 dB."""
    await _add_amp(engine, plugin_type, "amp", -6.0, 0)
    assert engine.chain(TRACK) == ["amp"]
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


async def test_set_parameters_reaches_the_plugin(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """A parameter change lands in the running plugin (0 dB, then −12 dB)."""
    await _add_amp(engine, plugin_type, "amp", 0.0, 0)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    await engine.set_parameters("amp", {"gain": -12.0})
    assert await rig.gain_until(_near(-12.0), PROBE) == pytest.approx(-12.0, abs=TOLERANCE_DB)


async def test_bypass_passes_the_dry_signal(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """Bypassing the −6 dB amp gives back the dry signal (0 dB, not silence), and back."""
    await _add_amp(engine, plugin_type, "amp", -6.0, 0)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    await engine.set_bypass("amp", True)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    assert engine.chain(TRACK) == ["amp"]
    await engine.set_bypass("amp", False)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


def _all_connections(server: str) -> set[tuple[str, str]]:
    """Every connection in the JACK graph now, source → destination."""
    client = jack.Client(f"look-{os.getpid()}-{threading.get_ident() % 10000}", servername=server, no_start_server=True)
    try:
        return {
            (port.name, other.name)
            for port in client.get_ports(is_output=True)
            for other in client.get_all_connections(port)
        }
    finally:
        client.close()


async def test_a_plugin_with_its_own_enable_control_is_bypassed_by_it(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], jack_server: JackServer
) -> None:
    """A footswitch on a plugin with an enable control (TS9's BYPASS) flips that control inside
    its host: the track is dry, then driven again, and not one JACK connection changed (a
    bypass that reroutes waits for JACK's graph: 30 ms p99 was measured so under jalv)."""
    await engine.add_plugin(TRACK, "drive", plugin_type(TS9), 0, {"fslider2_": 1.0, "fslider0_": 4.0})
    assert engine.bypass_mode("drive") == "hosted"  # type: ignore[attr-defined]
    assert await rig.gain_until(lambda g: g > 3.0, PROBE) > 3.0
    wired = await asyncio.to_thread(_all_connections, jack_server.name)
    await engine.set_bypass("drive", True)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    await engine.set_bypass("drive", False)
    assert await rig.gain_until(lambda g: g > 3.0, PROBE) > 3.0
    assert await asyncio.to_thread(_all_connections, jack_server.name) == wired


async def test_added_bypassed_plugin_passes_dry(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """A plugin added already bypassed leaves the track dry."""
    await engine.add_plugin(TRACK, "amp", plugin_type(AMP), 0, {"gain": -6.0}, bypass=True)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)


async def test_removal_passes_the_dry_signal(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """Removing the −6 dB amp gives back the dry signal."""
    await _add_amp(engine, plugin_type, "amp", -6.0, 0)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    await engine.remove_plugin("amp")
    assert engine.chain(TRACK) == []
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)


async def test_amps_in_series_add_up(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """Two amps in series (−6 dB, −3 dB) read −9 dB."""
    await _add_amp(engine, plugin_type, "a", -6.0, 0)
    await _add_amp(engine, plugin_type, "b", -3.0, 1)
    assert engine.chain(TRACK) == ["a", "b"]
    assert await rig.gain_until(_near(-9.0), PROBE) == pytest.approx(-9.0, abs=TOLERANCE_DB)


async def test_add_position_sets_the_order(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """add_plugin inserts at the given position (start, end, middle)."""
    await _add_amp(engine, plugin_type, "b", 0.0, 0)
    await _add_amp(engine, plugin_type, "a", 0.0, 0)
    await _add_amp(engine, plugin_type, "c", 0.0, 2)
    await _add_amp(engine, plugin_type, "m", -3.0, 1)
    assert engine.chain(TRACK) == ["a", "m", "b", "c"]
    assert await rig.gain_until(_near(-3.0), PROBE) == pytest.approx(-3.0, abs=TOLERANCE_DB)


async def _drive_and_cut(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], amp_first: bool
) -> np.ndarray:
    ts9 = {"fslider2_": 1.0, "fslider0_": 0.0}
    await engine.add_plugin(TRACK, "drive", plugin_type(TS9), 0, ts9)
    await _add_amp(engine, plugin_type, "cut", -20.0, 0 if amp_first else 1)
    assert engine.chain(TRACK) == (["cut", "drive"] if amp_first else ["drive", "cut"])
    await rig.play_and_record(PROBE)  # settle the overdrive's filters
    _, recorded = await rig.play_and_record(PROBE)
    rig.require_clean()
    return recorded[:, 0]


@pytest.mark.parametrize("amp_first", [True, False], ids=["cut-then-drive", "drive-then-cut"])
async def test_order_changes_the_sound(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], amp_first: bool
) -> None:
    """−20 dB before an overdrive differs clearly from −20 dB after it."""
    first = await _drive_and_cut(engine, rig, plugin_type, amp_first)
    await engine.remove_plugin("cut")
    await engine.remove_plugin("drive")
    second = await _drive_and_cut(engine, rig, plugin_type, not amp_first)
    assert rms_db(first) > -60.0 and rms_db(second) > -60.0  # neither is silence
    assert difference_db(first, second) > -6.0  # clearly different waveforms
    assert abs(rms_db(first) - rms_db(second)) > 3.0  # and levels


async def test_move_plugin_reorders(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """move_plugin reorders the chain: chain() and the recorded sound follow."""
    cut_then_drive = await _drive_and_cut(engine, rig, plugin_type, amp_first=True)
    await engine.move_plugin("cut", 1)
    assert engine.chain(TRACK) == ["drive", "cut"]
    await rig.play_and_record(PROBE)
    _, moved = await rig.play_and_record(PROBE)
    rig.require_clean()
    assert abs(rms_db(moved[:, 0]) - rms_db(cut_then_drive)) > 3.0
    await engine.move_plugin("cut", 0)
    assert engine.chain(TRACK) == ["cut", "drive"]
    await rig.play_and_record(PROBE)
    _, back = await rig.play_and_record(PROBE)
    rig.require_clean()
    assert rms_db(back[:, 0]) == pytest.approx(rms_db(cut_then_drive), abs=0.5)


async def test_zero_latency_plugins_add_no_latency(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """Three zero-latency plugins in series add 0 frames of latency."""
    for position, plugin_id in enumerate(("a", "b", "c")):
        await _add_amp(engine, plugin_type, plugin_id, 0.0, position)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    reference, recorded = await rig.play_and_record(noise(4800), extra_frames=1024)
    rig.require_clean("a latency probe")
    assert latency_frames(recorded[:, 0], reference, max_lag=1024) == 0


async def test_bad_uri_fails_without_a_sound_change(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """A plugin that cannot load raises PluginLoadFailed; the track reads −6 dB all through it."""
    await _add_amp(engine, plugin_type, "amp", -6.0, 0)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    gains, outcome = await _steady_through(rig, lambda: engine.add_plugin(TRACK, "bad", BAD, 0, {}))
    assert isinstance(outcome, PluginLoadFailed)
    assert engine.chain(TRACK) == ["amp"]
    assert (why := _steady(rig, gains, -6.0)) is None, f"the sound changed during the failed add: {why}"


async def test_info_reports_the_server(engine: Engine, rig: Rig) -> None:
    """info() gives the server's rate and buffer, a DSP load, the server's xruns; not running once stopped."""
    info = engine.info()
    assert (info.name, info.running, info.sample_rate, info.buffer_size) == (engine.name, True, 48000, RIG_PERIOD)
    async with asyncio.timeout(EVENT_TIMEOUT):
        while engine.info().dsp_load <= 0.0:  # JACK's load estimate needs a few cycles
            await asyncio.sleep(0.05)
    before = engine.info().xruns
    rig.stall(0.05)  # one 50 ms cycle: an xrun for every client of the server
    async with asyncio.timeout(EVENT_TIMEOUT):
        while engine.info().xruns <= before:
            await asyncio.sleep(0.01)
    await engine.stop()
    assert engine.info().running is False
    await engine.stop()  # twice is fine


async def test_a_stalled_jack_graph_makes_the_engine_unhealthy(engine: Engine, jack_server: JackServer) -> None:
    """A JACK server that runs no cycle (here: stopped with SIGSTOP) is reported: not running, graph
    stalled (so /healthz says 503 and the watchdog is not petted); it recovers when JACK does."""
    assert engine.info().running
    pid = jack_server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        async with asyncio.timeout(EVENT_TIMEOUT):
            while engine.info().running:
                await asyncio.sleep(0.1)
        assert engine.info().details.get("graph") == "stalled"
    finally:
        os.kill(pid, signal.SIGCONT)
    async with asyncio.timeout(EVENT_TIMEOUT):
        while not engine.info().running:
            await asyncio.sleep(0.1)
    assert "graph" not in engine.info().details


async def test_endpoints_appearing_later_get_wired(
    engine_factory: EngineFactory, jack_server: JackServer
) -> None:
    """A track whose endpoint ports appear after start gets connected when they do."""
    late = Rig(jack_server.name)
    engine = engine_factory([TrackPorts(TRACK, late.play_ports, late.rec_ports)], lambda event: None)
    await engine.start()
    try:
        await late.open()
        try:
            assert await late.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
        finally:
            await late.close()
    finally:
        await engine.stop()


async def test_mono_plugin_in_a_stereo_track_feeds_both_sides(
    engine_factory: EngineFactory, jack_server: JackServer, plugin_type: Callable[[str], PluginType]
) -> None:
    """A mono plugin in a two-channel track feeds both outputs (wire_pairs widths)."""
    stereo = Rig(jack_server.name, channels=2)
    await stereo.open()
    engine = engine_factory([TrackPorts(TRACK, stereo.play_ports, stereo.rec_ports)], lambda event: None)
    await engine.start()
    try:
        await _add_amp(engine, plugin_type, "amp", -6.0, 0)
        assert await stereo.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        reference, recorded = await stereo.play_and_record(PROBE)
        stereo.require_clean()
        assert gain_db(recorded[:, 1], reference) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    finally:
        await engine.stop()
        await stereo.close()


async def test_two_tracks_keep_separate_chains(
    engine_factory: EngineFactory, jack_server: JackServer, plugin_type: Callable[[str], PluginType]
) -> None:
    """Two tracks: a plugin on one changes only that one."""
    left, right = Rig(jack_server.name), Rig(jack_server.name)
    await left.open()
    await right.open()
    engine = engine_factory(
        [TrackPorts("l", left.play_ports, left.rec_ports), TrackPorts("r", right.play_ports, right.rec_ports)],
        lambda event: None,
    )
    try:
        await engine.start()
        await engine.add_plugin("r", "amp", plugin_type(AMP), 0, {"gain": -6.0})
        assert await right.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        assert await left.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    finally:
        await engine.stop()
        await left.close()
        await right.close()


def _crash(engine: Engine, plugin_id: str) -> tuple[int, str, str]:
    """SIGKILL whatever hosts the plugin; its pid and the died/restored events to expect."""
    if engine.name == "jalv":
        pid = engine.plugin_pid(plugin_id)  # type: ignore[attr-defined]
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return pid, "plugin-died", "plugin-restored"
    pid = engine.host_pid  # type: ignore[attr-defined]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid, "engine-died", "engine-restored"


async def test_a_crashed_host_comes_back_with_values_set_while_it_was_down(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], events: list[EngineEvent]
) -> None:
    """SIGKILL to the plugin's host: reported, the track passes dry meanwhile, and the plugin
    comes back, rewired, with the value a knob set while it was down."""
    await _add_amp(engine, plugin_type, "amp", -6.0, 0)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    pid, died_kind, restored_kind = _crash(engine, "amp")
    died = await _wait_event(events, died_kind, "amp" if engine.name == "jalv" else None)
    assert "SIGKILL" in died.message
    await engine.set_parameters("amp", {"gain": -12.0})  # the knob does not wait for the host
    await _wait_event(events, restored_kind, "amp" if engine.name == "jalv" else None)
    assert engine.chain(TRACK) == ["amp"]
    assert await rig.gain_until(_near(-12.0), PROBE) == pytest.approx(-12.0, abs=TOLERANCE_DB)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_failed_removal_changes_nothing_and_can_be_retried(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], fault: GraphFault
) -> None:
    """A removal whose rewiring fails raises; the track reads −6 dB all through; a retry removes it."""
    await _add_amp(engine, plugin_type, "amp", -6.0, 0)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    fault.arm()
    gains, outcome = await _steady_through(rig, lambda: engine.remove_plugin("amp"))
    assert fault.fired == 1 and isinstance(outcome, EngineError)
    assert engine.chain(TRACK) == ["amp"]
    assert (why := _steady(rig, gains, -6.0)) is None, f"the sound changed during the failed removal: {why}"
    await engine.remove_plugin("amp")
    assert engine.chain(TRACK) == []
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)


async def test_failed_add_changes_nothing_and_can_be_retried(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], fault: GraphFault
) -> None:
    """An add whose wiring fails raises; the track reads −6 dB all through; a retry with the same id works."""
    await _add_amp(engine, plugin_type, "a", -6.0, 0)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    fault.arm()
    gains, outcome = await _steady_through(rig, lambda: _add_amp(engine, plugin_type, "b", -3.0, 1))
    assert fault.fired == 1 and isinstance(outcome, EngineError)
    assert engine.chain(TRACK) == ["a"]
    assert (why := _steady(rig, gains, -6.0)) is None, f"the sound changed during the failed add: {why}"
    await _add_amp(engine, plugin_type, "b", -3.0, 1)
    assert engine.chain(TRACK) == ["a", "b"]
    assert await rig.gain_until(_near(-9.0), PROBE) == pytest.approx(-9.0, abs=TOLERANCE_DB)


async def test_failed_rerouting_bypass_changes_nothing_and_can_be_retried(
    engine: Engine, rig: Rig, rerouted: PluginType, fault: GraphFault
) -> None:
    """A bypass that must rewire, and whose rewiring fails, raises; the sound stays all through."""
    await engine.add_plugin(TRACK, "comp", rerouted, 0, {"mak": 10.0})
    assert engine.bypass_mode("comp") != "hosted"  # type: ignore[attr-defined]
    engaged = await rig.gain_until(lambda g: g > 3.0, PROBE)
    assert engaged > 3.0
    fault.arm()
    gains, outcome = await _steady_through(rig, lambda: engine.set_bypass("comp", True))
    assert fault.fired == 1 and isinstance(outcome, EngineError)
    assert np.median(gains) > 3.0
    assert (why := _steady(rig, gains, float(np.median(gains)), 0.5)) is None, why
    await engine.set_bypass("comp", True)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    await engine.set_bypass("comp", False)
    assert await rig.gain_until(lambda g: g > 3.0, PROBE) > 3.0


async def test_failed_move_changes_nothing_and_can_be_retried(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], fault: GraphFault
) -> None:
    """A move whose rewiring fails raises and keeps the order; the sound stays all through; a retry moves it."""
    cut_then_drive = await _drive_and_cut(engine, rig, plugin_type, amp_first=True)
    before = rms_db(cut_then_drive) - rms_db(PROBE)
    fault.arm()
    gains, outcome = await _steady_through(rig, lambda: engine.move_plugin("cut", 1))
    assert fault.fired == 1 and isinstance(outcome, EngineError)
    assert engine.chain(TRACK) == ["cut", "drive"]
    assert (why := _steady(rig, gains, before, 0.5)) is None, why
    await engine.move_plugin("cut", 1)
    assert engine.chain(TRACK) == ["drive", "cut"]
    await rig.play_and_record(PROBE)
    _, moved = await rig.play_and_record(PROBE)
    rig.require_clean()
    assert abs(rms_db(moved[:, 0]) - rms_db(cut_then_drive)) > 3.0


async def test_knobs_and_bypass_do_not_wait_for_a_plugin_start(
    engine_factory: EngineFactory, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """While a plugin takes seconds to start, another plugin's bypass and values act at once,
    and the starting plugin's own values and bypass are kept and applied when it joins."""
    engine = engine_factory([TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], lambda e: None)
    await engine.start()
    try:
        await _add_amp(engine, plugin_type, "a", -6.0, 0)  # joins after the slow pre-roll
        engine.preroll = SLOW_START  # type: ignore[attr-defined]
        adding = asyncio.ensure_future(_add_amp(engine, plugin_type, "b", -3.0, 1))
        await asyncio.sleep(0)
        await engine.set_parameters("a", {"gain": -12.0})
        await engine.set_bypass("b", True)  # the starting plugin: kept for when it joins
        await engine.set_parameters("b", {"gain": -20.0})
        assert await rig.gain_until(_near(-12.0), PROBE) == pytest.approx(-12.0, abs=TOLERANCE_DB)
        await engine.set_bypass("a", True)
        assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
        assert not adding.done(), "the plugin start was not slow enough to show anything"
        await adding
        assert engine.chain(TRACK) == ["a", "b"]
        assert await rig.measure_gain(PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)  # both bypassed
        await engine.set_bypass("b", False)
        assert await rig.gain_until(_near(-20.0), PROBE) == pytest.approx(-20.0, abs=TOLERANCE_DB)
    finally:
        await engine.stop()


async def test_cancelled_add_leaves_nothing_running(
    engine: Engine, plugin_type: Callable[[str], PluginType]
) -> None:
    """add_plugin cancelled while the plugin starts stops what was started; the id is free again."""
    engine.preroll = SLOW_START  # type: ignore[attr-defined]
    task = asyncio.ensure_future(_add_amp(engine, plugin_type, "amp", 0.0, 0))
    async with asyncio.timeout(EVENT_TIMEOUT):
        while engine.info().details.get("starting", 0) == 0:
            await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.chain(TRACK) == []
    assert engine.info().details.get("starting") == 0
    engine.preroll = 0.0  # type: ignore[attr-defined]
    await _add_amp(engine, plugin_type, "amp", 0.0, 0)
    assert engine.chain(TRACK) == ["amp"]


async def test_stop_does_not_wait_for_a_stuck_jack(
    engine_factory: EngineFactory, rig: Rig, fault: GraphFault, plugin_type: Callable[[str], PluginType]
) -> None:
    """stop() ends even while a JACK call hangs on the wiring's worker thread."""
    engine = engine_factory(
        [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], lambda e: None, graph_fault=fault, jack_timeout=0.5
    )
    await engine.start()
    await _add_amp(engine, plugin_type, "amp", -6.0, 0)
    fault.block = threading.Event()
    try:
        with pytest.raises(EngineError):
            await engine.remove_plugin("amp")  # its rewire hangs, and times out
        await engine.stop()
        assert engine.info().running is False
    finally:
        fault.block.set()


async def test_runs_its_own_dummy_server(engine_name: str) -> None:
    """Told to, the engine starts a private JACK server at that rate/period and stops it again."""
    require_jalv_tools()
    factory = ENGINE_ADAPTERS[engine_name](None)
    engine = factory(
        [TrackPorts(TRACK, ("system:capture_1",), ("system:playback_1",))],
        lambda event: None,
        dummy_server=DummySettings(sample_rate=44100, period=256),
    )
    await engine.start()
    try:
        info = engine.info()
        assert (info.running, info.sample_rate, info.buffer_size) == (True, 44100, 256)
        server = str(info.details["server"])
    finally:
        await engine.stop()
    assert engine.info().running is False
    probe = await asyncio.create_subprocess_exec(
        "jack_lsp", env={**os.environ, "JACK_DEFAULT_SERVER": server, "JACK_NO_START_SERVER": "1"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    assert await probe.wait() != 0, f"the private server {server} is still answering"


async def test_load_board_loads_in_order_and_reports_failures(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """load_board adds a saved board in order; a plugin that fails is reported, the rest play."""
    amp = plugin_type(AMP)
    failed = await engine.load_board(
        [
            SavedPlugin(TRACK, "a", amp, {"gain": -6.0}),
            SavedPlugin(TRACK, "bad", BAD, {}),
            SavedPlugin(TRACK, "b", amp, {"gain": -3.0}, bypass=True),
            SavedPlugin(TRACK, "c", amp, {"gain": -3.0}),
        ]
    )
    assert set(failed) == {"bad"} and isinstance(failed["bad"], PluginLoadFailed)
    assert engine.chain(TRACK) == ["a", "b", "c"]
    assert await rig.gain_until(_near(-9.0), PROBE) == pytest.approx(-9.0, abs=TOLERANCE_DB)


# -- the chain walk both adapters share (pure) ----------------------------------------


async def test_chain_walk_skips_stages_out_of_the_path_and_taps_sinks() -> None:
    """Bypassed stages are jumped over, a sink only taps, the last stage feeds the outputs."""
    stages = [
        Stage(("a:in",), ("a:out",)),
        Stage(("b:in",), ("b:out",), in_path=False),
        Stage(("meter:in",), ()),
        Stage(("c:in",), ("c:out",)),
    ]
    assert chain_connections(("in",), stages, ("out",)) == {
        ("in", "a:in"),
        ("a:out", "meter:in"),
        ("a:out", "c:in"),
        ("c:out", "out"),
    }
    assert chain_connections(("in",), [], ("out",)) == {("in", "out")}


async def test_chain_walk_fans_mono_out_and_diffs_in_order() -> None:
    """A mono stage feeds both channels; changes list connects, then disconnects, sorted."""
    wanted = chain_connections([(0, 1), (0, 2)], [Stage([(5, 0)], [(5, 1)])], [(9, 1), (9, 2)])
    assert wanted == {((0, 1), (5, 0)), ((5, 1), (9, 1)), ((5, 1), (9, 2))}
    current = {((0, 1), (9, 1)), ((5, 1), (9, 1))}
    assert connection_changes(current, wanted) == (
        [((0, 1), (5, 0)), ((5, 1), (9, 2))],
        [((0, 1), (9, 1))],
    )


async def test_enable_value_follows_the_control_and_inversion() -> None:
    """The enable control's maximum means on (minimum when inverted); no control: None."""
    ts9 = fakes.TS9
    assert (ts9.enable_value(bypass=False), ts9.enable_value(bypass=True)) == (1.0, 0.0)
    inverted = PluginType(
        key="x",
        uri="urn:x",
        name="X",
        controls=(Control("bypass", "Bypass", 0.0, 2.0, 0.0, kind="toggle"),),
        enable_symbol="bypass",
        enable_inverted=True,
    )
    assert (inverted.enable_value(bypass=False), inverted.enable_value(bypass=True)) == (0.0, 2.0)
    assert fakes.AMP.enable_value(bypass=True) is None
