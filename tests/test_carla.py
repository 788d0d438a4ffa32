"""Carla-only behaviour: bypass inside the host, engine events, a host that crashes or hangs.

The shared behaviour (chains, gain, latency, order, failures) is in the engine
contract suite; here is what only the Carla engine has. Every test here needs
Carla (the module is marked ``carla``: conftest skips it, with the reason,
where Carla is absent); finding Carla is tested in ``test_carla_install.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jack
import pytest
import pytest_asyncio

from appliance.config import CarlaConfig, JackConfig
from appliance.core.controls import Control, PluginType
from appliance.core.errors import EngineError
from appliance.engine import EngineEvent, OwnPlugins, SavedPlugin, TrackPorts
from appliance.engine.carla.engine import CarlaEngine
from appliance.engine.jack.server import JackServer
from appliance.engine.respawn import RespawnSettings
from appliance.plugins.catalog import Catalog
from tests.fakes import AMP, TS9
from tests.rig import Rig, rms_db, sine, window_gains

pytestmark = [pytest.mark.carla, pytest.mark.timeout(120)]

TRACK = "guitar"
#: ACE compressor with its side-chain input: 2 in, 1 out, so Carla has no dry/wet for it.
COMP_NO_ENABLE = PluginType(
    key="comp",
    uri="urn:ardour:a-comp",
    name="ACE Compressor",
    controls=(
        Control("mak", "Makeup", 0.0, 30.0, 0.0, "dB"),
        Control("thr", "Threshold", -60.0, 0.0, 0.0, "dB"),
        Control("enable", "Enable", 0.0, 1.0, 1.0, kind="toggle"),
    ),
    audio_inputs=("lv2_audio_in_1",),
    audio_outputs=("lv2_audio_out_1",),
)
PROBE = sine(1000.0, 4800, 48000, -12.0)
TOLERANCE_DB = 0.1
EVENT_TIMEOUT = 30.0
#: Add/remove/move/bypass steps in the stress loop.
STRESS_STEPS = 150


def _near(target: float) -> Callable[[float], bool]:
    return lambda gain: abs(gain - target) <= TOLERANCE_DB


def _engine(server: str, rig: Rig, events: list[EngineEvent], **options: Any) -> CarlaEngine:
    return CarlaEngine(
        [TrackPorts(TRACK, rig.play_ports, rig.rec_ports)],
        CarlaConfig(bridges=options.pop("bridges", False)),
        JackConfig(server=server),
        on_event=events.append,
        **options,
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


async def _wait_for(events: list[EngineEvent], kind: str, after: int = 0) -> EngineEvent:
    async with asyncio.timeout(EVENT_TIMEOUT):
        while True:
            for event in events[after:]:
                if event.kind == kind:
                    return event
            await asyncio.sleep(0.01)


def _connections(server: str, port: str) -> set[str]:
    """Every port connected to ``port``, as JACK has it now."""
    client = jack.Client(f"look-{random.randrange(1 << 20)}", servername=server, no_start_server=True)
    try:
        return {p.name for p in client.get_all_connections(port)}
    finally:
        client.close()


async def test_bypass_uses_the_enable_port(carla: CarlaEngine, rig: Rig) -> None:
    """TS9 (a BYPASS control) is bypassed by its own control: the value flips, the track goes dry."""
    await carla.add_plugin(TRACK, "drive", TS9, 0, {"fslider2_": 1.0, "fslider0_": 4.0})
    assert carla.bypass_mode("drive") == "hosted"
    assert await rig.gain_until(lambda g: g > 3.0, PROBE) > 3.0
    await carla.set_bypass("drive", True)
    assert (await carla.values("drive"))["BYPASS"] == 0.0  # Guitarix: 1 = active
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    await carla.set_bypass("drive", False)
    assert (await carla.values("drive"))["BYPASS"] == 1.0
    assert await rig.gain_until(lambda g: g > 3.0, PROBE) > 3.0


async def test_bypass_uses_drywet_without_an_enable_port(
    jack_server: JackServer, carla: CarlaEngine, rig: Rig
) -> None:
    """eg-amp (no enable port, 1 in 1 out) is bypassed with dry/wet 0: dry sound, JACK wiring untouched."""
    await carla.add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
    assert carla.bypass_mode("amp") == "hosted"
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    wired = await asyncio.to_thread(_connections, jack_server.name, rig.rec_ports[0])
    await carla.set_bypass("amp", True)
    assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    assert await asyncio.to_thread(_connections, jack_server.name, rig.rec_ports[0]) == wired


async def test_bypass_takes_it_out_of_the_rack_without_enable_port_or_drywet(
    carla: CarlaEngine, rig: Rig
) -> None:
    """a-comp told it has no enable port (2 in, 1 out: no dry/wet) leaves the rack while bypassed
    (the chain closes up, dry) and comes back at its place with its values."""
    await carla.add_plugin(TRACK, "comp", COMP_NO_ENABLE, 0, {"mak": 10.0})
    assert carla.bypass_mode("comp") == "absent"
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
    await carla.reset_parameters("second")
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
        await carla.add_plugin(TRACK, "more", AMP, 1, {})
    await carla.stop()
    assert [e.kind for e in events].count("engine-died") == 1
    assert "engine-restored" not in [e.kind for e in events]


async def test_a_host_told_to_end_closes_carla_before_it_exits(
    carla: CarlaEngine, events: list[EngineEvent]
) -> None:
    """When the box dies, setpriv sends its Carla host SIGTERM: the host closes Carla, so every
    plugin's JACK client leaves the graph, and exits 0. Dead at once instead, its clients stay in
    JACK's graph failing every cycle, and jackd 1.9.21 was seen to wedge for good under that storm
    of xrun notices: on stage, no box could have come back until a reboot."""
    await carla.add_plugin(TRACK, "amp", AMP, 0, {"gain": 0.0})
    carla.kill_host(signal.SIGTERM)
    died = await _wait_for(events, "engine-died")
    assert died.message.endswith("exit status 0"), died.message


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT], ids=["SIGSEGV", "SIGABRT"])
async def test_a_native_crash_is_a_gap_not_an_outage(
    carla: CarlaEngine, rig: Rig, events: list[EngineEvent], sig: signal.Signals
) -> None:
    """A host that dies of a native crash: engine-died, not running meanwhile, then a new host
    with every plugin, its values and its bypass; the box process itself never stops."""
    await carla.add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
    await carla.add_plugin(TRACK, "drive", TS9, 1, {"fslider2_": 1.0}, bypass=True)
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    first = carla.host_pid
    carla.kill_host(sig)
    died = await _wait_for(events, "engine-died")
    assert sig.name in died.message
    restored = await _wait_for(events, "engine-restored")
    assert restored.message.startswith("back after ")
    assert carla.host_pid not in (None, first)
    info = carla.info()
    assert info.running and info.details["restarts"] == 1 and int(str(info.details["last_gap_ms"])) > 0
    assert carla.chain(TRACK) == ["amp", "drive"]
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    assert (await carla.values("drive"))["BYPASS"] == 0.0


async def test_a_crash_while_a_board_loads_keeps_the_board(
    carla: CarlaEngine, rig: Rig, events: list[EngineEvent]
) -> None:
    """The host dies while a saved board is loading: no plugin is given up; all come back."""
    carla.preroll = 1.0
    loading = asyncio.ensure_future(
        carla.load_board(
            [
                SavedPlugin(TRACK, "a", AMP, {"gain": -3.0}),
                SavedPlugin(TRACK, "b", AMP, {"gain": -3.0}),
                SavedPlugin(TRACK, "c", TS9, {"fslider2_": 1.0}, bypass=True),
            ]
        )
    )
    async with asyncio.timeout(EVENT_TIMEOUT):
        while len(carla.chain(TRACK)) < 3:
            await asyncio.sleep(0.001)
    carla.kill_host(signal.SIGKILL)
    assert await loading == {}
    assert carla.chain(TRACK) == ["a", "b", "c"]
    await _wait_for(events, "engine-restored")
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


async def test_a_crash_during_a_plugins_preroll_brings_it_back(
    carla: CarlaEngine, rig: Rig, events: list[EngineEvent]
) -> None:
    """The host dies while a new plugin pre-rolls: the add still lands, and the plugin comes back."""
    await carla.add_plugin(TRACK, "a", AMP, 0, {"gain": -3.0})
    carla.preroll = 2.0
    adding = asyncio.ensure_future(carla.add_plugin(TRACK, "b", AMP, 1, {"gain": -3.0}))
    async with asyncio.timeout(EVENT_TIMEOUT):
        while carla.info().details.get("starting") != 1:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.3)  # well inside the pre-roll
    carla.kill_host(signal.SIGKILL)
    await adding
    assert carla.chain(TRACK) == ["a", "b"]
    await _wait_for(events, "engine-restored")
    assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)


async def test_a_hung_host_is_killed_and_replaced(
    jack_server: JackServer, rig: Rig, events: list[EngineEvent]
) -> None:
    """A host that stops answering (SIGSTOP) misses its heartbeat, is killed and replaced."""
    engine = _engine(jack_server.name, rig, events, hang_timeout=1.0)
    await engine.start()
    try:
        await engine.add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        hung = engine.host_pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        died = await _wait_for(events, "engine-died")
        assert "SIGKILL" in died.message
        await _wait_for(events, "engine-restored")
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    finally:
        await engine.stop()


async def test_a_host_that_keeps_crashing_stays_down_and_the_track_plays_dry(
    jack_server: JackServer, rig: Rig, events: list[EngineEvent]
) -> None:
    """After the respawn limit the host stays down, says so, and the track passes dry."""
    engine = _engine(
        jack_server.name, rig, events, respawn=RespawnSettings(delays=(0.01,), limit=2, window=60.0)
    )
    await engine.start()
    try:
        await engine.add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
        engine.kill_host(signal.SIGKILL)
        await _wait_for(events, "engine-restored")
        engine.kill_host(signal.SIGKILL)
        gave_up = await _wait_for(events, "engine-died", after=len(events) + 1)
        while not gave_up.message.startswith("not restarted"):
            gave_up = await _wait_for(events, "engine-died", after=events.index(gave_up) + 1)
        assert engine.info().running is False
        assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    finally:
        await engine.stop()


def _network_sockets(pid: int) -> list[str]:
    """The TCP/UDP sockets (IPv4 and IPv6) that process ``pid`` holds, as /proc/net lines."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            if line.split()[9] in inodes:
                found.append(f"{table}: {line.strip()}")
    return found


