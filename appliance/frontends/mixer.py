"""The audio HAT's mixer: input gain, output volume and whatever else the config names (ALSA).

Through pyalsaaudio: each control the box shows is an ALSA simple mixer
control on the configured control device (``hw:CARD=sndrpihifiberry`` on the
box), read and set in percent of its range. :class:`Mixer` blocks (ALSA
calls): the loop calls it through ``asyncio.to_thread``. :class:`MixerService`
puts it on the protocol (``MIXER_GET``, ``MIXER_SET``; docs/protocol.md §16)
and keeps the values in ``board.json`` so that a restart restores them.

At start: a configured device that does not exist is a :class:`ConfigError`
listing the cards there are; with no sound card at all (a laptop, CI) the
mixer is absent, said once in the log, and the box runs without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import alsaaudio

from ..config import MixerConfig
from ..control.controller import Controller, Outcome
from ..core.errors import ConfigError, HardwareError, InvalidValue, UnknownParameter
from ..core.protocol import Request

log = logging.getLogger("appliance.frontends.mixer")


@dataclass(frozen=True)
class Channel:
    """One control the box shows: its id, the ALSA control, and which of its volumes."""

    id: str
    control: str
    capture: bool


class Mixer:
    """The configured controls of one ALSA control device. Blocking; one thread at a time."""

    def __init__(self, device: str, channels: Mapping[str, Channel]) -> None:
        self.device = device
        self.channels = dict(channels)

    @classmethod
    def open(cls, config: MixerConfig) -> Mixer | None:
        """Find the device and every configured control on it.

        Returns:
            The mixer, or None when this machine has no sound card at all.

        Raises:
            ConfigError: the device, or a control on it, does not exist; the
                sentence lists what does.
        """
        try:
            names = alsaaudio.mixers(device=config.device)
        except alsaaudio.ALSAAudioError as exc:
            cards = alsaaudio.cards()
            if not cards:
                log.info("no sound card here: the mixer is absent (%s)", exc)
                return None
            there = ", ".join(f"hw:CARD={card}" for card in cards)
            raise ConfigError(
                "mixer.device", f"no mixer {config.device!r} ({exc}); the cards here: {there}"
            ) from exc
        channels = {}
        for channel_id, control in config.controls.items():
            if control not in names:
                raise ConfigError(
                    f"mixer.controls.{channel_id}",
                    f"{config.device} has no control {control!r} (it has: {', '.join(names)})",
                )
            caps = alsaaudio.Mixer(control, device=config.device).volumecap()
            playback = any(
                c in ("Volume", "Joined Volume", "Playback Volume", "Joined Playback Volume") for c in caps
            )
            channels[channel_id] = Channel(channel_id, control, capture=not playback)
        log.info("mixer %s: %s", config.device, ", ".join(f"{c.id}={c.control}" for c in channels.values()))
        return cls(config.device, channels)

    def get(self, channel_id: str) -> float:
        """The control's level in percent of its range (the mean of its channels)."""
        channel = self.channel(channel_id)
        volumes = self._mixer(channel).getvolume(self._kind(channel))
        return round(sum(volumes) / len(volumes), 1) if volumes else 0.0

    def set(self, channel_id: str, percent: float) -> float:
        """Set every channel of the control; the level it then reads."""
        channel = self.channel(channel_id)
        self._mixer(channel).setvolume(round(percent), pcmtype=self._kind(channel))
        return self.get(channel_id)

    def levels(self) -> dict[str, float]:
        return {channel_id: self.get(channel_id) for channel_id in self.channels}

    def channel(self, channel_id: str) -> Channel:
        try:
            return self.channels[channel_id]
        except KeyError:
            raise UnknownParameter(f"no mixer control {channel_id!r}", {"control": channel_id}) from None

    def _mixer(self, channel: Channel) -> Any:
        try:
            return alsaaudio.Mixer(channel.control, device=self.device)
        except alsaaudio.ALSAAudioError as exc:
            raise HardwareError(f"mixer {self.device} {channel.control}: {exc}") from exc

    @staticmethod
    def _kind(channel: Channel) -> int:
        return int(alsaaudio.PCM_CAPTURE if channel.capture else alsaaudio.PCM_PLAYBACK)


class MixerService:
    """``MIXER_GET`` and ``MIXER_SET`` through the controller; the levels kept in ``board.json``.

    Args:
        controller: where the requests come in.
        mixer: the mixer, or None when it is absent.
        on_change: called after every change (schedules a save).
    """

    def __init__(
        self, controller: Controller, mixer: Mixer | None, on_change: Callable[[], None] = lambda: None
    ) -> None:
        self.controller = controller
        self.mixer = mixer
        self.on_change = on_change
        self.values: dict[str, float] = {}
        self._lock = asyncio.Lock()
        controller.register("MIXER_GET", self._get)
        controller.register("MIXER_SET", self._set)
        controller.greeters.append(lambda: [("MIXER", self.state())])

    async def start(self, saved: Mapping[str, Any] | None) -> None:
        """Read the levels, then put back the ones ``board.json`` kept."""
        if self.mixer is None:
            return
        self.values = await asyncio.to_thread(self.mixer.levels)
        for channel_id, value in dict(saved or {}).items():
            if channel_id in self.values and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.values[channel_id] = await asyncio.to_thread(self.mixer.set, channel_id, float(value))

    def saved_state(self) -> dict[str, float]:
        return dict(self.values)

    def state(self) -> dict[str, Any]:
        """``MIXER``: whether there is one, and each control's level in percent."""
        if self.mixer is None:
            return {"present": False, "controls": []}
        controls = [
            {"id": c, "control": self.mixer.channels[c].control, "value": v, "minimum": 0.0, "maximum": 100.0}
            for c, v in self.values.items()
        ]
        return {"present": True, "controls": controls}

    async def _get(self, request: Request) -> Outcome:
        return Outcome(reply=[("MIXER", self.state())])

    async def _set(self, request: Request) -> Outcome:
        mixer = self.mixer
        if mixer is None:
            raise HardwareError("this box has no mixer")
        channel_id, value = request.data.get("control"), request.data.get("value")
        if not isinstance(channel_id, str):
            raise InvalidValue("control must be a mixer control's id", {"field": "data.control"})
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValue("value must be a number of percent", {"field": "data.value"})
        mixer.channel(channel_id)  # raises before anything changes
        async with self._lock:
            self.values[channel_id] = await asyncio.to_thread(
                mixer.set, channel_id, max(0.0, min(100.0, value))
            )
        self.on_change()
        return Outcome(broadcast=[("MIXER", self.state())])
