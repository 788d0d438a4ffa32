"""Carla-only behaviour: finding Carla, bypass modes, engine events, limits.

The shared behaviour (chains, gain, latency, order) is in the engine contract
suite; here is what only the Carla adapter has. Every test here needs Carla
(the module is marked ``carla``: conftest skips it, with the reason, where
Carla is absent); finding Carla is tested in ``test_carla_install.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from appliance.config import CarlaConfig, DummyServer, JackConfig
from appliance.controls import Control, PluginType
from appliance.engine import EngineEvent, TrackPorts
from appliance.engine import carla as carla_module
from appliance.engine.carla import CarlaEngine
from appliance.engine.jackserver import JackServer
from appliance.errors import EngineError
from tests.fakes import AMP, TS9
from tests.rig import Rig, sine

TRACK = "guitar"
#: ACE compressor with its side-chain input: 2 in, 1 out, so Carla has no dry/wet for it.
COMP_CONTROLS = (
    Control("mak", "Makeup", 0.0, 30.0, 0.0, "dB"),
    Control("thr", "Threshold", -60.0, 0.0, 0.0, "dB"),
    Control("enable", "Enable", 0.0, 1.0, 1.0, kind="toggle"),
)
COMP_NO_ENABLE = PluginType(
    key="comp",
    uri="urn:ardour:a-comp",
    name="ACE Compressor",
    controls=COMP_CONTROLS,
    audio_inputs=("lv2_audio_in_1",),
    audio_outputs=("lv2_audio_out_1",),
)
PROBE = sine(1000.0, 4800, 48000, -12.0)
TOLERANCE_DB = 0.1
EVENT_TIMEOUT = 5.0

pytestmark = [pytest.mark.carla, pytest.mark.timeout(90)]


def _near(target: float) -> Callable[[float], bool]:
    return lambda gain: abs(gain - target) <= TOLERANCE_DB


# -- a running Carla ------------------------------------------------------------------


def _engine(server: str, rig: Rig, events: list[EngineEvent]) -> CarlaEngine:
    return CarlaEngine(
        [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)],
        CarlaConfig(driver="jack"),
        JackConfig(server=server),
        on_event=events.append,
        client_name="carla-test",
    )


@pytest.fixture
def events() -> list[EngineEvent]:
    return []


@pytest_asyncio.fixture
async def carla(jack_server: JackServer, rig: Rig, events: list[EngineEvent]) -> AsyncIterator[CarlaEngine]:
    """A started CarlaEngine whose one track plays from the rig into its recorder."""
    engine = _engine(jack_server.name, rig, events)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def _wait_for(events: list[EngineEvent], kind: str) -> EngineEvent:
    async with asyncio.timeout(EVENT_TIMEOUT):
        while True:
            for event in events:
                if event.kind == kind:
                    return event
            await asyncio.sleep(0.01)


async def test_bypass_uses_the_enable_port(carla: CarlaEngine, rig: Rig) -> None:
    """TS9 (BYPASS port) is bypassed by its own control: the value flips, the track goes dry."""
    await carla.add_plugin(TRACK, "drive", TS9, 0, {"fslider2_": 1.0, "fslider0_": 4.0})
    assert carla.bypass_mode("drive") == "enable-port"
    driven = await rig.gain_until(lambda g: g > 3.0, PROBE)
    assert driven > 3.0

    def bypass_value(host: object) -> float:
        plugin = carla._plugins["drive"]
        index = plugin.params["BYPASS"]
        return float(host.get_current_parameter_value(carla.carla_id("drive"), index))  # type: ignore[attr-defined]

    await carla.set_bypass("drive", True)
    assert await carla.run_on_owner(bypass_value) == 0.0  # Guitarix: 1 = active
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    await carla.set_bypass("drive", False)
    assert await carla.run_on_owner(bypass_value) == 1.0
    assert await rig.gain_until(lambda g: g > 3.0, PROBE) > 3.0


async def test_bypass_uses_drywet_without_an_enable_port(carla: CarlaEngine, rig: Rig) -> None:
    """eg-amp (no enable port, 1 in 1 out) is bypassed with dry/wet 0, wiring untouched."""
    await carla.add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
    assert carla.bypass_mode("amp") == "drywet"
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    wired = dict(carla._graph.connections)
    await carla.set_bypass("amp", True)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    assert carla._graph.connections == wired


async def test_bypass_reroutes_without_enable_port_or_drywet(carla: CarlaEngine, rig: Rig) -> None:
    """a-comp told it has no enable port (2 in, 1 out: no dry/wet) is bypassed by rewiring."""
    await carla.add_plugin(TRACK, "comp", COMP_NO_ENABLE, 0, {"mak": 10.0})
    assert carla.bypass_mode("comp") == "reroute"
    assert await rig.gain_until(lambda g: g > 3.0, PROBE) > 3.0
    await carla.set_bypass("comp", True)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    await carla.set_bypass("comp", False)
    assert await rig.gain_until(lambda g: g > 3.0, PROBE) > 3.0


async def test_parameter_changed_inside_reaches_on_event(
    carla: CarlaEngine, events: list[EngineEvent]
) -> None:
    """A control Carla changes itself (reset to defaults) arrives as a parameter event by symbol.

    The first plugin is removed first, so the second one's Carla id has
    shifted from 1 to 0: the event must still name it.
    """
    await carla.add_plugin(TRACK, "first", AMP, 0, {"gain": -3.0})
    await carla.add_plugin(TRACK, "second", AMP, 1, {"gain": -6.0})
    await carla.remove_plugin("first")
    assert await carla.run_on_owner(lambda host: carla.carla_id("second")) == 0
    await carla.run_on_owner(lambda host: host.reset_parameters(carla.carla_id("second")))
    event = await _wait_for(events, "parameter")
    assert event == EngineEvent("parameter", "second", values={"gain": 0.0})


async def test_killed_server_reports_engine_death(
    jack_server: JackServer, carla: CarlaEngine, events: list[EngineEvent]
) -> None:
    """Killing the JACK server gives one engine-died event and running=False; stop still works."""
    await carla.add_plugin(TRACK, "amp", AMP, 0, {"gain": 0.0})
    assert carla.info().running
    await jack_server.stop()
    died = await _wait_for(events, "engine-died")
    assert "JACK" in died.message
    async with asyncio.timeout(EVENT_TIMEOUT):
        while carla.info().running:
            await asyncio.sleep(0.01)
    with pytest.raises(EngineError):
        await carla.set_parameters("amp", {"gain": -6.0})
    await carla.stop()
    assert [e.kind for e in events].count("engine-died") == 1


async def test_info_never_blocks_while_the_owner_is_busy(carla: CarlaEngine) -> None:
    """info() answers in well under a millisecond even while the owner thread is busy."""
    busy = asyncio.ensure_future(carla.run_on_owner(lambda host: time.sleep(0.3)))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    info = carla.info()
    assert time.perf_counter() - started < 0.001
    assert info.running and info.sample_rate == 48000 and info.buffer_size == 128
    await busy


async def test_one_engine_per_process(jack_server: JackServer, carla: CarlaEngine, rig: Rig) -> None:
    """A second CarlaEngine in the same process is refused with EngineError."""
    second = _engine(jack_server.name, rig, [])
    with pytest.raises(EngineError, match="one engine per process"):
        await second.start()
    await second.stop()


async def test_too_many_channels_is_a_clear_error(jack_server: JackServer, rig: Rig) -> None:
    """Three track inputs on Carla's 2-input JACK patchbay: EngineError naming the counts."""
    tracks = [
        TrackPorts("a", ("x:1", "x:2"), ("y:1",)),
        TrackPorts("b", ("x:3",), ("y:2",)),
    ]
    engine = CarlaEngine(tracks, CarlaConfig(), JackConfig(server=jack_server.name))
    with pytest.raises(EngineError, match="has 2 audio inputs but the tracks need 3"):
        await engine.start()
    await engine.stop()
    # the slot is free again
    ok = _engine(jack_server.name, rig, [])
    await ok.start()
    await ok.stop()


