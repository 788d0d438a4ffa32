"""The child processes the engines start (jackd, jalv plugins, Carla hosts, the dry-path keeper).

:class:`Child` is the one way they are started and ended: tied to the box's
life (:func:`dies_with_parent`), their output read for as long as they live
(so a pipe never fills) and kept as a short tail for error messages, their
end awaited and described (:func:`describe_exit`), and ended politely, then
with SIGTERM, then SIGKILL (:func:`end_process`).

Loop thread only.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger("appliance.engine")


def dies_with_parent(argv: list[str], signal_name: str = "TERM") -> list[str]:
    """``argv`` run so that it gets SIGTERM (or ``signal_name``) when the box dies, even by SIGKILL.

    No JACK server, plugin or Carla host outlives a crashed box: each ends
    cleanly (a jackd killed outright would keep its slot among JACK's eight
    until a server of the same name starts again). util-linux's ``setpriv``
    (always installed on Debian); the signal is tied to the thread that
    starts the child, here always the loop's.
    """
    return ["setpriv", "--pdeathsig", signal_name, "--", *argv]


#: Runs its arguments with SIGTERM and SIGINT blocked (a blocked signal stays blocked across
#: exec); one that cannot run exits 127 naming it, as ``setpriv`` does.
_SHIELD = """import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
try:
    os.execvp(sys.argv[1], sys.argv[1:])
except OSError as exc:
    sys.stderr.write(f"{sys.argv[1]}: {exc.strerror}\\n")
    sys.exit(127)
"""


def shielded(argv: list[str]) -> list[str]:
    """``argv`` run deaf to SIGTERM and SIGINT: it ends when its stdin closes (or by SIGKILL).

    For a plugin process in JACK's graph (jalv): a signal may land on any of
    its threads, and one that interrupts its JACK audio thread stops that
    client mid-graph; a jalv told by SIGTERM to end (the box's death sending
    it, or systemd's stop of the box's cgroup, to every plugin at once) then
    held JACK's whole graph for 3.8 s and more (measured: the dry path came
    after 3.8 s; ended by its stdin closing instead, 0.18 s). SIGKILL is no
    way out either: a chain of plugins killed at once made JACK 1.9.21 wedge
    for good in 1 of 18 kills (its xrun notices overflow a socket). So such
    a process gets neither signal, and ends, cleanly, when the box's end of
    its stdin closes (the box exiting, however it exits, closes it).
    """
    return [sys.executable, "-S", "-c", _SHIELD, *argv]


def describe_exit(returncode: int) -> str:
    """How a child process ended: ``exit status 1`` or ``signal SIGKILL``."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


async def end_process(
    proc: asyncio.subprocess.Process, ask: Callable[[], None] | None, timeout: float, name: str
) -> bool:
    """Ask a child to exit, then SIGTERM, then SIGKILL, each given ``timeout`` seconds.

    Args:
        proc: the child.
        ask: the polite request (close its stdin, send ``quit``), if it has one;
            without one, SIGTERM comes at once.
        timeout: how long each step may take.
        name: for the log, if it will not die.

    Returns:
        True when it took SIGKILL (it ignored the rest).
    """
    steps: list[Callable[[], None] | None] = [proc.terminate, proc.kill]
    if ask is not None:
        steps.insert(0, None)
        if proc.returncode is None:
            with contextlib.suppress(OSError):
                ask()
    killed = False
    for stop in steps:
        if proc.returncode is not None:
            break
        if stop is not None:
            killed = stop == proc.kill
            with contextlib.suppress(ProcessLookupError):
                stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout)
    if proc.returncode is None:
        log.error("%s (pid %d) would not die", name, proc.pid)
    return killed


#: How long the output of a child that has ended may take to be read to its end.
LAST_WORDS_TIMEOUT = 0.5