async def test_the_host_opens_no_network_port(carla: CarlaEngine) -> None:
    """Carla's OSC control (no authentication, every interface) is off: the host process holds
    no TCP or UDP socket, so the box's token and origin checks are the only way in."""
    await carla.add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
    pid = carla.host_pid
    assert pid is not None
    assert _network_sockets(pid) == []


async def test_two_engines_run_side_by_side(jack_server: JackServer) -> None:
    """Each CarlaEngine has its own host process: two run at once, each on its own track."""
    left, right = Rig(jack_server.name), Rig(jack_server.name)
    await left.open()
    await right.open()
    engines = [_engine(jack_server.name, rig, []) for rig in (left, right)]
    try:
        for engine in engines:
            await engine.start()
        await engines[0].add_plugin(TRACK, "amp", AMP, 0, {"gain": -3.0})
        await engines[1].add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
        assert engines[0].host_pid != engines[1].host_pid
        assert await left.gain_until(_near(-3.0), PROBE) == pytest.approx(-3.0, abs=TOLERANCE_DB)
        assert await right.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
    finally:
        for engine in engines:
            await engine.stop()
        await left.close()
        await right.close()


async def test_bridged_plugin_plays_and_bypasses(jack_server: JackServer, rig: Rig) -> None:
    """bridges: true runs the plugin out of process; gain applies and bypass is dry."""
    engine = _engine(jack_server.name, rig, [], bridges=True)
    await engine.start()
    try:
        await engine.add_plugin(TRACK, "amp", AMP, 0, {"gain": -6.0})
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        await engine.set_bypass("amp", True)
        assert await rig.gain_until(_near(0.0), PROBE) == pytest.approx(0.0, abs=TOLERANCE_DB)
    finally:
        await engine.stop()


