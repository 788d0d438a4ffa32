"""The rig's own interface, measured with a loopback cable, so that a box's figures are the box's.

On a rig computer the signal goes out of the audio interface, through the
box and back in; the interface adds its own round trip (converters, JACK's
periods) and its own colouring. ``python -m hil.rig calibrate`` measures
both with a loopback cable (the interface's output straight into its input)
and saves a :class:`Calibration` as JSON; ``run --calibration FILE`` takes
the interface's round trip out of every latency and its response out of the
dry path's response (:mod:`hil.rig.runner`), and records the calibration in
``report.json``.

A calibration belongs to one interface at one sample rate and period: a
file measured at another rate is refused (:meth:`Calibration.check`); other
ports or another period are allowed and noted in the report. Any thread may
use this module; loading and saving block.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hil.rig.analysis import Distortion, FrequencyResponse, frames_to_ms
from hil.rig.setups import RigError

#: The calibration file's format, and what it says it is.
FORMAT = 1
KIND = "hil.rig interface calibration"


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _array(values: Any) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True)
class Calibration:
    """The rig's interface, as a loopback cable showed it.

    Attributes:
        ports: the JACK server and ports measured (:meth:`InterfacePorts.as_dict`).
        rate: sample rate, Hz.
        period: JACK's period, frames.
        latency_takes: round trip of each take, frames.
        clarity_db: the weakest take's peak clarity.
        distortion: THD+N of a 1 kHz sine through the cable.
        response: the interface's frequency response (magnitude only is kept:
            phase and coherence are NaN once loaded).
        written: when it was measured (ISO 8601, UTC).
    """

    ports: dict[str, Any]
    rate: int
    period: int
    latency_takes: list[int]
    clarity_db: float
    distortion: Distortion
    response: FrequencyResponse
    written: str = ""

    @property
    def latency_frames(self) -> int:
        """The interface's round trip: the median take, in frames."""
        return int(np.median(self.latency_takes))

    def figures(self) -> dict[str, Any]:
        """The calibration's figures (what ``report.json`` records; no arrays)."""
        top = float(self.response.frequency[-1])
        low, high = self.response.deviation_db(20.0, min(20000.0, top))
        return {
            "written": self.written,
            **self.ports,
            "rate": self.rate,
            "period": self.period,
            "latency_frames": self.latency_frames,
            "latency_ms": frames_to_ms(self.latency_frames, self.rate),
            "latency_takes": list(self.latency_takes),
            "clarity_db": _number(self.clarity_db),
            "thd_n_db": _number(self.distortion.thd_n_db),
            "response_min_db": _number(low),
            "response_max_db": _number(high),
        }

    def to_json(self) -> dict[str, Any]:
        """The whole file: the figures, the distortion and the response's magnitude per bin."""
        return {
            "format": FORMAT,
            "kind": KIND,
            "figures": self.figures(),
            "distortion": {
                "frequency": self.distortion.frequency,
                "amplitude": self.distortion.amplitude,
                "thd_n_db": _number(self.distortion.thd_n_db),
                "thd_db": _number(self.distortion.thd_db),
            },
            "response": {
                "latency": self.response.latency,
                "frequency": [float(f) for f in self.response.frequency],
                "magnitude_db": [_number(float(m)) for m in self.response.magnitude_db],
            },
        }

    def save(self, path: Path) -> None:
        """Write it as JSON (blocking); the folder is made if missing."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> Calibration:
        """Read a file :meth:`save` wrote (blocking).

        Raises:
            RigError: missing, unreadable, or not a calibration of this format.
        """
        try:
            data = json.loads(path.read_text())
            if data.get("kind") != KIND or data.get("format") != FORMAT:
                raise ValueError(f"not a {KIND} of format {FORMAT}")
            figures, distortion, response = data["figures"], data["distortion"], data["response"]
            frequency = _array(response["frequency"])
            nan = np.full_like(frequency, np.nan)
            return cls(
                ports={k: figures[k] for k in ("jack_server", "playback", "capture")},
                rate=int(figures["rate"]),
                period=int(figures["period"]),
                latency_takes=[int(f) for f in figures["latency_takes"]],
                clarity_db=float(figures["clarity_db"] if figures["clarity_db"] is not None else math.nan),
                distortion=Distortion(
                    float(distortion["frequency"]),
                    float(distortion["amplitude"]),
                    float(distortion["thd_n_db"] if distortion["thd_n_db"] is not None else -math.inf),
                    float(distortion["thd_db"] if distortion["thd_db"] is not None else -math.inf),
                ),
                response=FrequencyResponse(
                    frequency, _array(response["magnitude_db"]), nan, nan, int(response["latency"])
                ),
                written=str(figures.get("written", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RigError(
                f"{path}: not a usable calibration ({exc}); run python -m hil.rig calibrate"
            ) from exc

    def check(self, rate: int, period: int, ports: dict[str, Any]) -> list[str]:
        """What differs between this calibration and the rig as it is now, for the report.

        Raises:
            RigError: another sample rate (every figure would be off): calibrate again.
        """
        if rate != self.rate:
            raise RigError(
                f"the calibration was measured at {self.rate} Hz and the rig runs at {rate} Hz: "
                "calibrate again at this rate"
            )
        notes = []
        if period != self.period:
            notes.append(f"calibrated at a period of {self.period} frames, the rig runs at {period}")
        for key in ("jack_server", "playback", "capture"):
            if self.ports.get(key) != ports.get(key):
                notes.append(f"calibrated with {key} {self.ports.get(key)}, the rig uses {ports.get(key)}")
        return notes

    def box_response(self, measured: FrequencyResponse) -> FrequencyResponse:
        """``measured`` (interface and box) with the interface's own magnitude taken out."""
        valid = ~np.isnan(self.response.magnitude_db)
        own = np.interp(measured.frequency, self.response.frequency[valid], self.response.magnitude_db[valid])
        return FrequencyResponse(
            measured.frequency,
            measured.magnitude_db - own,
            measured.phase_deg,
            measured.coherence,
            measured.latency,
        )


def now() -> str:
    """The time now, for :attr:`Calibration.written`."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