class Child:
    """One child process of the box: started, its output pumped, ended.

    Args:
        argv: the command line (run under :func:`dies_with_parent`).
        name: for log lines.
        env: its environment (a JACK client's: ``jack.server.jack_environment``).
        stdin: give it a pipe (:attr:`stdin`), else ``/dev/null``.
        output: read its stdout and stderr (merged), else discard them.
        on_line: gets each output line (stripped) and says whether it was
            consumed (then it is kept out of the tail and the log).
        tail: how many output lines :meth:`last_words` keeps.
        pass_fds: file descriptors it inherits.
        deaf: run it :func:`shielded` (it ends when its stdin closes) instead
            of :func:`dies_with_parent`; only with ``stdin``.
        death_signal: the signal it gets when the box dies (not ``deaf``): ``TERM``, or
            ``KILL`` for a program whose own SIGTERM handler may hang.
        line_limit: the longest output line it may write, bytes.
        logger: where its output goes, at debug level.
    """

    def __init__(
        self,
        argv: Sequence[str],
        name: str,
        env: Mapping[str, str],
        *,
        stdin: bool = False,
        output: bool = True,
        on_line: Callable[[str], bool] | None = None,
        tail: int = 20,
        pass_fds: Sequence[int] = (),
        logger: logging.Logger = log,
        deaf: bool = False,
        death_signal: str = "TERM",
        line_limit: int = 1 << 16,
    ) -> None:
        if deaf and not stdin:
            raise ValueError("a child deaf to signals must have a stdin to end it by")
        self.argv = list(argv)
        self.name = name
        self.env = dict(env)
        self.output: collections.deque[str] = collections.deque(maxlen=tail)
        self._stdin = stdin
        self._output = output
        self._on_line = on_line
        self._pass_fds = tuple(pass_fds)
        self._log = logger
        self._deaf = deaf
        self._death_signal = death_signal
        self._line_limit = line_limit
        self._proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Run it.

        Raises:
            OSError: it cannot run at all (the caller says what that means).
        """
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        self._proc = await asyncio.create_subprocess_exec(
            *(shielded(self.argv) if self._deaf else dies_with_parent(self.argv, self._death_signal)),
            stdin=pipe if self._stdin else devnull,
            stdout=pipe if self._output else devnull,
            stderr=asyncio.subprocess.STDOUT if self._output else devnull,
            env=self.env,
            pass_fds=self._pass_fds,
            limit=self._line_limit,
        )
        if self._proc.stdout is not None:
            self._pump = asyncio.get_running_loop().create_task(self._read(self._proc.stdout))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def stdin(self) -> asyncio.StreamWriter | None:
        return self._proc.stdin if self._proc is not None else None

    def last_words(self, separator: str = " | ") -> str:
        """Its last output lines, for error messages."""
        return separator.join(line for line in self.output if line)

    def exit_reason(self) -> str:
        """``exit status 1`` or ``signal SIGKILL``, or ``still running``."""
        code = self.returncode
        return describe_exit(code) if code is not None else "still running"

    def signal(self, sig: signal.Signals) -> None:
        """Send it a signal, if it runs."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    async def exited(self) -> int:
        """Its exit status, as soon as it has exited."""
        assert self._proc is not None
        return await self._proc.wait()

    async def wait(self) -> int:
        """Its exit status once it has exited, with its last words read."""
        code = await self.exited()
        if self._pump is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._pump), LAST_WORDS_TIMEOUT)
        return code

    async def end(self, ask: Callable[[], None] | None, timeout: float) -> bool:
        """Ask it to exit (``ask``, e.g. close its stdin), then SIGTERM, then SIGKILL
        (:func:`end_process`); returns once it is gone and its output read.

        Returns:
            True when it took SIGKILL.
        """
        killed = False
        if self._proc is not None:
            killed = await end_process(self._proc, ask, timeout, self.name)
        pump, self._pump = self._pump, None
        if pump is not None:
            try:
                await asyncio.wait_for(pump, LAST_WORDS_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                pump.cancel()
        return killed

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            if self._on_line is not None and self._on_line(text):
                continue
            self.output.append(text)
            self._log.debug("%s: %s", self.name, text)
