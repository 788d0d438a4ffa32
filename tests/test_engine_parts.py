"""The engines' parts that need no Carla: the owner loop, the host pipe, the respawn policy,
one jalv process, and the JACK wiring's resilience."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jack
import pytest

from appliance.core.errors import EngineError, PluginLoadFailed, UnknownPlugin
from appliance.engine import TrackPorts
from appliance.engine.carla import pipe
from appliance.engine.carla.ownerloop import OwnerLoop
from appliance.engine.chain import Stage
from appliance.engine.jack.server import DummySettings, JackServer, unique_server_name
from appliance.engine.jack.wiring import JackWiring, plan_wiring
from appliance.engine.jalv.process import STDIN_BACKLOG_LIMIT, JalvProcess, jalv_argv
from appliance.engine.processes import Child
from appliance.engine.respawn import RespawnPolicy, RespawnSettings
from tests.rig import Rig, gain_db, rms_db, sine

# -- the owner loop -------------------------------------------------------------------------


class StepClock:
    """A clock that moves on by ``step`` each time it is read (no waiting in tests)."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    box, host = socket.socketpair()
    yield box, host
    box.close()
    host.close()


def _run(loop: OwnerLoop) -> threading.Thread:
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    return thread


def test_owner_loop_handles_lines_whole_and_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    """Messages split across writes arrive whole, in order; a malformed line is skipped; EOF ends it."""
    box, host = pair
    seen: list[dict[str, Any]] = []
    loop = OwnerLoop(host, seen.append, lambda: None, interval=3600.0)
    thread = _run(loop)
    box.sendall(b'{"op": "a"}\n{"op": "b", "x"')
    box.sendall(b': 1}\nnot json\n\n{"op": "c"}\n')
    box.shutdown(socket.SHUT_WR)
    thread.join(10)
    assert not thread.is_alive()
    assert seen == [{"op": "a"}, {"op": "b", "x": 1}, {"op": "c"}]


