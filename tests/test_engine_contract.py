"""The engine contract: one suite, run against every engine adapter present.

Each test gets a fresh JACK dummy server (48000 Hz, 128 frames), the virtual
rig (:mod:`tests.rig`) and an engine whose one track reads the rig's player
and feeds its recorder. Audio claims are checked on recorded samples.

Adding an adapter: put a factory in :data:`ENGINE_ADAPTERS`. A factory returns
a string instead when its adapter cannot run here; the tests are then skipped
with that reason.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from appliance.catalog import Catalog
from appliance.controls import Control, PluginType
from appliance.engine import Engine, EngineEvent, EventSink, SavedPlugin, TrackPorts
from appliance.engine.chain import Stage, chain_connections, connection_changes
from appliance.engine.jackserver import JackServer
from appliance.errors import EngineError, PluginLoadFailed
from tests import fakes
from tests.conftest import require_jalv_tools
from tests.rig import Rig, difference_db, gain_db, latency_frames, noise, rms_db, sine

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parent.parent
TRACK = "guitar"
AMP = "http://lv2plug.in/plugins/eg-amp"
TS9 = "http://guitarix.sourceforge.net/plugins/gxts9#ts9sim"
#: Tolerance of every gain claim, in dB.
TOLERANCE_DB = 0.1
#: The probe for gain claims: 0.1 s of 1 kHz at −12 dBFS.
PROBE = sine(1000.0, 4800, 48000, -12.0)
#: How long an engine event may take to arrive.
EVENT_TIMEOUT = 30.0

EngineFactory = Callable[[Sequence[TrackPorts], EventSink], Engine]


# -- the adapters ---------------------------------------------------------------------


def _jalv_factory(server: JackServer) -> EngineFactory | str:
    require_jalv_tools()
    from appliance.engine.jalv import JalvEngine

    def make(tracks: Sequence[TrackPorts], on_event: EventSink) -> Engine:
        return JalvEngine(tracks, server_name=server.name, on_event=on_event)

    return make


def _carla_factory(server: JackServer) -> EngineFactory | str:
    from appliance.config import CarlaConfig, JackConfig
    from appliance.engine import carla

    if (why := carla.unavailable(None)) is not None:
        return why  # conftest has skipped the test already; kept for direct use

    def make(tracks: Sequence[TrackPorts], on_event: EventSink) -> Engine:
        return carla.CarlaEngine(
            tracks,
            CarlaConfig(driver="jack"),
            JackConfig(server=server.name),
            on_event=on_event,
            client_name=f"carla-{secrets.token_hex(2)}",
        )

    return make


#: Engine name → factory on the test's JACK server (or the reason it cannot run).
ENGINE_ADAPTERS: dict[str, Callable[[JackServer], EngineFactory | str]] = {
    "jalv": _jalv_factory,
    "carla": _carla_factory,
}


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


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(params=sorted(ENGINE_ADAPTERS))
def engine_factory(request: pytest.FixtureRequest, jack_server: JackServer) -> EngineFactory:
    """A factory for the adapter under test, aimed at this test's JACK server."""
    made = ENGINE_ADAPTERS[request.param](jack_server)
    if isinstance(made, str):
        pytest.skip(f"engine {request.param}: {made}")
    return made


@pytest.fixture
def events() -> list[EngineEvent]:
    """Every event the engine under test reported, in order."""
    return []


@pytest_asyncio.fixture
async def engine(engine_factory: EngineFactory, rig: Rig, events: list[EngineEvent]) -> AsyncIterator[Engine]:
    """A started engine whose track plays from the rig's player into its recorder."""
    engine = engine_factory([TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], events.append)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


# -- helpers ----------------------------------------------------------------------------


def _near(target_db: float) -> Callable[[float], bool]:
    return lambda gain: abs(gain - target_db) <= TOLERANCE_DB


async def _wait_event(events: list[EngineEvent], kind: str, plugin_id: str) -> EngineEvent:
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


#: Per adapter: the internal call that changes the audio graph (JACK worker / Carla owner).
GRAPH_CHANGE = {"jalv": "_apply", "carla": "_rewire"}


