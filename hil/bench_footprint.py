"""The box's footprint and start: every process's memory, start to READY and to healthy.

Run ``python -m hil.bench_footprint [--starts 3] [--engines jalv,carla] [--servers own,external]``.

For each engine (jalv; Carla when it is installed: ``APPLIANCE_NO_CARLA=1``
hides it) and each JACK server arrangement:

* **own**: the virtual box as ``./scripts/run`` starts it, with its own
  realtime dummy JACK server (48 kHz, 128 frames) as a child;
* **external**: as on the Pi, where JACK is a service of its own: the box
  connects to a server this benchmark starts, and runs the dry-path keeper.

the box (``python -m appliance run``, the demo board) starts once on a fresh
data folder (a **first start**: the full LV2 scan, then the demo board
saved) and ``--starts`` times again on the same folder (**cached**: the scan
cache and the saved board there). Each start is timed from the spawn to
``READY=1`` on a ``NOTIFY_SOCKET`` datagram socket (systemd's view of it) and
to the first ``/healthz`` that says ``running``; ``--settle`` seconds later
the memory of every process of the box is read from
``/proc/PID/smaps_rollup``: RSS, PSS (shared pages divided among the
processes that map them: the sum over processes is what the box costs) and
own (private pages). JACK's graph is a ~100 MiB shared-memory segment that
libjack locks into every client (jackd, each jalv, the Carla host, the box's
own wiring client), so each of them shows it whole in its RSS; it is printed
apart, and the target for the control process is its RSS without it.

The floor, measured in the same run: a bare interpreter (``python -c pass``
to exit, and one idling: its memory), and a bare jackd with the same
settings (start until it answers, its memory alone).

Targets: READY < 1 s on every cached start; the control process ≤ 60 MiB
(RSS without JACK's segment). Bytecode is compiled once into a folder of the
run (``PYTHONPYCACHEPREFIX``), as an installed box has it.

A measurement, not a test: it exits 0 whatever the figures. Loopback only;
every server it starts, it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from appliance.app import private_server_name
from appliance.engine.carla import unavailable as carla_unavailable
from appliance.engine.jack.server import DummySettings, JackServer
from hil.figures import spread
from tests.boxproc import BoxProcess, virtual_config

ROOT = Path(__file__).resolve().parent.parent
#: The virtual box's own server, as shipped (config/virtual.yaml).
SHIPPED = yaml.safe_load((ROOT / "config" / "virtual.yaml").read_text())["engine"]["jack"]["dummy"]
SERVER = DummySettings(SHIPPED["rate"], SHIPPED["period"], realtime=SHIPPED["realtime"])

#: READY within this long of the spawn, with a cached scan.
TARGET_READY_MS = 1000.0
#: The control process's RSS without JACK's shared segment.
TARGET_CONTROL_MIB = 60.0
#: How long a start may take before the run gives up on it.
START_TIMEOUT = 60.0
#: How often the start is looked at (READY datagram, /healthz).
POLL = 0.005
#: Runs of the bare interpreter for its start time.
BARE_PYTHON_RUNS = 10
#: How long a box's JACK server may take to end after the box.
SERVER_END_TIMEOUT = 10.0
#: What every box of the run imports, compiled before the first start.
WARM_IMPORTS = (
    "appliance.__main__",
    "appliance.plugins.lilv",
    "appliance.engine.jalv.engine",
    "appliance.engine.jack.drypath",
    "appliance.engine.carla.engine",
    "appliance.engine.carla.host",
)


@dataclass(frozen=True)
class Memory:
    """One process's memory, KiB."""

    rss: int
    pss: int
    own: int
    #: RSS in JACK's shared-memory segments (``/dev/shm/jack*``).
    jack: int

    @staticmethod
    def of(pid: int) -> Memory | None:
        """Read from /proc; None when the process has gone."""
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            maps = Path(f"/proc/{pid}/smaps").read_text()
        except OSError:
            return None
        fields = {}
        for line in rollup.splitlines()[1:]:
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0])
        jack = 0
        in_jack = False
        for line in maps.splitlines():
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                in_jack = len(head) >= 6 and head[5].startswith("/dev/shm/jack")
            elif in_jack and line.startswith("Rss:"):
                jack += int(head[1])
        return Memory(fields["Rss"], fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"], jack)


@dataclass
class Process:
    pid: int
    what: str
    memory: Memory


@dataclass
class Start:
    ready_ms: float
    healthy_ms: float
    processes: list[Process] = field(default_factory=list)

    @property
    def control(self) -> Memory:
        return self.processes[0].memory

    def total_pss(self, jackd: bool = True) -> int:
        return sum(p.memory.pss for p in self.processes if jackd or p.what != "jackd")


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def _family(pid: int) -> list[int]:
    """``pid`` and every process descended from it, parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue += sorted(children.get(current, []))
    return found


def _what(pid: int) -> str:
    """What a process of the box is, from its command line."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return "(gone)"
    program = os.path.basename(argv[0])
    if program.startswith("jackd"):
        return "jackd"
    if program == "jalv" and "-n" in argv:
        name = argv[argv.index("-n") + 1]
        return "jalv " + name.split("-", 2)[-1]
    if "-m" in argv:
        module = argv[argv.index("-m") + 1]
        return {
            "appliance": "box (control process)",
            "appliance.engine.carla.host": "Carla host",
            "appliance.engine.jack.drypath": "dry-path keeper",
        }.get(module, module)
    return " ".join(argv)[:60]


def _environment(pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["JACK_NO_AUDIO_RESERVATION"] = "1"
    return env


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
            return bool(json.loads(response.read()).get("running"))
    except (OSError, ValueError):
        return False


def start_box(config: Path, env: dict[str, str], settle: float) -> Start:
    """Start the box, time READY and healthy, read every process's memory, stop it."""
    notify_path = config.parent / "notify.sock"
    notify_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    box = BoxProcess(config, env={**env, "NOTIFY_SOCKET": str(notify_path)})
    argv = [sys.executable, "-m", "appliance", "run", "--config", str(config), "--port", str(box.port)]
    ready = healthy = None
    try:
        with open(box.log_path, "ab") as log:
            spawned = time.monotonic()
            box.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env={**box.env}, start_new_session=True
            )
        deadline = spawned + START_TIMEOUT
        while ready is None:  # nothing else runs meanwhile: the box has the machine to itself
            if time.monotonic() > deadline or box.proc.poll() is not None:
                raise RuntimeError(f"the box did not come up: {box.log_tail()}")
            said = listener.recv(4096).decode() if select.select([listener], [], [], POLL)[0] else ""
            if "READY=1" in said.splitlines():
                ready = time.monotonic() - spawned
        while healthy is None:  # /healthz answers from READY on (the server starts just before)
            if time.monotonic() > deadline or box.proc.poll() is not None:
                raise RuntimeError(f"the box did not become healthy: {box.log_tail()}")
            if _healthy(box.base):
                healthy = time.monotonic() - spawned
            else:
                time.sleep(POLL)
        time.sleep(settle)
        processes = []
        for pid in _family(box.proc.pid):
            memory = Memory.of(pid)
            if memory is not None:
                processes.append(Process(pid, _what(pid), memory))
        return Start(ready * 1000, healthy * 1000, processes)
    finally:
        box.stop()
        listener.close()
        if box.leftovers:
            print(f"  note: left behind by the box and killed: {box.leftovers}")


def _servers_named(name: str) -> list[int]:
    """The live ``jackd -n NAME`` processes."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if argv and os.path.basename(argv[0]).startswith(b"jackd") and name.encode() in argv:
            found.append(int(entry.name))
    return found


def _end_servers(name: str) -> None:
    """Wait for the box's own JACK server to end; kill it (and say so) if it will not."""
    deadline = time.monotonic() + SERVER_END_TIMEOUT
    while _servers_named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in _servers_named(name):
        print(f"  note: jackd {name} (pid {pid}) outlived its box; killed")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


# -- the floor -----------------------------------------------------------------


@dataclass
class Floor:
    python_ms: list[float]
    python: Memory
    jackd_ms: float
    jackd: Memory


async def measure_floor(env: dict[str, str]) -> Floor:
    times = []
    for _ in range(BARE_PYTHON_RUNS):
        began = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        times.append((time.monotonic() - began) * 1000)
    idle = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE, env=env
    )
    try:
        time.sleep(0.3)
        python = Memory.of(idle.pid)
    finally:
        assert idle.stdin is not None
        idle.stdin.close()
        idle.wait()
    server = JackServer(settings=SERVER)
    began = time.monotonic()
    await server.start()
    try:
        jackd_ms = (time.monotonic() - began) * 1000
        await asyncio.sleep(0.5)
        assert server.pid is not None
        jackd = Memory.of(server.pid)
    finally:
        await server.stop()
    assert python is not None and jackd is not None
    return Floor(times, python, jackd_ms, jackd)