async def test_structure_changes_while_playing_never_crash_or_drop_out(
    carla: CarlaEngine, rig: Rig, events: list[EngineEvent]
) -> None:
    """A random storm of add, remove, move and bypass while the track plays: the host never
    dies, and every window of the recording during the storm carries signal."""
    rng = random.Random(6)
    counter = 0

    async def storm() -> None:
        nonlocal counter
        for _ in range(STRESS_STEPS):
            chain = carla.chain(TRACK)
            move = rng.random()
            if len(chain) < 2 or (move < 0.35 and len(chain) < 6):
                counter += 1
                kind = rng.choice([AMP, TS9, COMP_NO_ENABLE])
                values = {"gain": rng.uniform(-3.0, 0.0)} if kind is AMP else {}
                await carla.add_plugin(TRACK, f"p{counter}", kind, rng.randrange(len(chain) + 1), values)
            elif move < 0.55:
                await carla.remove_plugin(rng.choice(chain))
            elif move < 0.75:
                await carla.move_plugin(rng.choice(chain), rng.randrange(len(chain)))
            else:
                await carla.set_bypass(rng.choice(chain), rng.random() < 0.5)

    carla.preroll = 0.0
    reference, recorded, outcome = await rig.record_during(sine(1000.0, 48000 * 8, 48000, -12.0), storm)
    rig.require_clean("the storm's recording")
    assert outcome is None, outcome
    assert not [e for e in events if e.kind in ("engine-died", "plugin-died")], events
    gains = window_gains(recorded[:, 0], reference)
    assert gains.min() > -40.0, f"a window of the storm was silent ({gains.min():.1f} dB)"
    assert carla.info().running


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(Path(__file__).resolve().parent.parent / "config" / "plugins.yaml", scan=False)


