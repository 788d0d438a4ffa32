"""A JACK server of our own: the dummy backend, for tests and the virtual box.

The box itself runs against a JACK (or ALSA) server that systemd starts; this
module starts a private ``jackd`` with the *dummy* backend, which keeps
perfect time without a sound card (see docs field notes, "JACK")::

    jackd -n NAME [--no-realtime | -R -P 70] -d dummy -r RATE -p PERIOD

Everything here runs on the asyncio loop's thread and never blocks it: the
server and the readiness probe (``jack_lsp``) are asyncio subprocesses.

A server name is one server at a time: the box's private server keeps its
name from one start to the next (:func:`appliance.app.private_server_name`),
and a box killed outright leaves its ``jackd`` ending on its own (SIGTERM
from ``setpriv --pdeathsig``), which can take seconds while JACK drops the
dead box's clients. Until that ``jackd`` has gone, the readiness probe would
be answered by *it*, not by the new server (which fails with "server already
active"), and the box would wire its plugins into a server about to vanish.
So a start first waits for any other ``jackd -n NAME`` to end, and ends it
if it will not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from ...core.errors import EngineError
from ..processes import Child

log = logging.getLogger("appliance.engine.jack.server")

#: How long a fresh server may take to answer (it is ready in ~150 ms here).
SERVER_START_TIMEOUT = 10.0
#: How long ``jackd`` may take to exit after SIGTERM, and again after SIGKILL.
SERVER_STOP_TIMEOUT = 5.0
#: How long one readiness probe (``jack_lsp``) may take.
PROBE_TIMEOUT = 2.0
#: Pause between readiness probes.
PROBE_INTERVAL = 0.05
#: Lines of jackd's output kept for error messages.
SERVER_OUTPUT_LINES = 40
#: jackd's lines about late cycles kept (:attr:`JackServer.xrun_lines`).
XRUN_LINES = 100
#: jackd's line for a late wakeup of the server itself (JACK 1.9.21's JackTimedDriver).
LATE_WAKEUP = "Process XRun"
#: jackd's line for a client that missed its cycle (JACK 1.9.21's JackEngine::CheckXRun).
CLIENT_LATE_LINE = re.compile(
    r"client = (.+?) (?:was not finished|finished after)|client (.+?) finished after"
)
#: Realtime priority asked for with ``-R``.
REALTIME_PRIORITY = 70
#: How long jackd may keep saying "server already active" for a name whose server has gone
#: (a jackd killed outright stays registered until the next start of that name clears it).
NAME_RELEASE_TIMEOUT = 5.0
#: How long another ``jackd`` of the same name (a killed box's, ending) may take to end on
#: its own before it is killed: JACK was seen busy for over 5 s dropping a dead box's clients.
PREDECESSOR_TIMEOUT = 10.0
#: How often to look whether it has ended.
PREDECESSOR_POLL = 0.05
#: What jackd says when a server of that name is running, or was killed outright.
ALREADY_ACTIVE = "server already active"


@dataclass(frozen=True)
class DummySettings:
    """How to run a dummy-backend JACK server.

    Attributes:
        sample_rate: frames per second (``-r``).
        period: frames per period (``-p``), the engine's buffer size.
        realtime: ask for realtime scheduling (``-R -P 70``); falls back to
            ``--no-realtime`` when the server cannot start that way.
    """

    sample_rate: int = 48000
    period: int = 128
    realtime: bool = False


def unique_server_name(prefix: str = "appliance") -> str:
    """A server name no other process on this machine is likely to use."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"


#: The box's own link to systemd, never handed to a child process.
SYSTEMD_ONLY = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})


def jack_environment(server_name: str | None) -> dict[str, str]:
    """Environment for a JACK client process aimed at ``server_name``.

    Clients never start a server of their own, and nobody asks D-Bus for the
    sound device (``JACK_NO_AUDIO_RESERVATION``). systemd's notification
    variables stay with the box: a child that notified would be refused
    (``NotifyAccess=main``) and log it.
    """
    env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ONLY}
    env["JACK_NO_START_SERVER"] = "1"
    env["JACK_NO_AUDIO_RESERVATION"] = "1"
    if server_name is not None:
        env["JACK_DEFAULT_SERVER"] = server_name
    return env


