"""What the box hears, for the phones: level meters, plugin readings and the stage tuner.

* ``TUNER_SET`` turns the tuner on or off (a footswitch does the same); every
  client is told with ``TUNER``, and each one that connects is told too.
* ``METERS_SUBSCRIBE`` (handled by :mod:`appliance.frontends.net`, per connection)
  asks for ``METERS``: :class:`MeterFeed` asks the engine for readings at
  :data:`METER_RATE` while any client wants them, and sends each frame, encoded
  once, to those clients only. Nobody subscribed: no readings are asked for.

docs/protocol.md §17. Loop thread only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..control.controller import Controller, Event, Outcome
from ..core.errors import InvalidValue
from ..core.protocol import Request
from ..engine import Engine

log = logging.getLogger("appliance.frontends.readings")

#: ``METERS`` frames per second to a subscribed client.
METER_RATE = 15.0


class Tuner:
    """``TUNER_SET`` through the controller; ``TUNER`` to everyone."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        # structural: the tuner's start may take a moment; a client's knob turns go on meanwhile
        controller.register("TUNER_SET", self._set, structural=True)
        controller.greeters.append(lambda: [self.state()])

    def state(self) -> Event:
        return ("TUNER", {"on": self.controller.engine.is_tuning})

    async def _set(self, request: Request) -> Outcome:
        on = request.data.get("on")
        if not isinstance(on, bool):
            raise InvalidValue("on must be true or false", {"field": "data.on"})
        try:
            await self.controller.engine.set_tuner(on)
        finally:  # a tuner that failed to start has sounded the box again: say so too
            self.controller.publish([self.state()], request.id, request.origin())
        return Outcome()


def meters(engine: Engine) -> dict[str, Any]:
    """One ``METERS`` frame: load, xruns, track levels, plugins' readings and the tuner."""
    info = engine.info()
    return {
        "dsp_load": round(info.dsp_load, 1),
        "xruns": info.xruns,
        "tracks": engine.levels(),
        "monitors": engine.readings(),
        "tuner": engine.tuner(),
    }


class MeterFeed:
    """Sends ``METERS`` at :data:`METER_RATE` to the clients that asked for them.

    Args:
        engine: where the readings come from.
        wanted: True while at least one client is subscribed.
        send: sends one event to every subscribed client.
    """

    def __init__(
        self,
        engine: Engine,
        wanted: Callable[[], bool],
        send: Callable[[Event], None],
        rate: float = METER_RATE,
    ) -> None:
        self.engine = engine
        self.wanted = wanted
        self.send = send
        self.interval = 1.0 / rate

    async def run(self) -> None:
        """Until cancelled: ask for readings, then send what came since the last frame."""
        asked = False
        while True:
            await asyncio.sleep(self.interval)
            if not self.wanted():
                asked = False
                continue
            if asked:
                try:
                    self.send(("METERS", meters(self.engine)))
                except Exception:
                    log.exception("a meters frame failed")
            self.engine.request_readings()
            asked = True
