"""Meters and the tuner: plugins that listen beside the chains and feed nothing.

Each track has two level meters, one on what comes in and one on what goes
out, and the tuner listens to the first track's input while it is on::

    track inputs ─┬─▶ head fader ─▶ plugins … ─▶ tail fader ─┬─▶ track outputs
                  └─▶ meter "in"                 meter "out" ◀┘
                  └─▶ tuner (while on; the tail faders close: the box is silent)

They are LV2 plugins like any other (x42's true-peak meter and tuner, from
``x42-plugins``), wired as :class:`~appliance.engine.jack.wiring.Tap` s, so no
Python runs on the audio thread. Their readings are output controls, which
the hosts read on request (jalv's ``monitors`` command, Carla's parameter
values). Pure: no JACK, no asyncio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: x42 true-peak meter, stereo: ``levelL``/``levelR`` are linear peaks with a falloff.
METER_URI = "http://gareus.org/oss/lv2/meters#dBTPstereo"
METER_LEVELS = ("levelL", "levelR")
#: x42 tuner: ``freq_out`` (Hz, 0 when it hears nothing), ``note`` (0 = C), ``octave``, ``cent``.
TUNER_URI = "http://gareus.org/oss/lv2/tuna#one"
#: The lowest level a meter reports, in dBFS (silence).
FLOOR_DB = -120.0
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def decibels(linear: float) -> float:
    """A linear peak as dBFS, one decimal, never below :data:`FLOOR_DB`."""
    if not linear > 0 or not math.isfinite(linear):
        return FLOOR_DB
    return round(max(FLOOR_DB, 20 * math.log10(linear)), 1)


def meter_level(readings: Mapping[str, float]) -> float:
    """A stereo meter's reading as one level: the louder channel, in dBFS."""
    return decibels(max((readings.get(symbol, 0.0) for symbol in METER_LEVELS), default=0.0))


def listened(endpoints: Sequence[str]) -> tuple[str, str]:
    """What a stereo meter's two inputs listen to: a mono endpoint on both."""
    return (endpoints[0], endpoints[1] if len(endpoints) > 1 else endpoints[0])


def tuner_reading(readings: Mapping[str, float]) -> dict[str, Any] | None:
    """The tuner's readings as a player reads them; None while it hears no note."""
    frequency = readings.get("freq_out", 0.0)
    note = readings.get("note")
    if not frequency > 0 or note is None or not 0 <= note < len(NOTE_NAMES):
        return None
    return {
        "frequency": round(frequency, 2),
        "note": NOTE_NAMES[int(note)],
        "octave": int(readings.get("octave", 0)),
        "cents": round(readings.get("cent", 0.0), 1),
    }