async def test_two_tracks_share_the_engine(jack_server: JackServer) -> None:
    """Two mono tracks get one engine channel each and separate chains."""
    left, right = Rig(jack_server.name), Rig(jack_server.name)
    await left.open()
    await right.open()
    engine = CarlaEngine(
        [
            TrackPorts("l", left.play_ports, left.rec_ports),
            TrackPorts("r", right.play_ports, right.rec_ports),
        ],
        CarlaConfig(),
        JackConfig(server=jack_server.name),
    )
    try:
        await engine.start()
        await engine.add_plugin("r", "amp", AMP, 0, {"gain": -6.0})
        assert await right.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        assert await left.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    finally:
        await engine.stop()
        await left.close()
        await right.close()


async def test_runs_its_own_dummy_server() -> None:
    """jack.dummy set: the engine starts a private server at that rate/period and stops it."""
    engine = CarlaEngine(
        [TrackPorts(TRACK, ("system:capture_1",), ("system:playback_1", "system:playback_2"))],
        CarlaConfig(),
        JackConfig(dummy=DummyServer(rate=44100, period=256)),
    )
    await engine.start()
    server = engine._server
    try:
        info = engine.info()
        assert (info.running, info.sample_rate, info.buffer_size) == (True, 44100, 256)
        assert server is not None and server.is_running
    finally:
        await engine.stop()
    assert not server.is_running
    assert engine.info().running is False


