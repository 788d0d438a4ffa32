"""When to bring a crashed plugin host back, and when to stop trying.

Pure: the clock is passed in, so the policy is tested with a fake one. Both
engines use it: jalv for each plugin process, Carla for its host process.

A death is recorded with :meth:`RespawnPolicy.died`; it answers with the
pauses to try the restart after, or with nothing when the host has died too
often lately and should stay down (its track then plays dry there)::

    died() ──▶ deaths in the window < limit ──▶ delays (one attempt each)
           └─▶ deaths in the window ≥ limit ──▶ () : stay down
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

#: Pauses before the restart attempts after one death (one attempt each).
RESPAWN_DELAYS = (0.05, 0.25, 1.0, 2.0, 4.0)
#: A host that died this many times within :data:`RESPAWN_WINDOW` stays down.
RESPAWN_LIMIT = 5
#: Seconds over which :data:`RESPAWN_LIMIT` counts deaths.
RESPAWN_WINDOW = 60.0


@dataclass(frozen=True)
class RespawnSettings:
    delays: tuple[float, ...] = RESPAWN_DELAYS
    limit: int = RESPAWN_LIMIT
    window: float = RESPAWN_WINDOW


#: The settings both engines use unless told otherwise.
DEFAULT_RESPAWN = RespawnSettings()


class RespawnPolicy:
    """Counts deaths in a sliding window and says whether, and when, to restart.

    Args:
        clock: seconds, monotonic (the loop's ``time``).
        settings: pauses, limit and window.
    """

    def __init__(self, clock: Callable[[], float], settings: RespawnSettings = DEFAULT_RESPAWN) -> None:
        self.clock = clock
        self.settings = settings
        self.deaths: collections.deque[float] = collections.deque()

    def died(self) -> tuple[float, ...]:
        """Record a death now; the pauses before each restart attempt, or () to give up."""
        now = self.clock()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - self.settings.window:
            self.deaths.popleft()
        if len(self.deaths) >= self.settings.limit:
            return ()
        return self.settings.delays

    @property
    def recent(self) -> int:
        """Deaths counted in the current window (as of the last :meth:`died`)."""
        return len(self.deaths)