# -- one engine, one server arrangement -------------------------------------------


async def measure(
    engine: str, server: str, starts: int, settle: float, env: dict[str, str], folder: Path
) -> tuple[Start, list[Start]]:
    """A first start and ``starts`` cached ones, each on the same fresh data folder."""
    tmp = folder / f"{engine}-{server}"
    tmp.mkdir()
    external: JackServer | None = None
    box_env = dict(env)
    if engine == "jalv":
        box_env["APPLIANCE_NO_CARLA"] = "1"
    try:
        if server == "external":
            external = JackServer(settings=SERVER)
            await external.start()
            config = virtual_config(tmp, jack_server=external.name, dummy=False, engine=engine, scanned=False)
        else:
            config = virtual_config(tmp, own_server_name=True, engine=engine, scanned=False)
            shipped = yaml.safe_load(config.read_text())
            shipped["engine"]["jack"]["dummy"] = SHIPPED  # the tests' period is not the virtual box's
            config.write_text(yaml.safe_dump(shipped))
        own_name = private_server_name(tmp / "data")
        runs = []
        for _ in range(1 + starts):
            runs.append(await asyncio.to_thread(start_box, config, box_env, settle))
            if server == "own":
                await asyncio.to_thread(_end_servers, own_name)
        return runs[0], runs[1:]
    finally:
        if external is not None:
            await external.stop()


