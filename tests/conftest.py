"""Shared fixtures and the one rule that skips Carla tests where Carla is absent."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import fcntl
import gc
import os
import shutil
import socket
import subprocess
import threading
import time
import types
import warnings
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import pytest_asyncio

from appliance.engine import OwnPlugins
from appliance.engine.carla import unavailable as carla_unavailable
from appliance.engine.faders import FADER_URI
from appliance.engine.jack.server import DummySettings, JackServer, unique_server_name
from appliance.engine.meters import METER_URI, TUNER_URI
from appliance.plugins import lilv
from appliance.plugins.catalog import Catalog
from tests.boxproc import ROOT, SERVER_PERIOD
from tests.notify import listen
from tests.rig import Rig, end_leftovers, leftovers

#: The rate and period of every test server: the box's rate, and the smallest period at
#: which the server has no xrun of its own over a test (measured: hil/bench_rig_server.py).
RIG_SAMPLE_RATE = 48000
RIG_PERIOD = SERVER_PERIOD

#: Where each test process writes the stacks of a test that hangs (see :func:`stacks_of_a_hang`).
HANGS = ROOT / "out" / "hangs"
#: How long before pytest-timeout ends a hung test its stacks are written, seconds.
HANG_MARGIN = 3.0

#: What the always-tested engine needs; ``scripts/setup`` installs all of it.
JALV_TOOLS = ("jackd", "jack_lsp", "jalv", "stdbuf")


# ======================================================================================
# Carla: every test that needs it is skipped, with the reason, where it is absent.
# ======================================================================================


def is_carla_test(item: pytest.Item) -> bool:
    """A test needs Carla when it is marked ``carla`` or parametrised with the value ``carla``.

    Test modules that are about Carla mark themselves whole (``pytestmark``),
    and the contract and end-to-end suites are parametrised over engine names,
    so a new Carla test is caught by this rule without remembering a marker.
    """
    if item.get_closest_marker("carla") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "carla" in callspec.params.values()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = carla_unavailable(None)
    if why is None:
        return
    skip = pytest.mark.skip(reason=f"Carla: {why}")
    for item in items:
        if is_carla_test(item):
            item.add_marker(skip)


@contextlib.contextmanager
def small_partition(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` made a real, small file system (a tmpfs of ``size``, as ``mount -o size=``
    takes it): a card that fills. Skips the test, saying why, where it cannot be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs as the data partition here: {mounted.stderr.decode().strip()}"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def require_jalv_tools() -> None:
    """Fail (never skip) when a tool of the always-tested engine is missing."""
    missing = [tool for tool in JALV_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run ./scripts/setup (jackd2, jalv, coreutils)")


# ======================================================================================
# Quiet tests. The suite runs in two pytest-xdist workers on two cores. A few recordings
# (the rig's virtual runs, a crashed box's dry path against a 2 s bound) spoiled a take in
# about one run in three when the other worker started and ended processes beside them
# (hil/README.md, "Rig server benchmark"). A test marked ``quiet`` runs alone: it waits
# for the other worker's test to end, and the other worker waits for it. Writer first: a
# quiet test waiting keeps new tests from starting, so it is never starved.
# ======================================================================================

#: Every worker of one run shares these two files (pytest-xdist names the run).
LOCKS = ROOT / "out" / "locks"


@contextlib.contextmanager
def machine_share(item: pytest.Item) -> Iterator[None]:
    """The machine for ``item``: alone if it is marked ``quiet``, shared with the other worker if not."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:  # one process: every test runs alone already
        yield
        return
    LOCKS.mkdir(parents=True, exist_ok=True)
    quiet = item.get_closest_marker("quiet") is not None
    with open(LOCKS / f"{run}.turnstile", "a") as turnstile, open(LOCKS / f"{run}.room", "a") as room:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(room, fcntl.LOCK_EX if quiet else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Setup, call and teardown of each test (its module's box starting or ending included)
    inside its share of the machine; outside pytest-timeout's clock, which starts within."""
    with machine_share(item):
        return (yield)


# ======================================================================================
# Virtual rig: a private JACK dummy server and the play/record test clients.
# Used by the engine contract suite (tests/test_engine_contract.py) and audio tests.
# ======================================================================================


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that ran on ``jack_server`` shows the server's last words.

    A box that cannot reach JACK is often JACK's doing; its output is then
    the only witness left (CI prints the report, not the machine).
    """
    report: pytest.TestReport = yield
    server = getattr(item, "funcargs", {}).get("jack_server")
    if report.failed and isinstance(server, JackServer):
        report.sections.append((f"jackd {server.name}: last lines", server.output_tail() or "(nothing)"))
    return report


# ======================================================================================
# A hung test's stacks. pytest-timeout ends a test that hangs (its thread method: a hang
# in a native call holding the GIL is beyond signals) and prints every thread's stack,
# but a pytest-xdist worker has no terminal: the stacks were lost and the report said only
# "worker crashed". So each test process also has faulthandler write them to a file of its
# own a little before the timeout, and the run's summary prints them.
# ======================================================================================


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without workers)
        shutil.rmtree(HANGS, ignore_errors=True)


@pytest.fixture(scope="session")
def hang_file() -> Iterator[IO[str]]:
    HANGS.mkdir(parents=True, exist_ok=True)
    with open(HANGS / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{os.getpid()}.txt", "w") as file:
        yield file


#: Where a coroutine, generator or async generator keeps its frame, and what it awaits.
FRAMES = ("cr_frame", "gi_frame", "ag_frame")
AWAITS = ("cr_await", "gi_yieldfrom", "ag_await")


def _write_stacks(file: IO[str]) -> None:
    """Every thread's stack, then every unfinished asyncio task's: a test hung on an await
    shows only the loop's idle select in its thread's stack; its tasks say what it waits for."""
    file.write("Thread 0x: every thread\n")
    file.flush()
    faulthandler.dump_traceback(file, all_threads=True)
    for _ in range(3):  # the loop's thread may change the set of objects meanwhile
        try:
            tasks = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]
            break
        except RuntimeError:
            continue
    else:
        tasks = []
    # A fixture's teardown is an async generator the finalizer's task drives: its awaits are
    # not reachable from the task, so every async generator suspended in an await is listed too.
    generators: list[Any] = []
    with contextlib.suppress(RuntimeError):
        generators = [o for o in gc.get_objects() if isinstance(o, types.AsyncGeneratorType) and o.ag_await]
    chains = [(f"asyncio task {task.get_name()}", task.get_coro()) for task in tasks]
    chains += [(f"async generator {gen.__qualname__}", gen) for gen in generators]
    for what, awaited in chains:
        file.write(f"\n-- {what}, awaiting (outermost first):\n")
        while awaited is not None:  # down the chain of awaits, to the future it waits on
            frame = next((getattr(awaited, a) for a in FRAMES if hasattr(awaited, a)), None)
            if frame is None:
                file.write(f"  {awaited!r}\n")
                break
            code = frame.f_code
            file.write(f"  File {code.co_filename!r}, line {frame.f_lineno}, in {code.co_name}\n")
            awaited = next((getattr(awaited, a) for a in AWAITS if hasattr(awaited, a)), None)
    file.write(f"\n-- this process's children:\n{_children()}\n")
    file.flush()


def _children() -> str:
    """``ps`` of this process's children (state D: stuck in the kernel)."""
    found = subprocess.run(
        ["ps", "-o", "pid,ppid,stat,etimes,args", "--ppid", str(os.getpid())],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip()


@pytest.fixture(autouse=True)
def stacks_of_a_hang(request: pytest.FixtureRequest, hang_file: IO[str]) -> Iterator[None]:
    """Every thread's and task's stack, written to :data:`HANGS` shortly before the test's timeout."""
    marker = request.node.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else float(request.config.getini("timeout"))
    hang_file.write(
        f"\n== {request.node.nodeid}: stacks if it is still running after {timeout - HANG_MARGIN:g} s\n"
    )
    hang_file.flush()
    started = time.monotonic()

    def write() -> None:
        if (began := _TEARDOWN_BEGAN.get(request.node.nodeid)) is not None:
            hang_file.write(f"its teardown began {began - started:.1f} s after its setup\n")
        _write_stacks(hang_file)

    timer = threading.Timer(max(1.0, timeout - HANG_MARGIN), write)
    timer.daemon = True
    timer.start()
    # The last resort: pytest-timeout's thread and the timer above need the GIL, which a native
    # call can hold for good (one stalled a run for 20 minutes). faulthandler's own C thread does
    # not: past the timeout it writes the stacks and ends this test process, and the run goes on.
    faulthandler.dump_traceback_later(timeout + HANG_MARGIN, exit=True, file=hang_file)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        timer.cancel()
        _TEARDOWN_BEGAN.pop(request.node.nodeid, None)


#: When each running test's teardown began (a hang's stacks say whether the test or its
#: fixtures' teardown took the time).
_TEARDOWN_BEGAN: dict[str, float] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    _TEARDOWN_BEGAN[item.nodeid] = time.monotonic()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The stacks of every test that hung, from each test process's file."""
    for path in sorted(HANGS.glob("*.txt")) if HANGS.is_dir() else []:
        text = path.read_text(errors="replace")
        hung = [part for part in text.split("\n== ") if "Thread 0x" in part or "Current thread" in part]
        for part in hung:
            terminalreporter.write_sep("=", f"a test hung ({path.name})")
            terminalreporter.write_line(part.strip())


@pytest.fixture(autouse=True)
def rig_processes_end_with_their_test() -> Iterator[None]:
    """The rig processes a test started and left running (it failed before closing its rig)
    end with it: their JACK clients would hold up the next test's servers."""
    before = set(leftovers())
    yield
    left = [proc for proc in leftovers() if proc not in before]
    if left:
        end_leftovers(only=left)
        warnings.warn(f"the test left rig processes running (ended now): {left}", stacklevel=1)


@pytest_asyncio.fixture
async def jack_server() -> AsyncIterator[JackServer]:
    """A fresh dummy-backend JACK server (48000 Hz, :data:`RIG_PERIOD` frames), realtime where allowed.

    Realtime, as the box runs JACK: fewer xruns, and a crashed client is
    dropped from the graph (on a non-realtime server JACK2 was seen to keep a
    crashed many-client process in its graph for good; ``is_realtime`` says
    which one a test got).
    """
    require_jalv_tools()
    server = JackServer(
        unique_server_name("test"),
        DummySettings(sample_rate=RIG_SAMPLE_RATE, period=RIG_PERIOD, realtime=True),
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        if server.xrun_lines:  # printed beside a failure: who made a take spoiled
            print(f"jackd {server.name} on its late cycles:", *server.xrun_lines, sep="\n  ")


@pytest.fixture(scope="session")
def own_plugins() -> OwnPlugins:
    """The box's own plugins (faders, meters, tuner), read from their LV2 data as the box does."""
    uris = {"fader": FADER_URI, "meter": METER_URI, "tuner": TUNER_URI}
    catalog = Catalog.build([], lilv.scan_plugins(uris=set(uris.values())))
    found = {role: catalog.lookup(uri) for role, uri in uris.items()}
    missing = [uris[role] for role, plugin in found.items() if plugin is None]
    assert not missing, f"{missing} not installed (scripts/setup installs x42-plugins)"
    return OwnPlugins(**found)


@pytest_asyncio.fixture
async def rig(jack_server: JackServer) -> AsyncIterator[Rig]:
    """A one-channel :class:`tests.rig.Rig` open on ``jack_server``."""
    rig = Rig(jack_server.name, channels=1)
    await rig.open()
    try:
        yield rig
    finally:
        await rig.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """systemd's end of NOTIFY_SOCKET: its path is ``sock.getsockname()``."""
    sock = listen(tmp_path / "notify")
    try:
        yield sock
    finally:
        sock.close()