def servers_named(name: str, proc: Path = Path("/proc")) -> list[int]:
    """Process ids of the live ``jackd -n NAME`` processes on this machine (how
    :class:`JackServer` starts them). Blocking (reads ``/proc``): call it off the loop."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if stat[stat.rfind(")") + 2 :].startswith(("Z", "X")):
            continue  # dead, waiting to be reaped: it holds no server
        if not argv or not os.path.basename(argv[0].decode(errors="replace")).startswith("jackd"):
            continue
        if any(a == b"-n" and b == name.encode() for a, b in itertools.pairwise(argv)):
            found.append(int(entry.name))
    return found


class JackServer:
    """One ``jackd`` process with the dummy backend.

    All methods are coroutines for the asyncio loop's thread.

    Args:
        name: the server name (``-n``); a unique one is made up when omitted.
        settings: rate, period and scheduling.
        jackd: the server executable.
    """

    def __init__(
        self,
        name: str | None = None,
        settings: DummySettings | None = None,
        jackd: str = "jackd",
    ) -> None:
        self.name = name or unique_server_name()
        self.settings = settings or DummySettings()
        self.is_realtime = False
        self._jackd = jackd
        self._child: Child | None = None
        self._answered = False  # the running child answered clients (it holds a slot)
        self._last_words: list[str] = []  # of the last server of this name, for output_tail
        #: jackd's lines about late cycles (which client was late, or the server itself),
        #: the last :data:`XRUN_LINES`, each after the seconds since the server started.
        self.xrun_lines: collections.deque[str] = collections.deque(maxlen=XRUN_LINES)
        self._started_at = 0.0

    @property
    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self._child is not None and self._child.is_running

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._child.pid if self.is_running and self._child is not None else None

    async def start(self) -> None:
        """Start the server and wait until clients can connect.

        With ``settings.realtime`` it first tries realtime scheduling and
        falls back to ``--no-realtime`` if that start fails.

        Raises:
            EngineError: ``jackd`` is missing, exits, or does not answer
                within :data:`SERVER_START_TIMEOUT`.
        """
        if self.is_running:
            return
        attempts = [True, False] if self.settings.realtime else [False]
        failure = "not started"
        for realtime in attempts:
            try:
                await self._start_named(realtime)
            except EngineError as exc:
                failure = str(exc)
                log.warning("jack server %s (realtime=%s) failed: %s", self.name, realtime, exc)
                await self._reap()
                continue
            self.is_realtime = realtime
            log.info(
                "jack server %s up (%d Hz, %d frames, %s)",
                self.name,
                self.settings.sample_rate,
                self.settings.period,
                "realtime" if realtime else "no realtime",
            )
            return
        raise EngineError(f"jack server {self.name} did not start: {failure}")

    async def stop(self) -> None:
        """Stop the server: SIGTERM, wait, then SIGKILL. Safe to call twice."""
        if self._child is None:
            return
        if self._child.is_running:
            log.info("stopping jack server %s", self.name)
        await self._reap()

    def output_tail(self) -> str:
        """The server's last output lines (for error messages)."""
        if self._child is not None:
            return self._child.last_words("\n")
        return "\n".join(self._last_words)

    async def _start_named(self, realtime: bool) -> None:
        """Start once no other server of this name runs; while jackd says a server of this
        name is active, try again for a while.

        Another ``jackd`` of this name (the crashed box's, ending) is waited for
        first (:meth:`_outlive_predecessor`). A server killed outright stays
        registered though dead: the failed start clears it, and the next one works.
        """
        await self._outlive_predecessor()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NAME_RELEASE_TIMEOUT
        while True:
            try:
                await self._start_once(realtime)
                return
            except EngineError as exc:
                if ALREADY_ACTIVE not in str(exc) or loop.time() > deadline:
                    raise
                await self._reap()
                await asyncio.sleep(PROBE_INTERVAL * 4)

    async def _outlive_predecessor(self) -> None:
        """Wait until no other ``jackd`` of this name runs; kill one still there after
        :data:`PREDECESSOR_TIMEOUT` (wedged: the name is this server's to take)."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        killed = False
        while others := [pid for pid in await asyncio.to_thread(servers_named, self.name) if pid != self.pid]:
            if deadline is None:
                log.info("jack server %s: waiting for the old jackd %s to end", self.name, others)
                deadline = loop.time() + PREDECESSOR_TIMEOUT
            elif loop.time() > deadline:
                if killed:
                    return  # unkillable: the start says why it cannot take the name
                log.warning("jack server %s: the old jackd %s will not end; killing it", self.name, others)
                for pid in others:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                killed = True
                deadline = loop.time() + SERVER_STOP_TIMEOUT
            await asyncio.sleep(PREDECESSOR_POLL)

    async def _start_once(self, realtime: bool) -> None:
        scheduling = ["-R", "-P", str(REALTIME_PRIORITY)] if realtime else ["--no-realtime"]
        argv = [
            self._jackd,
            "-n",
            self.name,
            *scheduling,
            "-d",
            "dummy",
            "-r",
            str(self.settings.sample_rate),
            "-p",
            str(self.settings.period),
        ]
        env = jack_environment(None)
        self._started_at = time.monotonic()
        child = self._child = Child(
            argv, f"jackd {self.name}", env, on_line=self._note, tail=SERVER_OUTPUT_LINES, logger=log
        )
        try:
            await child.start()
        except OSError as exc:
            raise EngineError(f"cannot run {self._jackd}: {exc}") from exc
        try:
            await asyncio.wait_for(self._wait_ready(child), SERVER_START_TIMEOUT)
        except TimeoutError:
            raise EngineError(f"no answer within {SERVER_START_TIMEOUT} s: {self.output_tail()}") from None
        self._answered = True

    def _note(self, line: str) -> bool:
        """Keep a line about a late cycle in :attr:`xrun_lines`; every line goes on to the log."""
        if LATE_WAKEUP in line or CLIENT_LATE_LINE.search(line):
            self.xrun_lines.append(f"{time.monotonic() - self._started_at:.3f} s: {line}")
        return False

    async def _wait_ready(self, child: Child) -> None:
        while True:
            if child.returncode is not None:
                raise EngineError(f"jackd exited with {child.returncode}: {self.output_tail()}")
            if await self._answers() and child.returncode is None:
                return
            await asyncio.sleep(PROBE_INTERVAL)

    async def _answers(self) -> bool:
        """Whether ``jack_lsp`` can reach the server (it never starts one)."""
        probe = await asyncio.create_subprocess_exec(
            "jack_lsp",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=jack_environment(self.name),
        )
        try:
            return await asyncio.wait_for(probe.wait(), PROBE_TIMEOUT) == 0
        except TimeoutError:
            return False
        finally:
            if probe.returncode is None:  # timed out, or the caller was cancelled
                with contextlib.suppress(ProcessLookupError):
                    probe.kill()
                await probe.wait()

    async def _reap(self, reclaim: bool = True) -> None:
        """End the server. One that held its slot and did not exit cleanly (0 after SIGTERM)
        may leave the slot taken: it is reclaimed. The exit status alone cannot tell a signal:
        asyncio reports 255 for a child whose status it lost."""
        child, self._child = self._child, None
        answered, self._answered = self._answered, False
        if child is None:
            return
        killed = await child.end(None, SERVER_STOP_TIMEOUT)
        self._last_words = list(child.output)
        if killed:
            log.warning("jack server %s ignored SIGTERM and was killed", self.name)
        elif child.returncode != 0 and answered:
            log.warning("jack server %s had ended by %s", self.name, child.exit_reason())
        else:
            return
        if reclaim:
            await self._reclaim_slot()

    async def _reclaim_slot(self) -> None:
        """Give back the slot of a server that ended by a signal it cannot catch (JACK keeps it until a server
        of the same name starts again): start one, and stop it cleanly. Its last words stay
        in :meth:`output_tail`."""
        last_words = self._last_words
        try:
            await self._start_named(realtime=False)
        except EngineError as exc:
            log.warning("jack server %s: its slot may stay taken: %s", self.name, exc)
        await self._reap(reclaim=False)
        self._last_words = last_words