def test_owner_loop_ticks_while_the_pipe_is_quiet_and_stops_on_request(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The idle tick runs with no message at all; stop() from another thread ends the loop."""
    _, host = pair
    ticks = threading.Semaphore(0)
    loop = OwnerLoop(host, lambda message: None, ticks.release, interval=0.001, clock=StepClock(0.01))
    thread = _run(loop)
    for _ in range(5):
        assert ticks.acquire(timeout=10)
    loop.stop()
    thread.join(10)
    assert not thread.is_alive()


def test_owner_loop_lets_a_failing_tick_end_it(pair: tuple[socket.socket, socket.socket]) -> None:
    """An exception in the tick propagates out of run(): the host process ends, not hangs."""
    _, host = pair

    def broken() -> None:
        raise RuntimeError("engine_idle broke")

    loop = OwnerLoop(host, lambda message: None, broken, interval=0.0)
    with pytest.raises(RuntimeError, match="engine_idle broke"):
        loop.run()


def test_owner_loop_send_is_whole_lines_from_any_thread(pair: tuple[socket.socket, socket.socket]) -> None:
    """send() from several threads at once never interleaves two messages on one line."""
    box, host = pair
    loop = OwnerLoop(host, lambda message: None, lambda: None, interval=3600.0)
    threads = [
        threading.Thread(target=lambda n=n: [loop.send({"n": n, "i": i, "pad": "x" * 3000}) for i in range(50)])
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    received = b""
    box.settimeout(10)
    while received.count(b"\n") < 200:
        received += box.recv(1 << 16)
    for thread in threads:
        thread.join()
    messages = [pipe.decode(line) for line in received.splitlines()]
    assert sorted((m["n"], m["i"]) for m in messages) == [(n, i) for n in range(4) for i in range(50)]


# -- the pipe --------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [PluginLoadFailed("urn:x: no such plugin"), UnknownPlugin("no plugin 'p'")])
def test_pipe_errors_cross_as_the_same_kind(error: Exception) -> None:
    """A host failure arrives in the box as the same exception class and sentence."""
    reply = pipe.decode(pipe.encode(pipe.error_reply(7, error)))
    assert reply["id"] == 7
    with pytest.raises(type(error)) as raised:
        pipe.raise_error(reply["error"])
    assert str(raised.value) == str(error)


def test_pipe_unknown_failures_arrive_as_engine_errors() -> None:
    """A bug in the host (any other exception) is an EngineError in the box."""
    reply = pipe.error_reply(1, KeyError("plugin"))
    with pytest.raises(EngineError, match="plugin"):
        pipe.raise_error(reply["error"])


# -- the respawn policy ----------------------------------------------------------------------


def test_respawn_gives_up_after_the_limit_within_the_window() -> None:
    """Deaths inside the window count toward the limit; at the limit the host stays down."""
    clock = StepClock(0.0)
    policy = RespawnPolicy(clock, RespawnSettings(delays=(0.1, 1.0), limit=3, window=60.0))
    assert policy.died() == (0.1, 1.0)
    clock.now = 10.0
    assert policy.died() == (0.1, 1.0)
    clock.now = 20.0
    assert policy.died() == ()
    assert policy.recent == 3


def test_respawn_forgets_deaths_older_than_the_window() -> None:
    """A host that crashes once an hour is always restarted."""
    clock = StepClock(0.0)
    policy = RespawnPolicy(clock, RespawnSettings(delays=(0.1,), limit=2, window=60.0))
    for hour in range(5):
        clock.now = hour * 3600.0
        assert policy.died() == (0.1,)
        assert policy.recent == 1


# -- one jalv process ------------------------------------------------------------------------


def test_jalv_argv_is_line_buffered_with_an_exact_name_and_values() -> None:
    """jalv runs under stdbuf -oL, with -x -n NAME and one -c per value, the URI last."""
    argv = jalv_argv("jalv", "box-plugin_1", "urn:x", {"gain": -6.0, "on": 1.0})
    assert argv == ["stdbuf", "-oL", "jalv", "-x", "-n", "box-plugin_1", "-c", "gain=-6", "-c", "on=1", "urn:x"]


async def test_a_jalv_that_stops_reading_is_killed_once() -> None:
    """A plugin process that never reads its stdin is killed when its backlog passes the limit,
    so that the engine restarts it, instead of the box buffering values without end."""
    stuck = JalvProcess(["sleep", "60"], None, "stuck")
    await stuck.start()
    try:
        value = {f"control_{i}": float(i) for i in range(200)}
        for _ in range(STDIN_BACKLOG_LIMIT // 3000 + 100):
            stuck.write(value)
            if stuck.stuck:
                break
        assert stuck.stuck
        assert await asyncio.wait_for(stuck.wait(), 10) == -9
        assert "signal SIGKILL" in stuck.exit_reason()
    finally:
        await stuck.terminate()


async def test_jalv_that_cannot_run_says_why() -> None:
    """A missing executable ends at once, and its exit reason (what the load failure says) names it."""
    proc = JalvProcess(["/nonexistent/jalv"], None, "x")
    await proc.start()
    assert await asyncio.wait_for(proc.wait(), 5) == 127
    assert "/nonexistent/jalv: No such file or directory" in proc.exit_reason()


# -- the wiring ------------------------------------------------------------------------------


class VanishingPortClient(jack.Client):  # type: ignore[misc]
    """A real JACK client whose first get_all_connections fails as for a port that just vanished."""

    calls = 0

    def get_all_connections(self, port: Any) -> Any:
        type(self).calls += 1
        if type(self).calls == 1:
            raise jack.JackError(f"Port '{port.name}' not available")
        return super().get_all_connections(port)


async def test_wiring_survives_a_port_vanishing_midway(jack_server: JackServer, rig: Rig) -> None:
    """A port whose client dies between listing and reading its connections does not fail the rewire."""
    wiring = JackWiring(
        "wire-test", jack_server.name, lambda name, up: None, lambda why: None, client_factory=VanishingPortClient
    )
    await wiring.open()
    try:
        track = TrackPorts("t", rig.play_ports, rig.rec_ports)
        failures = await wiring.apply(plan_wiring([track], {"t": []}))
        assert failures == [] and VanishingPortClient.calls > 1
        assert await rig.gain_until(lambda g: abs(g) < 0.1) == pytest.approx(0.0, abs=0.1)
    finally:
        await wiring.close()


async def test_wiring_leaves_other_connections_to_the_track_alone(jack_server: JackServer, rig: Rig) -> None:
    """The rig's own reference connection (player → recorder's ref) is not the wiring's to undo,
    and a stage out of the path leaves the track dry."""
    wiring = JackWiring("wire-test2", jack_server.name, lambda name, up: None, lambda why: None)
    await wiring.open()
    try:
        track = TrackPorts("t", rig.play_ports, rig.rec_ports)
        down = Stage(("gone:in",), ("gone:out",), in_path=False)
        assert await wiring.apply(plan_wiring([track], {"t": [down]})) == []
        reference, recorded = await rig.play_and_record(sine(frames=2400))
        rig.require_clean()
        assert rms_db(reference) > -20.0  # the reference connection is still there
        assert gain_db(recorded[:, 0], reference) == pytest.approx(0.0, abs=0.1)
    finally:
        await wiring.close()


class FailingActivateClient(jack.Client):  # type: ignore[misc]
    """A real JACK client whose activate() fails, as on a server that refuses it."""

    closed: ClassVar[list[str]] = []

    def activate(self) -> None:
        raise jack.JackError("activate refused")

    def close(self, ignore_errors: bool = True) -> None:
        if not getattr(self, "was_closed", False):  # JACK-Client's __del__ closes again
            self.was_closed = True
            type(self).closed.append(self.name)
        super().close(ignore_errors)


async def test_wiring_closes_its_client_when_activate_fails(jack_server: JackServer) -> None:
    """A wiring client that cannot be activated is closed again, not left registered on the server."""
    wiring = JackWiring(
        "wire-refused", jack_server.name, lambda name, up: None, lambda why: None, client_factory=FailingActivateClient
    )
    with pytest.raises(EngineError, match="activate refused"):
        await wiring.open()
    assert FailingActivateClient.closed == ["wire-refused"]
    assert not wiring.is_open


#: JACK's registry of running servers: eight slots, one per server name.
JACK_REGISTRY = Path("/dev/shm/jack-shm-registry")


def _registered(server: str) -> bool:
    """Whether a server of this name holds one of JACK's eight slots."""
    return f":{server}:".encode() in JACK_REGISTRY.read_bytes()