def _fail_next_graph_change(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make the engine's next graph change raise once, as a JACK or Carla timeout would.

    Returns:
        A list that holds one entry once the failure has happened.
    """
    name = GRAPH_CHANGE[engine.name]
    real = getattr(engine, name)
    failed: list[str] = []

    def once(*args: Any) -> Any:
        if not failed:
            failed.append(name)
            raise EngineError(f"injected: {name} timed out")
        return real(*args)

    monkeypatch.setattr(engine, name, once)
    return failed


# -- the contract -----------------------------------------------------------------------


async def test_empty_chain_passes_the_dry_signal(engine: Engine, rig: Rig) -> None:
    """An empty chain passes the signal unchanged: 0.0 dB and 0 frames late."""
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    reference, recorded = await rig.play_and_record(noise(4800), extra_frames=512)
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
    assert abs(rms_db(moved[:, 0]) - rms_db(cut_then_drive)) > 3.0
    await engine.move_plugin("cut", 0)
    assert engine.chain(TRACK) == ["cut", "drive"]
    await rig.play_and_record(PROBE)
    _, back = await rig.play_and_record(PROBE)
    assert rms_db(back[:, 0]) == pytest.approx(rms_db(cut_then_drive), abs=0.5)


async def test_zero_latency_plugins_add_no_latency(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """Three zero-latency plugins in series add 0 frames of latency."""
    for position, plugin_id in enumerate(("a", "b", "c")):
        await _add_amp(engine, plugin_type, plugin_id, 0.0, position)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    reference, recorded = await rig.play_and_record(noise(4800), extra_frames=1024)
    assert latency_frames(recorded[:, 0], reference, max_lag=1024) == 0


async def test_bad_uri_fails_and_leaves_the_chain(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType]
) -> None:
    """A plugin that cannot load raises PluginLoadFailed and leaves the chain as it was."""
    await _add_amp(engine, plugin_type, "amp", -6.0, 0)
    with pytest.raises(PluginLoadFailed):
        await engine.add_plugin(TRACK, "bad", BAD, 0, {})
    assert engine.chain(TRACK) == ["amp"]
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


async def test_info_reports_the_server(engine: Engine) -> None:
    """info() reports the server's rate and buffer and running=True, then False after stop."""
    info = engine.info()
    assert info.name == engine.name
    assert info.running is True
    assert info.sample_rate == 48000
    assert info.buffer_size == 128
    assert info.dsp_load >= 0.0 and info.xruns >= 0
    await engine.stop()
    assert engine.info().running is False
    await engine.stop()  # twice is fine


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
        assert gain_db(recorded[:, 1], reference) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    finally:
        await engine.stop()
        await stereo.close()


async def test_killed_plugin_is_respawned_with_its_values(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], events: list[EngineEvent]
) -> None:
    """A plugin process killed with SIGKILL is reported, respawned with its values, rewired."""
    plugin_pid = getattr(engine, "plugin_pid", None)
    if plugin_pid is None:
        pytest.skip(f"engine {engine.name} has no per-plugin processes")
    await _add_amp(engine, plugin_type, "amp", 0.0, 0)
    await engine.set_parameters("amp", {"gain": -6.0})
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    pid = plugin_pid("amp")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    died = await _wait_event(events, "plugin-died", "amp")
    assert "SIGKILL" in died.message
    await _wait_event(events, "plugin-restored", "amp")
    assert plugin_pid("amp") not in (None, pid)
    assert engine.chain(TRACK) == ["amp"]
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


