"""Encoders and footswitches on GPIO (gpiozero), driving the board as a phone does.

Every turn and press becomes a request to the :class:`Controller`, so every
phone sees it at once, and a knob starts from the value the board holds
(a phone's last change included): a knob never fights a phone.

Threads: gpiozero calls back on its own threads (on the box, lgpio's alert
thread; with ``MockFactory``, the thread that drives the pin). A callback
only reads the clock and hands the event to the loop
(``call_soon_threadsafe``); it never waits. On the loop, one worker carries
out turns, bypasses and snapshot recalls in the order they came; a setlist
move (which loads a pedalboard) runs as a task of its own, so that a
footswitch pressed meanwhile never waits for it.

A footswitch with no hold action acts on the press itself. One with a hold
action must wait to know which it is: the press action comes on release
(before ``hold_time``), the hold action at ``hold_time``.

Contact bounce is filtered here, not by the pin driver: the first edge acts
at once and the edges within ``bounce_time`` after it are ignored (a driver's
debounce would instead delay every press by the bounce time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from gpiozero import Button, Device, RotaryEncoder

from ..control.controller import Controller
from ..core.controls import Parameter
from ..core.errors import ApplianceError
from ..core.protocol import Request
from .gpiomap import Action, Encoder, EncoderControl, Footswitch, GpioMap
from .jobs import Jobs

log = logging.getLogger("appliance.frontends.gpio")

#: Detents closer together than this accelerate (Zynthian's figure).
ACCEL_WINDOW = 0.040
#: The most a fast turn multiplies a detent's step by.
ACCEL_MAX = 5.0


def acceleration(interval: float | None) -> float:
    """How many steps one detent moves, given the time since the last one (None: first).

    Under :data:`ACCEL_WINDOW`: ((40 − ms) / 10) + 1, up to :data:`ACCEL_MAX`.
    """
    if interval is None or interval >= ACCEL_WINDOW:
        return 1.0
    return min(ACCEL_MAX, (ACCEL_WINDOW - interval) * 100.0 + 1.0)


def turned(parameter: Parameter, value: float, detents: float, steps: int) -> float:
    """A control's value after ``detents`` (signed, accelerated) of an encoder.

    Continuous controls move ``range / steps`` a detent; integer controls one
    a detent; toggles and enumerations one choice per turn, whatever the speed.
    """
    control = parameter.control
    direction = 1 if detents > 0 else -1
    if control.kind == "toggle":
        return parameter.maximum if direction > 0 else parameter.minimum
    if control.kind == "enum" and control.labels:
        choices = sorted(parameter.from_engine(v) for v, _label in control.labels)
        nearest = min(range(len(choices)), key=lambda i: abs(choices[i] - value))
        return choices[max(0, min(nearest + direction, len(choices) - 1))]
    if control.kind == "integer":
        moved = value + round(detents)
    else:
        moved = value + detents * (parameter.maximum - parameter.minimum) / steps
    return max(parameter.minimum, min(parameter.maximum, moved))


class Hardware:
    """The encoders and footswitches of a :class:`GpioMap`, on a gpiozero pin factory.

    Args:
        gpio_map: what is wired where.
        controller: where every turn and press goes.
        pin_factory: gpiozero's pin factory (lgpio on the box, ``MockFactory`` in tests).
        clock: seconds, for acceleration and long presses.
    """

    def __init__(
        self,
        gpio_map: GpioMap,
        controller: Controller,
        pin_factory: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.map = gpio_map
        self.controller = controller
        self.factory = pin_factory
        self.clock = clock
        #: Which of its controls each encoder drives now (an index into ``controls``).
        self.focus: dict[str, int] = {e.name: 0 for e in gpio_map.encoders}
        self._last_turn: dict[str, float] = {}
        self._last_edge: dict[str, float] = {}
        self._held: set[str] = set()
        self._devices: list[Device] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs = Jobs(log)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open every device on its pins and start taking events."""
        self._loop = asyncio.get_running_loop()
        self._jobs.start()
        try:
            for encoder in self.map.encoders:
                self._open_encoder(encoder)
            for footswitch in self.map.footswitches:
                self._open_footswitch(footswitch)
        except BaseException:
            await self.stop()
            raise
        self.controller.greeters.append(lambda: [("HARDWARE_STATE", self.state())])
        log.info(
            "gpio: %d encoder(s), %d footswitch(es) on %s",
            len(self.map.encoders),
            len(self.map.footswitches),
            type(self.factory).__name__,
        )

    async def stop(self) -> None:
        for device in self._devices:
            with contextlib.suppress(Exception):
                device.close()
        self._devices.clear()
        await self._jobs.stop()

    async def settled(self) -> None:
        """Wait until every event handed over so far has been carried out (tests)."""
        await asyncio.sleep(0)  # events handed over from another thread land on the next turn
        await self._jobs.settled()

    def state(self) -> dict[str, Any]:
        """``HARDWARE_STATE``: what each encoder drives now, and what each footswitch does."""
        encoders = []
        for encoder in self.map.encoders:
            control = encoder.controls[self.focus[encoder.name]]
            if control.target is None:
                encoders.append({"name": encoder.name, "mixer": control.parameter, "present": True})
                continue
            found = control.target.resolve(self.controller.board)
            encoders.append(
                {
                    "name": encoder.name,
                    "parameter_id": control.parameter,
                    "track_id": found[0] if found else control.target.track,
                    "plugin_id": found[1] if found else control.target.plugin,
                    "present": found is not None,
                }
            )
        footswitches = [
            {"name": f.name, "press": _describe(f.press), "hold": _describe(f.hold) if f.hold else None}
            for f in self.map.footswitches
        ]
        return {"encoders": encoders, "footswitches": footswitches}

    # -- gpiozero's threads: stamp the time, hand over, never wait ------------------

    def _open_encoder(self, encoder: Encoder) -> None:
        device = RotaryEncoder(encoder.a, encoder.b, max_steps=0, pin_factory=self.factory)
        self._devices.append(device)
        device.when_rotated_clockwise = lambda: self._hand_over(self._turned, encoder, 1, self.clock())
        device.when_rotated_counter_clockwise = lambda: self._hand_over(
            self._turned, encoder, -1, self.clock()
        )
        if encoder.push is not None:
            push = Button(encoder.push, pin_factory=self.factory)
            self._devices.append(push)
            self._on_edges(push, f"{encoder.name}.push", lambda: self._pushed(encoder), None)

    def _open_footswitch(self, footswitch: Footswitch) -> None:
        button = Button(footswitch.pin, hold_time=self.map.hold_time, pin_factory=self.factory)
        self._devices.append(button)
        if footswitch.hold is None:
            self._on_edges(button, footswitch.name, lambda: self._act(footswitch.press), None)
            return
        self._on_edges(
            button,
            footswitch.name,
            lambda: self._held.discard(footswitch.name),
            lambda: self._release(footswitch),
        )
        button.when_held = lambda: self._hand_over(self._hold, footswitch)

    def _on_edges(
        self,
        button: Button,
        switch: str,
        pressed: Callable[[], object] | None,
        released: Callable[[], object] | None,
    ) -> None:
        """What a switch's press and release do, on the loop, bounce filtered (:meth:`_edge`)."""
        button.when_pressed = lambda: self._hand_over(self._edge, switch, self.clock(), pressed)
        button.when_released = lambda: self._hand_over(self._edge, switch, self.clock(), released)

    def _hand_over(self, callback: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)

    # -- the loop ------------------------------------------------------------------------

    def _turned(self, encoder: Encoder, direction: int, at: float) -> None:
        last = self._last_turn.get(encoder.name)
        self._last_turn[encoder.name] = at
        detents = direction * acceleration(None if last is None else at - last)
        control = encoder.controls[self.focus[encoder.name]]
        self._jobs.put(lambda: self._turn(encoder, control, detents))

    async def _turn(self, encoder: Encoder, control: EncoderControl, detents: float) -> None:
        if control.target is None:
            await self._turn_mixer(encoder, control.parameter, detents)
            return
        found = control.target.resolve(self.controller.board)
        if found is None:
            log.debug("%s: %s is not on the board; the turn waits for nothing", encoder.name, control.target)
            return
        track_id, plugin_id = found
        instance = self.controller.board.plugin(track_id, plugin_id)
        try:
            parameter = instance.type.canonical(control.parameter)
        except ApplianceError:
            log.info("%s: %s has no %r; turn ignored", encoder.name, instance.name, control.parameter)
            return
        value = turned(parameter, instance.values[parameter.id], detents, encoder.steps)
        data = {
            "track_id": track_id,
            "plugin_id": plugin_id,
            "parameter_id": parameter.id,
            "parameter_value": value,
        }
        await self._execute("PLUGIN_PARAMETER", data, encoder.name)

    def _edge(self, switch: str, at: float, then: Callable[[], object] | None) -> None:
        """A switch's contact closed or opened: ``then`` runs unless the edge is bounce."""
        last = self._last_edge.get(switch)
        if last is not None and at - last < self.map.bounce_time:
            return
        self._last_edge[switch] = at
        if then is not None:
            then()

    async def _turn_mixer(self, encoder: Encoder, channel: str, detents: float) -> None:
        """A mixer control moves 100/steps percent a detent, from the level the box reports."""
        try:
            outcome = await self.controller.execute(Request("MIXER_GET", {}))
        except ApplianceError as exc:
            log.warning("gpio %s: no mixer (%s)", encoder.name, exc)
            return
        levels = {c["id"]: c["value"] for c in outcome.reply[0][1]["controls"]}
        if channel not in levels:
            return
        value = max(0.0, min(100.0, levels[channel] + detents * 100.0 / encoder.steps))
        await self._execute("MIXER_SET", {"control": channel, "value": value}, encoder.name)

    def _pushed(self, encoder: Encoder) -> None:
        self.focus[encoder.name] = (self.focus[encoder.name] + 1) % len(encoder.controls)
        self.controller.publish(
            [("HARDWARE_STATE", self.state())], None, {"user_id": "gpio", "session_id": encoder.name}
        )

    def _hold(self, footswitch: Footswitch) -> None:
        self._held.add(footswitch.name)
        assert footswitch.hold is not None
        self._act(footswitch.hold)

    def _release(self, footswitch: Footswitch) -> None:
        if footswitch.name in self._held:
            self._held.discard(footswitch.name)
            return
        self._act(footswitch.press)

    def _act(self, action: Action) -> None:
        if action.kind in ("setlist_next", "setlist_previous"):
            kind = "SETLIST_NEXT" if action.kind == "setlist_next" else "SETLIST_PREVIOUS"
            self._jobs.beside(self._execute(kind, {}, action.kind))
        elif action.kind == "snapshot":
            self._jobs.put(
                lambda: self._execute("SNAPSHOT_RECALL", {"name": action.name}, "footswitch")
            )
        elif action.kind == "tuner":  # silent at once; the tuner's start does not hold up bypasses
            on = not self.controller.engine.is_tuning
            self._jobs.beside(self._execute("TUNER_SET", {"on": on}, "footswitch"))
        elif action.kind == "tap_tempo":
            self._jobs.beside(self._execute("TEMPO_TAP", {}, "footswitch"))
        else:
            self._jobs.put(lambda: self._toggle_bypass(action))

    async def _toggle_bypass(self, action: Action) -> None:
        assert action.target is not None
        found = action.target.resolve(self.controller.board)
        if found is None:
            log.info("footswitch: %s is not on the board", action.target.describe())
            return
        instance = self.controller.board.plugin(*found)
        data = {"track_id": found[0], "plugin_id": found[1], "bypass": not instance.bypass}
        await self._execute("PLUGIN_BYPASS", data, "footswitch")

    async def _execute(self, kind: str, data: dict[str, Any], source: str) -> None:
        try:
            await self.controller.execute(Request(kind, data, user_id="gpio", session_id=source))
        except ApplianceError as exc:
            log.warning("gpio %s: %s refused: %s", source, kind, exc)


