"""The box's tempo on JACK's transport: one BPM that every plugin follows.

A plugin that syncs to its host (``a-delay``'s *sync*, any LV2 plugin reading
``time:Position``) gets its tempo from the host, and both hosts take it from
JACK's transport: jalv reads it each cycle, Carla in its JACK transport mode
too. The box's tempo is therefore the transport's: ``jack_transport``
(jackd2's own example client, in Debian's ``jackd2``) runs as the server's
timebase master, rolling, and the box tells it the BPM on its stdin::

    master        become the timebase master (bar, beat and BPM for everyone)
    tempo 96.5    the whole timeline's BPM from now on
    play          roll (a synced plugin holds still while the transport stops)

The graph starts it before any plugin loads: ``a-delay`` synced with no
transport master yet outputs NaN until it is loaded again. Its client has
no ports: its thread wakes each cycle (the timebase callback) beside the
chain's, never in series with it. It ends when told (``quit``), when its
server goes, or by SIGKILL when the box dies.
"""

from __future__ import annotations

import logging
import math
import shutil

from ...core.errors import InvalidValue
from ..processes import Child
from .server import jack_environment

log = logging.getLogger("appliance.engine.jack.tempo")

#: The BPM range the box takes (a typed, tapped or followed tempo outside it is refused or clamped).
MIN_BPM = 20.0
MAX_BPM = 300.0
#: The tempo of a box nobody has set one on (jack_transport's own default).
DEFAULT_BPM = 120.0
#: How long the master may take to end once asked.
STOP_TIMEOUT = 2.0
#: The program (from jackd2).
PROGRAM = "jack_transport"


def checked_bpm(value: object) -> float:
    """A BPM from a request, rounded to hundredths.

    Raises:
        InvalidValue: not a number within :data:`MIN_BPM`..:data:`MAX_BPM`.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidValue("bpm must be a number", {"field": "data.bpm"})
    if not MIN_BPM <= value <= MAX_BPM:
        raise InvalidValue(f"bpm must be within {MIN_BPM:g}..{MAX_BPM:g}", {"field": "data.bpm"})
    return round(float(value), 2)


class TempoMaster:
    """``jack_transport`` as the timebase master of one server. Loop thread only.

    Args:
        server: the JACK server (None: the default one).
        bpm: the tempo it starts with.
    """

    def __init__(self, server: str | None, bpm: float = DEFAULT_BPM) -> None:
        self.server = server
        self.bpm = bpm
        self._child: Child | None = None

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.is_running

    async def start(self) -> None:
        """Start it, master and rolling at :attr:`bpm`; without ``jack_transport`` the box
        runs with no tempo (said once in the log) and synced plugins hold still."""
        program = shutil.which(PROGRAM)
        if program is None:
            log.warning("no %s here: plugins get no tempo from the box", PROGRAM)
            return
        # SIGKILL when the box dies: its own SIGTERM handler closes its JACK client inside the
        # handler, and hung there with the virtual box's server ending beside it; ending by its
        # stdin, it hung in the same close. JACK drops a killed client (it holds nothing).
        env = jack_environment(self.server)
        child = Child([program], "tempo", env, stdin=True, logger=log, death_signal="KILL")
        try:
            await child.start()
        except OSError as exc:
            log.warning("no tempo: %s", exc)
            return
        self._child = child
        self._say(f"master\ntempo {self.bpm:g}\nplay\n")

    def set(self, bpm: float) -> None:
        """The whole timeline's tempo from the next cycle on."""
        self.bpm = bpm
        self._say(f"tempo {bpm:g}\n")

    async def stop(self) -> None:
        """It releases the timebase and ends (safe to call twice)."""
        child, self._child = self._child, None
        if child is not None:
            await child.end(lambda: self._quit(child), STOP_TIMEOUT)

    def _say(self, commands: str) -> None:
        stdin = self._child.stdin if self._child is not None else None
        if stdin is not None and not stdin.is_closing():
            stdin.write(commands.encode())

    @staticmethod
    def _quit(child: Child) -> None:
        stdin = child.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.write(b"quit\n")
            stdin.close()