async def test_a_server_that_will_not_stop_is_killed_and_gives_back_its_slot() -> None:
    """A jackd that ignores SIGTERM (wedged; here stopped with SIGSTOP) is killed, and its slot
    among JACK's eight is given back. Left taken, eight of them and no JACK server starts on the
    machine (one wedged server in a suite run once cost 32 tests), until /dev/shm is cleared."""
    server = JackServer(unique_server_name("wedged"), DummySettings())
    await server.start()
    assert server.pid is not None and _registered(server.name)
    os.kill(server.pid, signal.SIGSTOP)
    await server.stop()
    assert not server.is_running
    assert not _registered(server.name), "the killed server's slot is still taken"


async def test_a_server_killed_from_outside_gives_back_its_slot_when_stopped() -> None:
    """A jackd that some other hand killed outright (kill -9, the OOM killer, a crash) leaves its
    slot taken: stopping it afterwards gives the slot back. Left taken, each such server costs
    one of JACK's eight slots on the machine until it is rebooted (three suite runs in a row on
    one machine once ended with no JACK server able to start)."""
    server = JackServer(unique_server_name("killed"), DummySettings())
    await server.start()
    assert server.pid is not None and _registered(server.name)
    os.kill(server.pid, signal.SIGKILL)
    await server.stop()
    assert not server.is_running
    assert not _registered(server.name), "the killed server's slot is still taken"


async def test_a_plugin_process_is_deaf_to_sigterm_and_ends_when_its_stdin_closes() -> None:
    """A plugin process (jalv) takes no SIGTERM, which could land on its JACK audio thread and
    hold JACK's whole graph while it closes (the dry path came 3.8 s after a crash so): the box's
    death, or systemd's SIGTERM to every process of the box, leaves it playing until its stdin
    closes, and then it ends by itself."""
    child = Child(["cat"], "deaf", os.environ, stdin=True, deaf=True)
    await child.start()
    try:
        async with asyncio.timeout(5):  # until it is cat (the deaf launcher has exec'd it)
            while Path(f"/proc/{child.pid}/comm").read_text().strip() != "cat":
                await asyncio.sleep(0.005)
        child.signal(signal.SIGTERM)
        child.signal(signal.SIGINT)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(child.exited()), 0.3)
        stdin = child.stdin
        assert stdin is not None
        stdin.close()
        assert await asyncio.wait_for(child.wait(), 5) == 0
    finally:
        await child.end(None, 1.0)