@pytest.mark.parametrize("key", ["gain", "overdrive", "compressor", "eq", "reverb"])
async def test_carla_describes_controls_as_the_lv2_data_does(
    carla: CarlaEngine, catalog: Catalog, key: str
) -> None:
    """Carla's own parameter info gives the same symbols, ranges, defaults and kinds as the LV2 data."""
    plugin_type = catalog.lookup(key)
    assert plugin_type is not None
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


async def test_carla_values_read_back(carla: CarlaEngine, catalog: Catalog) -> None:
    """Values set through the engine read back from Carla, clamped by Carla to the control's range."""
    comp = catalog.lookup("compressor")
    assert comp is not None
    await carla.add_plugin(TRACK, "comp", comp, 0, {"thr": -30.0})
    assert (await carla.values("comp"))["thr"] == pytest.approx(-30.0)
    await carla.set_parameters("comp", {"att": 12.5, "rat": 8.0})
    values = await carla.values("comp")
    assert values["att"] == pytest.approx(12.5) and values["rat"] == pytest.approx(8.0)
    await carla.set_parameters("comp", {"thr": 1000.0})
    assert (await carla.values("comp"))["thr"] == pytest.approx(comp.parameter("thr").control.maximum)


async def test_a_crashed_bridge_is_reloaded_with_its_values_and_the_chain_plays_on(
    jack_server: JackServer, rig: Rig
) -> None:
    """bridges: true, and one plugin's bridge process crashes (kill -9), again and again:
    each time the phones are told, the rest of the chain plays on meanwhile (the dead plugin
    is passed dry, never silent), and the plugin comes back with its values, a value sent
    while it was down included. One that keeps crashing stays down, dry, and is reported."""
    events: list[EngineEvent] = []
    respawn = RespawnSettings(delays=(0.05,), limit=3, window=60.0)
    engine = _engine(jack_server.name, rig, events, bridges=True, respawn=respawn)
    await engine.start()
    try:
        await engine.add_plugin(TRACK, "first", AMP, 0, {"gain": -6.0})
        (first,) = engine.bridge_pids()
        await engine.add_plugin(TRACK, "second", AMP, 1, {"gain": -3.0})
        (second,) = engine.bridge_pids() - {first}
        assert await rig.gain_until(_near(-9.0), PROBE) == pytest.approx(-9.0, abs=TOLERANCE_DB)
        host = engine.host_pid
        for crash, gain in enumerate((-5.0, -4.0, -2.0)):
            seen = len(events)
            (first,) = engine.bridge_pids() - {second}
            os.kill(first, signal.SIGKILL)
            died = await _wait_for(events, "plugin-died", after=seen)
            assert died.plugin_id == "first"
            if crash < 2:
                await engine.set_parameters("first", {"gain": gain})
                # The second amp alone while the first is down: −3 dB, not silence.
                _, recorded = await rig.play_and_record(PROBE)
                rig.require_clean()
                restored = await _wait_for(events, "plugin-restored", after=seen)
                assert restored.plugin_id == "first"
                assert await rig.gain_until(_near(gain - 3.0), PROBE) == pytest.approx(gain - 3.0, abs=TOLERANCE_DB)
                assert rms_db(recorded) > -40.0, "the chain went silent while the bridge was down"
        async with asyncio.timeout(EVENT_TIMEOUT):
            while not [e for e in events[seen:] if e.kind == "plugin-died" and "not restarted" in e.message]:
                await asyncio.sleep(0.01)
        assert await rig.gain_until(_near(-3.0), PROBE) == pytest.approx(-3.0, abs=TOLERANCE_DB)
        assert engine.host_pid == host, "the whole host was restarted for one bridge"
        assert engine.chain(TRACK) == ["first", "second"]
    finally:
        await engine.stop()


