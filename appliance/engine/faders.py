"""Faders: how a board switch moves the signal without a gap and without a click.

A JACK connection changes at a period boundary, so moving a track from one
chain to another by connections alone steps the output by whatever the two
chains' samples differ by: a click. Each track's chain therefore runs
between two faders of its own, which the box never shows::

    track inputs ─▶ head fader ─▶ plugins … ─▶ tail fader ─▶ track outputs

Both sit open while the board plays. A board switch builds the new chain
beside the old one, its head fader closed, wires both to the track, then
opens the new head while it closes the old chain's head (spillover: the old
delays and reverbs ring on with no input, until they are torn down) or its
tail (no spillover: the old sound fades out in :data:`FADE_TIME`).

The fader is x42's stereo cross-fader (``x42-plugins``) with only its A
inputs wired: its gain moves over 64 samples whenever the control changes,
and the box moves the control in :data:`FADE_STEPS` steps, so a fade is a
ramp, not a step. A plugin reads a control once a period, so the steps are
at least a period apart (:func:`fade_step`): at a period as long as the
whole fade (1,024 frames is 21 ms) they would otherwise all land in one
period and the fade would be a 64-sample step. Pure: no JACK, no asyncio.
"""

from __future__ import annotations

import dataclasses

from ..core.controls import PluginType

#: x42-xfade: ``xfade`` −1 passes input A, +1 input B (never wired here: silence).
FADER_URI = "http://gareus.org/oss/lv2/xfade"
FADER_CONTROL = "xfade"
OPEN = -1.0
CLOSED = 1.0
#: How long a fade takes, and in how many control steps.
FADE_TIME = 0.02
FADE_STEPS = 8


def fader_type(xfade: PluginType) -> PluginType:
    """The cross-fader as a fader: only its first (A) input pair is in the chain."""
    return dataclasses.replace(xfade, key="fader", audio_inputs=xfade.audio_inputs[:2])


def fader_values(opened: bool) -> dict[str, float]:
    """Every control of a fader, open or closed (linear shape, cross-fade mode)."""
    return {FADER_CONTROL: OPEN if opened else CLOSED, "shape": 0.0, "mode": 0.0}


def fade_step(sample_rate: int, buffer_size: int) -> float:
    """Seconds between two steps of a fade: :data:`FADE_TIME` over :data:`FADE_STEPS`, and no
    less than one period (where the period is known), so that every step is heard."""
    period = buffer_size / sample_rate if sample_rate > 0 and buffer_size > 0 else 0.0
    return max(FADE_TIME / FADE_STEPS, period)


def fade_time(sample_rate: int, buffer_size: int) -> float:
    """How long a whole fade takes, seconds: :data:`FADE_STEPS` steps of :func:`fade_step`."""
    return FADE_STEPS * fade_step(sample_rate, buffer_size)


def ramp(opening: bool, steps: int = FADE_STEPS) -> list[float]:
    """The control values of one fade, ending on fully open or fully closed."""
    start, end = (CLOSED, OPEN) if opening else (OPEN, CLOSED)
    return [start + (end - start) * (i + 1) / steps for i in range(steps)]