async def test_failed_removal_keeps_the_plugin_and_can_be_retried(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removal whose rewiring fails raises, keeps the plugin playing, and works when retried."""
    await _add_amp(engine, plugin_type, "amp", -6.0, 0)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    pid = getattr(engine, "plugin_pid", lambda _: None)("amp")
    _fail_next_graph_change(engine, monkeypatch)
    with pytest.raises(EngineError):
        await engine.remove_plugin("amp")
    assert engine.chain(TRACK) == ["amp"]
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    await engine.remove_plugin("amp")
    assert engine.chain(TRACK) == []
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    if pid is not None:  # and its process is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_failed_add_leaves_the_chain_and_can_be_retried(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An add whose wiring fails raises and leaves chain and sound as they were; a retry works."""
    await _add_amp(engine, plugin_type, "a", -6.0, 0)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    failed = _fail_next_graph_change(engine, monkeypatch)
    with pytest.raises(EngineError):
        await _add_amp(engine, plugin_type, "b", -3.0, 1)
    assert failed
    assert engine.chain(TRACK) == ["a"]
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    await _add_amp(engine, plugin_type, "b", -3.0, 1)  # the same id is free again
    assert engine.chain(TRACK) == ["a", "b"]
    assert await rig.gain_until(_near(-9.0), PROBE) == pytest.approx(-9.0, abs=TOLERANCE_DB)


async def test_failed_bypass_keeps_the_state_and_can_be_retried(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bypass whose rewiring fails keeps the plugin engaged; asking again does bypass it."""
    await _add_amp(engine, plugin_type, "amp", -6.0, 0)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    _fail_next_graph_change(engine, monkeypatch)
    try:
        await engine.set_bypass("amp", True)
    except EngineError:  # an adapter that rewires to bypass: the old state stays
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    await engine.set_bypass("amp", True)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    await engine.set_bypass("amp", False)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


async def test_failed_move_keeps_the_order_and_can_be_retried(
    engine: Engine, rig: Rig, plugin_type: Callable[[str], PluginType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A move whose rewiring fails raises and keeps the order (and sound); a retry moves it."""
    cut_then_drive = await _drive_and_cut(engine, rig, plugin_type, amp_first=True)
    _fail_next_graph_change(engine, monkeypatch)
    with pytest.raises(EngineError):
        await engine.move_plugin("cut", 1)
    assert engine.chain(TRACK) == ["cut", "drive"]
    await rig.play_and_record(PROBE)
    _, kept = await rig.play_and_record(PROBE)
    assert rms_db(kept[:, 0]) == pytest.approx(rms_db(cut_then_drive), abs=0.5)
    await engine.move_plugin("cut", 1)
    assert engine.chain(TRACK) == ["drive", "cut"]
    await rig.play_and_record(PROBE)
    _, moved = await rig.play_and_record(PROBE)
    assert abs(rms_db(moved[:, 0]) - rms_db(cut_then_drive)) > 3.0


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


# -- adapter-specific: jalv --------------------------------------------------------------


@pytest_asyncio.fixture
async def jalv(jack_server: JackServer, rig: Rig, events: list[EngineEvent]) -> AsyncIterator[Any]:
    """A started JalvEngine, for behaviour only the process-per-plugin engine has."""
    factory = _jalv_factory(jack_server)
    if isinstance(factory, str):
        pytest.skip(f"engine jalv: {factory}")
    engine = factory([TrackPorts(TRACK, rig.play_ports, rig.rec_ports)], events.append)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def test_jalv_cancelled_add_leaves_no_process(
    jalv: Any, plugin_type: Callable[[str], PluginType]
) -> None:
    """add_plugin cancelled while jalv starts stops that jalv; the id can be used again."""
    task = asyncio.ensure_future(_add_amp(jalv, plugin_type, "amp", 0.0, 0))
    async with asyncio.timeout(5.0):
        while (loading := jalv._loading.get("amp")) is None or loading.proc is None:
            await asyncio.sleep(0.001)
    proc = loading.proc
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert proc.returncode is not None
    assert jalv.chain(TRACK) == []
    await _add_amp(jalv, plugin_type, "amp", 0.0, 0)
    assert jalv.chain(TRACK) == ["amp"]


async def test_jalv_bypass_does_not_wait_for_a_plugin_start(
    jalv: Any, rig: Rig, plugin_type: Callable[[str], PluginType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A footswitch bypass during a slow plugin start is done at once, not after the start."""
    await _add_amp(jalv, plugin_type, "a", -6.0, 0)
    real_spawn = jalv._spawn

    async def slow_spawn(plugin: Any) -> None:
        await asyncio.sleep(2.0)
        await real_spawn(plugin)

    monkeypatch.setattr(jalv, "_spawn", slow_spawn)
    adding = asyncio.ensure_future(_add_amp(jalv, plugin_type, "b", -3.0, 1))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await jalv.set_bypass("a", True)
    assert loop.time() - started < 1.0
    await adding
    assert jalv.chain(TRACK) == ["a", "b"]
    assert await rig.gain_until(_near(-3.0), PROBE) == pytest.approx(-3.0, abs=TOLERANCE_DB)


async def test_jalv_stop_does_not_wait_for_a_stuck_jack_call(jalv: Any) -> None:
    """stop() ends even while a JACK call hangs on the worker thread."""
    from appliance.engine.jalv import JACK_CALL_TIMEOUT

    stuck = threading.Event()
    jalv._executor.submit(stuck.wait)
    try:
        async with asyncio.timeout(JACK_CALL_TIMEOUT + 5.0):
            await jalv.stop()
    finally:
        stuck.set()
    assert jalv.info().running is False
    async with asyncio.timeout(JACK_CALL_TIMEOUT):  # its JACK client closes once JACK answers
        while jalv._client is not None:
            await asyncio.sleep(0.01)


async def test_jalv_engine_runs_its_own_dummy_server() -> None:
    """JalvEngine with dummy_server starts a private JACK server and stops it again."""
    require_jalv_tools()
    from appliance.engine.jackserver import DummySettings
    from appliance.engine.jalv import JalvEngine

    jalv = JalvEngine(
        [TrackPorts(TRACK, ("system:capture_1",), ("system:playback_1",))],
        dummy_server=DummySettings(sample_rate=44100, period=256),
    )
    await jalv.start()
    try:
        info = jalv.info()
        assert (info.running, info.sample_rate, info.buffer_size) == (True, 44100, 256)
        assert jalv.server_name and info.details["server"] == jalv.server_name
    finally:
        await jalv.stop()
    assert jalv.info().running is False


async def test_jalv_rewire_survives_a_port_vanishing_midway(
    jalv: Any, rig: Rig, plugin_type: Callable[[str], PluginType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port whose client dies between listing and reading its connections does not fail the rewire."""
    import jack

    await _add_amp(jalv, plugin_type, "amp", -6.0, 0)
    client = jalv._client
    real = client.get_all_connections
    calls = {"n": 0}

    def vanishing(port: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise jack.JackError(f"Port '{port.name}' not available")
        return real(port)

    monkeypatch.setattr(client, "get_all_connections", vanishing)
    await jalv.set_bypass("amp", True)
    assert calls["n"] > 1
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)


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