async def test_a_warm_board_wakes_in_its_host_instead_of_loading(
    jack_server: JackServer, rig: Rig, own_plugins: OwnPlugins
) -> None:
    """The setlist's next board waits loaded in a host of its own, silent and running no DSP; a
    switch to it (other values than it was prepared with) wakes that very host, so the player
    hears it at once and with the values asked for. Broken, NEXT would start a new host."""
    engine = _engine(jack_server.name, rig, [], own=own_plugins)
    await engine.start()
    try:
        await engine.add_plugin(TRACK, "old", AMP, 0, {"gain": -6.0})
        engine.prepare([[SavedPlugin(TRACK, "?", AMP, {"gain": -20.0})]])
        async with asyncio.timeout(EVENT_TIMEOUT):
            while not engine.host_pids()["warm"]:
                await asyncio.sleep(0.01)
        (warm,) = engine.host_pids()["warm"]
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)

        async def switch() -> None:
            await engine.switch_board([SavedPlugin(TRACK, "new", AMP, {"gain": -12.0})], 0.0, lambda: None)

        reference, recorded, outcome = await rig.record_during(sine(1000.0, 24000, 48000, -12.0), switch)
        rig.require_clean("the switch's recording")
        assert outcome is None, outcome
        assert engine.host_pids()["live"] == [warm], "the switch did not wake the warm host"
        assert engine.chain(TRACK) == ["new"]
        assert await rig.gain_until(_near(-12.0), PROBE) == pytest.approx(-12.0, abs=TOLERANCE_DB)
        gains = window_gains(recorded[:, 0], reference)
        heard = next(i for i, g in enumerate(gains) if abs(g + 12.0) < 1.0 and i * 480 > rig.last_action_frame)
        print(f"request to new sound: {(heard * 480 - rig.last_action_frame) / 48:.1f} ms (10 ms windows)")
    finally:
        await engine.stop()