def _describe(action: Action) -> dict[str, Any]:
    described: dict[str, Any] = {"action": action.kind}
    if action.target is not None:
        described |= action.target.describe()
    if action.name is not None:
        described["name"] = action.name
    return described


async def watch(gpio_map: GpioMap, factory: Any, say: Callable[[str], object] = print) -> None:
    """``appliance gpio-test``: say every turn, press, hold and release, until cancelled.

    For checking the wiring: nothing reaches the board.
    """
    loop = asyncio.get_running_loop()
    devices: list[Device] = []

    def tell(text: str) -> None:
        loop.call_soon_threadsafe(say, text)

    try:
        for encoder in gpio_map.encoders:
            knob = RotaryEncoder(encoder.a, encoder.b, max_steps=0, pin_factory=factory)
            devices.append(knob)
            knob.when_rotated_clockwise = lambda name=encoder.name: tell(f"{name}: +1 (clockwise)")
            knob.when_rotated_counter_clockwise = lambda name=encoder.name: tell(f"{name}: -1")
            if encoder.push is not None:
                devices.append(
                    _announced(Button(encoder.push, pin_factory=factory), f"{encoder.name} push", tell)
                )
        for footswitch in gpio_map.footswitches:
            button = Button(footswitch.pin, hold_time=gpio_map.hold_time, pin_factory=factory)
            devices.append(_announced(button, footswitch.name, tell))
        say(f"watching {len(devices)} device(s); Ctrl-C ends")
        await asyncio.Event().wait()
    finally:
        for device in devices:
            with contextlib.suppress(Exception):
                device.close()


def _announced(button: Any, name: str, tell: Callable[[str], None]) -> Any:
    button.when_pressed = lambda: tell(f"{name}: pressed")
    button.when_released = lambda: tell(f"{name}: released")
    button.when_held = lambda: tell(f"{name}: held")
    return button
