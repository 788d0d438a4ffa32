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
ramp, not a step. Pure: no JACK, no asyncio.
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


def ramp(opening: bool, steps: int = FADE_STEPS) -> list[float]:
    """The control values of one fade, ending on fully open or fully closed."""
    start, end = (CLOSED, OPEN) if opening else (OPEN, CLOSED)
    return [start + (end - start) * (i + 1) / steps for i in range(steps)]