async def test_warm_racks_follow_what_is_prepared(
    jack_server: JackServer, rig: Rig, own_plugins: OwnPlugins
) -> None:
    """Preparing other boards ends the warm hosts nobody needs any more and loads the new ones;
    a switch to a board nobody prepared still works (a cold start)."""
    engine = _engine(jack_server.name, rig, [], own=own_plugins)
    await engine.start()
    try:
        engine.prepare([[SavedPlugin(TRACK, "?", AMP, {"gain": -20.0})]])
        async with asyncio.timeout(EVENT_TIMEOUT):
            while not engine.host_pids()["warm"]:
                await asyncio.sleep(0.01)
        (first,) = engine.host_pids()["warm"]
        engine.prepare([[SavedPlugin(TRACK, "?", TS9, {})]])
        async with asyncio.timeout(EVENT_TIMEOUT):
            while engine.host_pids()["warm"] in ([], [first]):
                await asyncio.sleep(0.01)
        with pytest.raises(ProcessLookupError):
            os.kill(first, 0)
        await engine.switch_board([SavedPlugin(TRACK, "cold", AMP, {"gain": -3.0})], 0.0, lambda: None)
        assert await rig.gain_until(_near(-3.0), PROBE) == pytest.approx(-3.0, abs=TOLERANCE_DB)
        assert len(engine.host_pids()["warm"]) == 1, "the prepared board's warm host went away"
    finally:
        await engine.stop()


async def test_a_warm_host_that_dies_is_loaded_again(
    jack_server: JackServer, rig: Rig, own_plugins: OwnPlugins
) -> None:
    """A warm standby host that crashes while it waits is replaced by a new one, quietly: the
    board playing never hears of it, and the switch still wakes the new one."""
    events: list[EngineEvent] = []
    engine = _engine(jack_server.name, rig, events, own=own_plugins)
    await engine.start()
    try:
        await engine.add_plugin(TRACK, "old", AMP, 0, {"gain": -6.0})
        engine.prepare([[SavedPlugin(TRACK, "?", AMP, {"gain": -20.0})]])
        async with asyncio.timeout(EVENT_TIMEOUT):
            while not engine.host_pids()["warm"]:
                await asyncio.sleep(0.01)
        (crashed,) = engine.host_pids()["warm"]
        os.kill(crashed, signal.SIGKILL)
        async with asyncio.timeout(EVENT_TIMEOUT):
            while engine.host_pids()["warm"] in ([], [crashed]):
                await asyncio.sleep(0.01)
        assert not [e for e in events if e.kind.startswith("engine-")], events
        assert await rig.gain_until(_near(-6.0), PROBE) == pytest.approx(-6.0, abs=TOLERANCE_DB)
        (warm,) = engine.host_pids()["warm"]
        await engine.switch_board([SavedPlugin(TRACK, "new", AMP, {"gain": -20.0})], 0.0, lambda: None)
        assert engine.host_pids()["live"] == [warm]
        assert await rig.gain_until(_near(-20.0), PROBE) == pytest.approx(-20.0, abs=TOLERANCE_DB)
    finally:
        await engine.stop()


async def test_a_switch_while_tuning_stays_silent_and_keeps_the_tuner(
    jack_server: JackServer, rig: Rig, own_plugins: OwnPlugins
) -> None:
    """With the tuner on, a switch (to a warm board or a cold one) keeps the box silent and the
    tuner listening; tuner off, the new board sounds."""
    engine = _engine(jack_server.name, rig, [], own=own_plugins)
    await engine.start()
    try:
        engine.prepare([[SavedPlugin(TRACK, "?", AMP, {"gain": -20.0})]])
        async with asyncio.timeout(EVENT_TIMEOUT):
            while not engine.host_pids()["warm"]:
                await asyncio.sleep(0.01)
        await engine.set_tuner(True)
        assert await rig.gain_until(lambda g: g < -60.0, PROBE) < -60.0
        for board in ([SavedPlugin(TRACK, "warm", AMP, {"gain": -3.0})], [SavedPlugin(TRACK, "cold", TS9, {})]):
            await engine.switch_board(board, 0.0, lambda: None)
            assert engine.is_tuning
            _, recorded = await rig.play_and_record(sine(110.0, 48000, 48000, -12.0))
            rig.require_clean()
            assert rms_db(recorded) < -60.0, "a switch while tuning was heard"
            async with asyncio.timeout(EVENT_TIMEOUT):
                while engine.tuner() is None:
                    engine.request_readings()
                    await rig.play_and_record(sine(110.0, 9600, 48000, -12.0))
            reading = engine.tuner()
            assert reading is not None and reading["note"] == "A"
        await engine.set_tuner(False)
        assert await rig.gain_until(lambda g: g > -60.0, PROBE) > -60.0
    finally:
        await engine.stop()