async def test_alsa_without_a_card_fails_cleanly() -> None:
    """The ALSA driver on a machine with no sound card: EngineError with Carla's reason."""
    engine = CarlaEngine(
        [TrackPorts(TRACK, ("system:capture_1",), ("system:playback_1",))],
        CarlaConfig(driver="alsa", device="hw:99"),
        JackConfig(),
    )
    with pytest.raises(EngineError, match="alsa engine did not start"):
        await engine.start()
    await engine.stop()
    assert engine.info().running is False


async def test_bridged_plugin_plays_and_bypasses(jack_server: JackServer, rig: Rig) -> None:
    """bridges: true runs the plugin out of process; gain applies and bypass (a reroute) is dry."""
    engine = CarlaEngine(
        [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)],
        CarlaConfig(bridges=True),
        JackConfig(server=jack_server.name),
    )
    await engine.start()
    try:
        await engine.add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
        assert engine.bypass_mode("amp") == "reroute"  # dry/wet stays wet across a bridge
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        await engine.set_bypass("amp", True)
        assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    finally:
        await engine.stop()


# -- failures on the owner thread -----------------------------------------------------


def _once(real: Callable[..., Any], failure: Callable[..., Any]) -> Callable[..., Any]:
    """``failure`` on the first call, ``real`` afterwards."""
    calls: list[int] = []

    def call(*args: Any) -> Any:
        calls.append(1)
        return failure(*args) if len(calls) == 1 else real(*args)

    return call


