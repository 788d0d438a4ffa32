"""The box's one tempo: typed on a phone, tapped (phone, footswitch, MIDI), or followed from MIDI clock.

* ``TEMPO_SET`` ``{"bpm": 96.5}`` sets it; ``TEMPO_TAP`` is one tap (two taps
  set it, each further tap refines it from the last :data:`TAPS` taps; a pause
  of over :data:`TAP_RESET` seconds starts over); ``TEMPO_GET`` asks.
* Every client hears ``TEMPO`` ``{"bpm", "source"}`` on a change and when it
  connects; ``source`` says who set it (``phone``, ``tap``, ``midi-clock``,
  ``saved``, ``default``).
* A MIDI controller's clock (24 a beat) is followed: the tempo of its last
  beat, applied once it moves by :data:`CLOCK_STEP` BPM or more.
* Each pedalboard keeps the tempo it was saved with (a
  :class:`~appliance.control.library.BoardPart`); loading it sets that tempo
  (``pedalboard``), unless a MIDI clock is running: the band's clock wins.

The engine puts it on JACK's transport (:mod:`appliance.engine.jack.tempo`),
where every plugin that follows its host's tempo reads it. It is kept in
``board.json``. docs/protocol.md §19. Loop thread only.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..control.controller import Controller, Event, Outcome
from ..core.protocol import Request
from ..engine.jack.tempo import DEFAULT_BPM, MAX_BPM, MIN_BPM, checked_bpm

log = logging.getLogger("appliance.frontends.tempo")

#: How many taps the tempo is read from (the mean of their intervals).
TAPS = 5
#: A tap this long after the previous one starts over (the slowest tempo's beat, and a little).
TAP_RESET = 60.0 / MIN_BPM + 0.5
#: MIDI clocks a beat.
CLOCKS_PER_BEAT = 24
#: A clock this long after the previous one starts over (the controller stopped, or was replugged).
CLOCK_RESET = 1.0
#: The least change of a followed clock's tempo that is applied, BPM.
CLOCK_STEP = 0.5


def clamp_bpm(bpm: float) -> float:
    return round(min(MAX_BPM, max(MIN_BPM, bpm)), 2)


class TapTempo:
    """Taps to a tempo: 60 s over the mean interval of the last :data:`TAPS` taps."""

    def __init__(self) -> None:
        self._taps: collections.deque[float] = collections.deque(maxlen=TAPS)

    def tap(self, at: float) -> float | None:
        """One tap at ``at`` seconds; the tempo, from the second tap of a run on."""
        if self._taps and not 0.0 < at - self._taps[-1] <= TAP_RESET:
            self._taps.clear()
        self._taps.append(at)
        if len(self._taps) < 2:
            return None
        return clamp_bpm(60.0 * (len(self._taps) - 1) / (self._taps[-1] - self._taps[0]))


class ClockFollower:
    """MIDI clock to a tempo: the span of the last :data:`CLOCKS_PER_BEAT` clocks, in frames."""

    def __init__(self) -> None:
        self._frames: collections.deque[int] = collections.deque(maxlen=CLOCKS_PER_BEAT + 1)

    def clock(self, frame: int, rate: int) -> float | None:
        """One clock at JACK frame ``frame``; the tempo once a whole beat of clocks came."""
        if self._frames and not 0 < frame - self._frames[-1] <= CLOCK_RESET * rate:
            self._frames.clear()
        self._frames.append(frame)
        if len(self._frames) <= CLOCKS_PER_BEAT or rate <= 0:
            return None
        return clamp_bpm(60.0 * rate / (self._frames[-1] - self._frames[0]))


class TempoService:
    """``TEMPO_GET``, ``TEMPO_SET`` and ``TEMPO_TAP`` through the controller; the engine's tempo.

    Args:
        controller: where the requests come in (and whose engine plays the tempo).
        clock: the loop's clock, seconds (taps are timed on it).
        on_change: called after every change (schedules a save).
    """

    def __init__(
        self, controller: Controller, clock: Callable[[], float], on_change: Callable[[], None] = lambda: None
    ) -> None:
        self.controller = controller
        self.clock = clock
        self.on_change = on_change
        self.bpm = DEFAULT_BPM
        self.source = "default"
        #: What a pedalboard keeps of it (:class:`~appliance.control.library.BoardPart`).
        self.key = "tempo"
        self._taps = TapTempo()
        self._midi_taps = TapTempo()  # timed on JACK's frames, not on the loop's clock
        self._follower = ClockFollower()
        self._last_clock: float | None = None  # on :attr:`clock`
        controller.register("TEMPO_GET", self._get)
        controller.register("TEMPO_SET", self._set)
        controller.register("TEMPO_TAP", self._tap)
        controller.greeters.append(lambda: [self.state()])

    def start(self, saved: Mapping[str, Any] | None) -> None:
        """Put back the tempo ``board.json`` kept (before the board's plugins load)."""
        bpm = dict(saved or {}).get("bpm")
        if isinstance(bpm, (int, float)) and not isinstance(bpm, bool):
            self.bpm, self.source = clamp_bpm(float(bpm)), "saved"
        self.controller.engine.set_tempo(self.bpm)

    def saved_state(self) -> dict[str, float]:
        return {"bpm": self.bpm}

    def state(self) -> Event:
        return ("TEMPO", {"bpm": self.bpm, "source": self.source})

    def kept(self, ids: dict[str, str]) -> dict[str, float]:
        """What a pedalboard saved now keeps: the tempo."""
        return {"bpm": self.bpm}

    async def switched(self, kept: Any, ids: dict[str, str]) -> None:
        """A pedalboard now plays: its tempo, unless it has none or a MIDI clock is running."""
        bpm = kept.get("bpm") if isinstance(kept, dict) else None
        if isinstance(bpm, bool) or not isinstance(bpm, (int, float)):
            return  # saved before pedalboards kept a tempo: the tempo stays
        if self._last_clock is not None and self.clock() - self._last_clock <= CLOCK_RESET:
            return  # the band's clock sets the tempo
        if clamp_bpm(float(bpm)) != self.bpm or self.source != "pedalboard":
            self._apply(clamp_bpm(float(bpm)), "pedalboard")
            self.controller.publish([self.state()], None, {"user_id": "library", "session_id": "tempo"})

    def clock_tick(self, frame: int) -> None:
        """One MIDI clock from a controller, at JACK frame ``frame``: followed."""
        self._last_clock = self.clock()
        bpm = self._follower.clock(frame, self.controller.engine.info().sample_rate)
        if bpm is None:
            return
        bpm = round(bpm, 1)
        if self.source == "midi-clock" and abs(bpm - self.bpm) < CLOCK_STEP:
            return  # the clock's own jitter
        self._apply(bpm, "midi-clock")
        self.controller.publish([self.state()], None, {"user_id": "midi", "session_id": "clock"})

    def midi_tap(self, frame: int) -> None:
        """A tap of a MIDI footswitch at frame ``frame`` of the MIDI monitor's clock: timed by
        its frame, not by when the box read it (a busy box reads a controller's messages in
        bursts, and three taps read at once would be a tempo of thousands)."""
        rate = self.controller.engine.info().sample_rate
        if rate <= 0:
            return
        bpm = self._midi_taps.tap(frame / rate)
        if bpm is None:
            return  # the first tap of a run
        self._apply(bpm, "tap")
        self.controller.publish([self.state()], None, {"user_id": "midi", "session_id": "tap"})

    def _apply(self, bpm: float, source: str) -> None:
        self.bpm, self.source = bpm, source
        self.controller.engine.set_tempo(bpm)
        self.on_change()

    async def _get(self, request: Request) -> Outcome:
        return Outcome(reply=[self.state()])

    async def _set(self, request: Request) -> Outcome:
        self._apply(checked_bpm(request.data.get("bpm")), "phone")
        return Outcome(broadcast=[self.state()])

    async def _tap(self, request: Request) -> Outcome:
        bpm = self._taps.tap(self.clock())
        if bpm is None:
            return Outcome(reply=[self.state()])  # the first tap of a run: nothing changes yet
        self._apply(bpm, "tap")
        return Outcome(broadcast=[self.state()])
