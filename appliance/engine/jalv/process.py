"""One ``jalv`` process hosting one plugin: its command line, its stdin, its end.

jalv facts this relies on (jalv 1.6, see the design field notes): ``-x -n NAME``
gives an exact client name, ports are ``NAME:SYMBOL``, ``-c SYM=VAL`` sets
initial values, ``set SYMBOL VALUE`` on stdin sets a control (no clamping),
EOF on stdin makes it exit, stdout is block-buffered unless run under
``stdbuf -oL``, an unknown URI prints "Failed to find plugin" then crashes,
and ``monitors`` prints each output control as ``SYMBOL = VALUE`` (``-p``
prints nothing without a UI).

Loop thread only. Writing never waits: values go into the pipe's transport;
a jalv that stops reading its stdin (:data:`STDIN_BACKLOG_LIMIT` unsent) is
called stuck and killed once, so that the engine restarts it with its values.
"""

from __future__ import annotations

import collections
import logging
import re
import signal
from collections.abc import Callable, Iterable, Mapping

from ...core.errors import PluginLoadFailed
from ..jack.server import jack_environment
from ..processes import Child

log = logging.getLogger("appliance.engine.jalv.engine")

#: How long a jalv may take to exit after EOF, and again after SIGTERM.
PLUGIN_STOP_TIMEOUT = 2.0
#: Unsent ``set`` bytes a jalv may have waiting before it is called stuck and killed.
STDIN_BACKLOG_LIMIT = 1 << 20
#: Lines of a jalv's output kept for error messages.
OUTPUT_LINES = 20
#: One output control as ``monitors`` prints it.
READING = re.compile(r"([A-Za-z_][A-Za-z0-9_]*) = (-?[0-9.]+(?:e[-+]?[0-9]+)?)")


def number(value: float) -> str:
    """A value as jalv's ``set`` and ``-c`` parse it."""
    return f"{float(value):.9g}"


def jalv_argv(jalv: str, client_name: str, uri: str, values: Mapping[str, float]) -> list[str]:
    """The command line: line-buffered output, exact client name, initial values."""
    argv = ["stdbuf", "-oL", jalv, "-x", "-n", client_name]
    for symbol, value in values.items():
        argv += ["-c", f"{symbol}={number(value)}"]
    argv.append(uri)
    return argv


class JalvProcess:
    """One running ``jalv``.

    Args:
        argv: from :func:`jalv_argv`.
        server_name: the JACK server it joins.
        name: for log lines (its JACK client name).
        on_reading: gets ``(symbol, value)`` of each output control it reports
            (:meth:`ask_readings`) whose symbol is in ``monitors``.
        monitors: the plugin's output-control symbols.
    """

    def __init__(
        self,
        argv: list[str],
        server_name: str | None,
        name: str,
        on_reading: Callable[[str, float], None] | None = None,
        monitors: Iterable[str] = (),
    ) -> None:
        self.argv = argv
        self.name = name
        self.on_reading = on_reading
        self.monitors = frozenset(monitors)
        self.stuck = False
        env = jack_environment(server_name)
        self._child = Child(
            argv, name, env, stdin=True, on_line=self._line, tail=OUTPUT_LINES, logger=log, deaf=True
        )

    @property
    def output(self) -> collections.deque[str]:
        return self._child.output

    async def start(self) -> None:
        """Run it (it needs time to show its ports).

        Raises:
            PluginLoadFailed: jalv (or stdbuf) cannot run at all.
        """
        try:
            await self._child.start()
        except OSError as exc:
            raise PluginLoadFailed(f"cannot run jalv for {self.argv[-1]}: {exc}") from exc

    @property
    def pid(self) -> int | None:
        return self._child.pid

    @property
    def returncode(self) -> int | None:
        return self._child.returncode

    @property
    def is_running(self) -> bool:
        return self._child.is_running

    def exit_reason(self) -> str:
        """How it ended, with its last words (for errors and the log)."""
        tail = self._child.last_words()
        ending = self._child.exit_reason()
        return f"jalv exited with {ending}: {tail}" if tail else f"jalv exited with {ending}"

    def write(self, values: Mapping[str, float]) -> None:
        """Send ``set`` lines without waiting. A stuck jalv is killed (once)."""
        if values:
            self._command("".join(f"set {symbol} {number(value)}\n" for symbol, value in values.items()))

    def ask_readings(self) -> None:
        """Ask for its output controls without waiting; each arrives through ``on_reading``."""
        self._command("monitors\n")

    def _command(self, lines: str) -> None:
        """Write command lines to its stdin. A stuck jalv is killed (once)."""
        stdin = self._child.stdin
        if stdin is None or not self._child.is_running or self.stuck:
            return
        try:
            stdin.write(lines.encode())
        except (BrokenPipeError, ConnectionResetError):
            return  # it is ending; its watcher restarts it with the values
        backlog = stdin.transport.get_write_buffer_size()
        if backlog > STDIN_BACKLOG_LIMIT:
            self.stuck = True
            log.error("%s: stopped reading its stdin (%d bytes wait); restarting it", self.name, backlog)
            self._child.signal(signal.SIGKILL)

    async def wait(self) -> int:
        """Its exit status, once it has exited."""
        return await self._child.wait()

    async def terminate(self) -> None:
        """EOF on stdin, then SIGTERM, then SIGKILL; returns once it is gone."""
        stdin = self._child.stdin
        if await self._child.end(stdin.close if stdin is not None else None, PLUGIN_STOP_TIMEOUT):
            log.warning("%s did not end when asked; killed", self.name)

    def _line(self, text: str) -> bool:
        """One output line: an output control's reading is taken, anything else kept."""
        while text.startswith(">"):  # jalv's prompt glues onto the next line
            text = text[1:].lstrip()
        reading = READING.fullmatch(text.strip())
        if reading is not None and reading[1] in self.monitors:
            if self.on_reading is not None:
                self.on_reading(reading[1], float(reading[2]))
            return True
        return False