async def test_failed_carla_removal_keeps_the_plugin_and_the_id_map(
    carla: CarlaEngine, rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Carla refusing remove_plugin: EngineError, plugin kept and wired, later ids still right."""
    await carla.add_plugin(TRACK, "first", AMP, 0, {"gain": -3.0})
    await carla.add_plugin(TRACK, "second", AMP, 1, {"gain": -6.0})
    assert await rig.gain_until(_near(-9.0), PROBE) == pytest.approx(-9.0, abs=TOLERANCE_DB)
    host = carla._host
    monkeypatch.setattr(host, "remove_plugin", _once(host.remove_plugin, lambda carla_id: False))
    with pytest.raises(EngineError, match="remove_plugin"):
        await carla.remove_plugin("first")
    assert carla.chain(TRACK) == ["first", "second"]
    assert await rig.gain_until(_near(-9.0), PROBE) == pytest.approx(-9.0, abs=TOLERANCE_DB)
    await carla.remove_plugin("first")
    assert await carla.run_on_owner(lambda host: carla.carla_id("second")) == 0
    await carla.set_parameters("second", {"gain": 0.0})  # reaches "second", at its new id
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)


async def test_timed_out_load_is_undone(
    carla: CarlaEngine, rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load the loop gave up on does not stay in Carla unwired; the id is free again."""
    host = carla._host

    def slow_add(*args: Any) -> Any:
        time.sleep(0.5)
        return real_add(*args)

    real_add = host.add_plugin
    monkeypatch.setattr(host, "add_plugin", _once(real_add, slow_add))
    monkeypatch.setattr(carla_module, "PLUGIN_START_TIMEOUT", 0.1)
    with pytest.raises(EngineError, match="did not answer"):
        await carla.add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
    assert await carla.run_on_owner(lambda host: host.get_current_plugin_count(), 5.0) == 0
    assert carla.chain(TRACK) == [] and "amp" not in carla._plugins
    monkeypatch.setattr(carla_module, "PLUGIN_START_TIMEOUT", 10.0)
    await carla.add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


async def test_failed_reroute_bypass_keeps_the_state(
    carla: CarlaEngine, rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reroute bypass whose rewiring fails stays engaged; asking again bypasses it."""
    await carla.add_plugin(TRACK, "comp", COMP_NO_ENABLE, 0, {"mak": 10.0})
    assert await rig.gain_until(lambda g: g > 3.0, PROBE) > 3.0

    def fail() -> None:
        raise EngineError("injected: patchbay_connect failed")

    monkeypatch.setattr(carla, "_rewire", _once(carla._rewire, fail))
    with pytest.raises(EngineError, match="injected"):
        await carla.set_bypass("comp", True)
    assert carla._plugins["comp"].bypass is False
    assert await rig.gain_until(lambda g: g > 3.0, PROBE) > 3.0
    await carla.set_bypass("comp", True)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)


async def test_failing_idle_reports_engine_death(
    carla: CarlaEngine, events: list[EngineEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in the idle tick: engine-died, running=False, calls fail fast, stop works."""
    await carla.add_plugin(TRACK, "amp", AMP, 0, {"gain": 0.0})

    def broken() -> None:
        raise RuntimeError("injected: engine_idle broke")

    monkeypatch.setattr(carla._host, "engine_idle", _once(carla._host.engine_idle, broken))
    died = await _wait_for(events, "engine-died")
    assert "engine_idle broke" in died.message
    assert carla.info().running is False
    async with asyncio.timeout(1.0):
        with pytest.raises(EngineError):
            await carla.set_parameters("amp", {"gain": -6.0})
    await carla.stop()
    assert [e.kind for e in events].count("engine-died") == 1


async def test_queued_server_shutdown_is_handled_before_engine_idle(
    carla: CarlaEngine, events: list[EngineEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JACK shutdown queued between two idle ticks ends the engine before engine_idle() runs."""
    host = carla._host
    queued = threading.Event()
    late: list[str] = []

    def runtime_info() -> Any:  # the end of one idle tick: the server "dies" here
        if not queued.is_set():
            queued.set()
            carla._on_jack_shutdown(None, "injected")
        return real_runtime()

    def idle() -> None:
        if queued.is_set():
            late.append("engine_idle() after the shutdown")  # Carla would assert
        real_idle()

    real_runtime, real_idle = host.get_runtime_engine_info, host.engine_idle
    monkeypatch.setattr(host, "get_runtime_engine_info", runtime_info)
    monkeypatch.setattr(host, "engine_idle", idle)
    died = await _wait_for(events, "engine-died")
    assert died.message == "JACK server gone: injected"
    assert late == []


async def test_ended_owner_thread_fails_commands_and_reports_not_running(carla: CarlaEngine) -> None:
    """Once the owner thread has ended, queued commands fail and info() says not running."""
    thread = carla._thread
    assert thread is not None
    left: concurrent.futures.Future[Any] = concurrent.futures.Future()
    carla._commands.put(None)
    carla._commands.put((lambda: None, left))
    await asyncio.to_thread(thread.join, 5.0)
    assert not thread.is_alive()
    assert isinstance(left.exception(timeout=0), EngineError)
    assert carla.info().running is False
    await asyncio.to_thread(carla._close)  # the owner is gone: close Carla from here


@pytest.fixture(scope="module")
def catalog() -> Any:
    from appliance.catalog import Catalog

    return Catalog.load(Path(__file__).resolve().parent.parent / "config" / "plugins.yaml", scan=False)


@pytest.mark.parametrize("key", ["gain", "overdrive", "compressor", "eq", "reverb"])
async def test_carla_describes_controls_as_the_lv2_data_does(carla: CarlaEngine, catalog: Any, key: str) -> None:
    """Carla's own parameter info gives the same symbols, ranges, defaults and kinds as the plugins' LV2 data."""
    plugin_type = catalog.lookup(key)
    await carla.add_plugin(TRACK, "p", plugin_type, 0, {})
    described = {c.symbol: c for c in await carla.controls("p")}
    for control in plugin_type.controls:
        if control.symbol == plugin_type.enable_symbol:
            continue
        theirs = described[control.symbol]
        assert (theirs.minimum, theirs.maximum, theirs.default) == pytest.approx(
            (control.minimum, control.maximum, control.default), rel=1e-4, abs=1e-4
        ), control.symbol
        assert theirs.name and (theirs.kind == control.kind or {theirs.kind, control.kind} <= {"float", "integer"})


async def test_carla_values_read_back(carla: CarlaEngine, catalog: Any) -> None:
    """Values set through the engine read back from Carla, clamped by Carla to the control's range."""
    comp = catalog.lookup("compressor")
    await carla.add_plugin(TRACK, "comp", comp, 0, {"thr": -30.0})
    assert (await carla.values("comp"))["thr"] == pytest.approx(-30.0)
    await carla.set_parameters("comp", {"att": 12.5, "rat": 8.0})
    values = await carla.values("comp")
    assert values["att"] == pytest.approx(12.5) and values["rat"] == pytest.approx(8.0)
    await carla.set_parameters("comp", {"thr": 1000.0})
    assert (await carla.values("comp"))["thr"] == pytest.approx(comp.parameter("thr").control.maximum)