def report(engine: str, server: str, first: Start, cached: list[Start], floor: Floor) -> None:
    floor_ms = statistics.median(floor.python_ms) + floor.jackd_ms
    ready = [s.ready_ms for s in cached]
    arrangement = "its own JACK server (the virtual box)"
    if server == "external":
        arrangement = "an external JACK server (as on the Pi)"
    print(f"\n{engine}, {arrangement}")
    print(f"  start to READY     first start {first.ready_ms:6.0f} ms   cached {spread(ready)}")
    verdict = "PASS" if max(ready) < TARGET_READY_MS else "FAIL"
    print(
        f"{'':21s}cached max {max(ready):.0f} ms  target < {TARGET_READY_MS:.0f} ms  {verdict};  "
        f"floor python + jackd {floor_ms:.0f} ms (box/floor ×{statistics.median(ready) / floor_ms:.1f})"
    )
    healthy = [s.healthy_ms for s in cached]
    print(f"  start to healthy   first start {first.healthy_ms:6.0f} ms   cached {spread(healthy)}")
    last = cached[-1]
    for label, start in (("first start", first), ("cached", last)):
        control = start.control
        without = control.rss - control.jack
        verdict = "PASS" if without / 1024 <= TARGET_CONTROL_MIB else "FAIL"
        print(
            f"  control process, {label}: RSS {mib(control.rss)}, JACK's segment "
            f"{mib(control.jack)}, without it {mib(without)} "
            f"(target ≤ {TARGET_CONTROL_MIB:.0f} MiB {verdict}; bare python {mib(floor.python.rss)}); "
            f"PSS {mib(control.pss)}; own {mib(control.own)}"
        )
    print(f"  every process, cached start ({len(last.processes)}):")
    print(f"    {'process':42s} {'RSS':>10s} {'PSS':>10s} {'own':>10s}")
    for process in last.processes:
        m = process.memory
        print(f"    {process.what[:42]:42s} {mib(m.rss):>10s} {mib(m.pss):>10s} {mib(m.own):>10s}")
    total = "total (the whole box)" if server == "own" else "total (the box; JACK is a service apart)"
    own = sum(p.memory.own for p in last.processes)
    print(f"    {total:42s} {'':10s} {mib(last.total_pss()):>10s} {mib(own):>10s}")
    print(f"    the first start's total PSS: {mib(first.total_pss())}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.bench_footprint", description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=3, help="cached starts per engine (default 3)")
    parser.add_argument("--engines", default="jalv,carla", help="jalv, carla or both (default)")
    parser.add_argument("--servers", default="own,external", help="own, external or both (default)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after healthy before memory")
    parser.add_argument("--keep", type=Path, help="keep the run's files (configs, box logs) in this folder")
    args = parser.parse_args(argv)
    engines = [e for e in args.engines.split(",") if e]
    if "carla" in engines and (why := carla_unavailable(None)) is not None:
        print(f"carla: NOT AVAILABLE ({why})")
        engines.remove("carla")
    kept = contextlib.nullcontext(str(args.keep)) if args.keep else None
    with kept or tempfile.TemporaryDirectory(prefix="bench-footprint-") as name:
        folder = Path(name)
        folder.mkdir(parents=True, exist_ok=True)
        env = _environment(folder / "pycache")
        for module in WARM_IMPORTS:  # each on its own: the Carla host's module may not import here
            warm = [sys.executable, "-c", f"import {module}"]
            subprocess.run(warm, env=env, capture_output=True, check=False)
        print(
            f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; bytecode compiled beforehand "
            f"(PYTHONPYCACHEPREFIX), as an installed box has it; memory {args.settle:.0f} s after healthy"
        )
        floor = await measure_floor(env)
        print(
            f"floor: python -c pass {spread(floor.python_ms)};  bare python RSS {mib(floor.python.rss)} "
            f"PSS {mib(floor.python.pss)} own {mib(floor.python.own)}"
        )
        print(
            f"       bare jackd (dummy, {SERVER.sample_rate} Hz, {SERVER.period} frames, realtime) "
            f"up in {floor.jackd_ms:.0f} ms; "
            f"RSS {mib(floor.jackd.rss)} (its segment {mib(floor.jackd.jack)}) PSS {mib(floor.jackd.pss)} "
            f"own {mib(floor.jackd.own)}"
        )
        for server in [s for s in args.servers.split(",") if s]:
            for engine in engines:
                first, cached = await measure(engine, server, args.starts, args.settle, env, folder)
                report(engine, server, first, cached, floor)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
