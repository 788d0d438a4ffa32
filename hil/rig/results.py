"""The figures of one rig run, as the runner collects them and the report writes them.

Plain dataclasses: the runner fills a :class:`RigRun` in section by
section (a section it could not measure stays empty and says why in
:attr:`RigRun.skipped`); :mod:`hil.rig.report` turns it into
``report.json`` (:meth:`RigRun.figures`) and ``report.html``. Arrays kept
for the plots (impulse responses, excerpts of recordings, the frequency
response) go into PNGs, not into the JSON. Any thread may use these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hil.rig.analysis import Distortion, Dropout, FrequencyResponse, SwitchAnalysis, frames_to_ms

#: Frequencies at which the JSON gives the dry path's response (octave centres, Hz).
RESPONSE_POINTS = (31.5, 63.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0)

#: How each section was measured: what the report prints beside its figures.
METHODS: dict[str, str] = {
    "latency": (
        "An MLS (or white noise) played into the box and recorded from its output on the "
        "rig's frame clock; the lag of the cross-correlation peak, in whole frames "
        "(hil.rig.analysis.measure_latency). The impulse response is the regularized "
        "deconvolution of the recording by the probe. On a real box the rig's own interface "
        "(its round trip measured with a loopback cable: the calibration) is taken out: "
        "frames is the box's, measured_frames what the rig recorded."
    ),
    "knob_to_sound": (
        "A steady tone through the board; a change sent over the protocol at a frame "
        "noted on the recording's clock; frames until the level in 1 ms windows is within "
        "0.5 dB of the new level and stays there (hil.rig.analysis.frames_to_level). On a real "
        "box the time is counted to the rig's input, so it includes the interface's input side "
        "(less than its calibrated round trip)."
    ),
    "switching": (
        "A tone (or tone bursts, for tails) through the board while it switches: the longest "
        "run of silent samples, the largest sample step in the switch's span against the "
        "signal's own, the time from request to the new level, and the level heard where "
        "the input pauses after the switch (hil.rig.analysis.analyse_switch)."
    ),
    "dropouts": (
        "A continuous tone through the board for the whole run while clients sweep controls: "
        "every run of silence (hil.rig.analysis.find_gaps) and every discontinuity, the "
        "residual after a blockwise sine fit over a threshold (hil.rig.analysis.find_clicks), "
        "beside the xruns the box's /healthz counted over the same time."
    ),
    "dry_path": (
        "The empty board: THD+N of a 1 kHz sine (residual of a least-squares sine fit, "
        "20 Hz to 20 kHz, over the whole signal; hil.rig.analysis.thd_n) and the frequency "
        "response from noise or a log sweep (Welch H1, hil.rig.analysis.frequency_response). "
        "On a real box the interface's own response (calibration) is taken out of the "
        "response; its THD+N, which cannot be taken out, is given beside the box's as the "
        "floor of what the rig can see."
    ),
}


def _summary(values: list[float]) -> dict[str, Any]:
    """count, p50, p99, min, max (``None`` when there are none)."""
    if not values:
        return {"count": 0, "p50": None, "p99": None, "min": None, "max": None}
    data = np.asarray(values, dtype=np.float64)
    return {
        "count": len(values),
        "p50": float(np.percentile(data, 50)),
        "p99": float(np.percentile(data, 99)),
        "min": float(data.min()),
        "max": float(data.max()),
    }


@dataclass
class Excerpt:
    """A stretch of a recording kept for a plot.

    Attributes:
        title: what it shows ("pedalboard switch 3", "gap at 412.3 s").
        samples: the recorded samples.
        rate: sample rate in Hz.
        first_frame: where ``samples`` start in the whole recording.
        marks: label → frame in the whole recording (a request, a commit, a gap's start).
    """

    title: str
    samples: np.ndarray
    rate: int
    first_frame: int = 0
    marks: dict[str, int] = field(default_factory=dict)


@dataclass
class LatencyResult:
    """Round-trip latency through one board, over several takes.

    Attributes:
        board: which board ("empty", "5 plugins").
        frames: the latency of each take, in frames.
        rate: sample rate in Hz.
        plugin_latency: what the board's plugins report as their own latency, frames.
        clarity_db: the weakest take's peak clarity (:class:`hil.rig.analysis.Latency`).
        impulse: one take's impulse response, from lag 0, for the plot.
        interface_frames: the rig's own interface's round trip (from the
            calibration; 0 on a virtual box): part of every take, not the box's.
    """

    board: str
    frames: list[int]
    rate: int
    plugin_latency: int = 0
    clarity_db: float = 0.0
    impulse: np.ndarray | None = None
    interface_frames: int = 0

    @property
    def median(self) -> int | None:
        """The median take as recorded, interface included, in frames (``None`` without takes)."""
        return int(np.median(self.frames)) if self.frames else None

    @property
    def box_frames(self) -> list[int]:
        """Each take less the interface's own round trip: the box's latency."""
        return [f - self.interface_frames for f in self.frames]

    def figures(self, baseline: int | None = None) -> dict[str, Any]:
        """This board's figures for the JSON.

        Args:
            baseline: the empty board's latency in frames (the interface's and
                the host's own); what this board adds beyond it and beyond its
                plugins' reported latency is ``host_added_frames``, which must be 0.
        """
        median = self.median
        added = None if median is None or baseline is None else median - baseline - self.plugin_latency
        box = None if median is None else median - self.interface_frames
        return {
            "board": self.board,
            "frames": box,
            "ms": None if box is None else frames_to_ms(box, self.rate),
            "measured_frames": median,
            "interface_frames": self.interface_frames,
            "plugin_latency_frames": self.plugin_latency,
            "host_added_frames": added,
            "takes": self.box_frames,
            "spread_frames": (max(self.frames) - min(self.frames)) if self.frames else None,
            "clarity_db": self.clarity_db,
        }


@dataclass
class TimingResult:
    """How long changes took to be heard (knob-to-sound, footswitch-to-sound).

    Attributes:
        name: what changed and how many clients were connected ("gain, 20 clients").
        frames: request → heard, one per change, on the recording's frame clock.
        rate: sample rate in Hz.
        missed: changes that were never heard within their recording.
    """

    name: str
    frames: list[int]
    rate: int
    missed: int = 0

    @property
    def ms(self) -> list[float]:
        """:attr:`frames` in milliseconds."""
        return [frames_to_ms(f, self.rate) for f in self.frames]

    def figures(self) -> dict[str, Any]:
        """This series' figures for the JSON: the summary in ms, and every change."""
        return {
            "name": self.name,
            "ms": _summary(self.ms),
            "missed": self.missed,
            "frames": list(self.frames),
        }


@dataclass
class SwitchResult:
    """Several switches of one kind (snapshot recall, pedalboard switch).

    Attributes:
        name: the kind of switch.
        analyses: one per switch.
        rate: sample rate in Hz.
        excerpts: recordings around (some of) the switches, for the plots.
        rig_xruns: per switch, the xruns the rig's own JACK server had during
            its recording (a virtual rig's dropped cycle is not the box's).
    """

    name: str
    analyses: list[SwitchAnalysis]
    rate: int
    excerpts: list[Excerpt] = field(default_factory=list)
    rig_xruns: list[int] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """Summaries over the switches, and each switch's figures."""
        heard = [a.to_new_sound for a in self.analyses if a.to_new_sound is not None]
        tails = [a.tail_continues for a in self.analyses if a.tail_continues is not None]
        return {
            "name": self.name,
            "count": len(self.analyses),
            "to_new_sound_ms": _summary([frames_to_ms(f, self.rate) for f in heard]),
            "longest_silence_frames": max((a.longest_silence for a in self.analyses), default=None),
            "worst_step_ratio_db": max((a.step_ratio_db for a in self.analyses), default=None),
            "tails_continued": sum(tails) if tails else None,
            "rig_xruns": sum(self.rig_xruns),
            "switches": [
                {
                    "rig_xruns": self.rig_xruns[i] if i < len(self.rig_xruns) else None,
                    "longest_silence_frames": a.longest_silence,
                    "silence_start_frame": a.silence_start,
                    "step_at_switch": a.step_at_switch,
                    "own_step": a.own_step,
                    "step_ratio_db": a.step_ratio_db,
                    "to_new_sound_frames": a.to_new_sound,
                    "tail_db": a.tail_db,
                    "tail_continues": a.tail_continues,
                }
                for i, a in enumerate(self.analyses)
            ],
        }


@dataclass
class DropoutResult:
    """A long recording of a steady tone and everything wrong in it.

    Attributes:
        seconds: how long the recording is.
        rate: sample rate in Hz.
        events: every gap and click, located in frames.
        clients: how many clients were sweeping controls meanwhile.
        xruns: the xruns the box's ``/healthz`` counted over the recording (``None``: unknown).
        excerpts: the recording around (some of) the events, for the plots.
        rig_xruns: the xruns of the rig's own JACK server during the recording (``None``: unknown).
    """

    seconds: float
    rate: int
    events: list[Dropout]
    clients: int = 0
    xruns: int | None = None
    excerpts: list[Excerpt] = field(default_factory=list)
    rig_xruns: int | None = None

    def figures(self) -> dict[str, Any]:
        """Counts, and every event located in seconds."""
        return {
            "seconds": self.seconds,
            "clients": self.clients,
            "gaps": sum(1 for e in self.events if e.kind == "gap"),
            "clicks": sum(1 for e in self.events if e.kind == "click"),
            "box_xruns": self.xruns,
            "rig_xruns": self.rig_xruns,
            "events": [
                {
                    "kind": e.kind,
                    "at_s": e.frame / self.rate,
                    "frame": e.frame,
                    "length_frames": e.length,
                    "size_db": e.size_db,
                }
                for e in self.events
            ],
        }


@dataclass
class DryPathResult:
    """What the empty board does to the signal.

    Attributes:
        distortion: THD+N and THD of a sine (interface included on a real box).
        response: the frequency response (the box's own: the interface's taken out).
        interface_distortion: the rig's interface's own THD+N, from the calibration.
        interface_response: the interface's own response, from the calibration.
    """

    distortion: Distortion
    response: FrequencyResponse
    interface_distortion: Distortion | None = None
    interface_response: FrequencyResponse | None = None

    def figures(self) -> dict[str, Any]:
        """THD+N, THD, the response's extremes in 20 Hz–20 kHz and its value at octave centres.

        With a calibration, also the interface's THD+N and response extremes
        (``interface_*``): the box's THD+N cannot be better than the interface's.
        """
        top = float(self.response.frequency[-1])
        low, high = self.response.deviation_db(20.0, min(20000.0, top))
        interface: dict[str, Any] = {}
        if self.interface_distortion is not None:
            interface["interface_thd_n_db"] = self.interface_distortion.thd_n_db
        if self.interface_response is not None:
            low_i, high_i = self.interface_response.deviation_db(20.0, min(20000.0, top))
            interface["interface_response_min_db"] = low_i
            interface["interface_response_max_db"] = high_i
        return {
            "thd_n_db": self.distortion.thd_n_db,
            "thd_n_percent": self.distortion.thd_n_percent,
            "thd_db": self.distortion.thd_db,
            "tone_hz": self.distortion.frequency,
            "tone_amplitude": self.distortion.amplitude,
            "response_min_db": low,
            "response_max_db": high,
            "response_latency_frames": self.response.latency,
            "response_db": {f"{hz:g}": self.response.at(hz) for hz in RESPONSE_POINTS if hz <= top},
            "interface_taken_out": self.interface_response is not None,
            **interface,
        }


@dataclass(frozen=True)
class Spoiled:
    """A take during which the rig's own JACK server had an xrun.

    Its samples may miss a cycle the box never dropped: the figures read
    off it measure the rig's machine too. The rig never takes it again (a
    retake would hide how often it happens); the report marks it.

    Attributes:
        section: the report section the take is for (``latency``, ``switching``, …).
        what: which take ("noise take 3, empty board", "pedalboard switch 2").
        xruns: the xruns the rig was told of during it.
        frames: where in the take each was told, in frames.
    """

    section: str
    what: str
    xruns: int
    frames: tuple[int, ...] = ()

    def figures(self) -> dict[str, Any]:
        return {"section": self.section, "what": self.what, "xruns": self.xruns, "frames": list(self.frames)}


@dataclass
class RigRun:
    """Everything one run of the rig measured.

    Attributes:
        settings: the rig's settings (box address, rate, period, rounds, clients, …).
        box: what the box said about itself: ``{"healthz": {...}, "version": "..."}``.
        latency: one entry per board, the empty board first (the others'
            ``host_added_frames`` are measured against it).
        knob_to_sound: one entry per kind of change and client count.
        switching: one entry per kind of switch.
        dropouts: the long run, if it was made.
        dry_path: THD+N and response of the empty board, if measured.
        skipped: section → why it was not measured.
        methods: section → how it was measured (default :data:`METHODS`).
        calibration: the rig's interface as its calibration measured it (a real
            box), or ``None`` (a virtual box, or a real one run without).
        spoiled: every take during which the rig's own server had an xrun
            (its figures are in the sections all the same, and marked).
        server_xruns: what the rig's own JACK server said of its late cycles (which
            client was late, or the server itself), when the rig started that server
            (a virtual box); the culprit of a spoiled take.
    """

    settings: dict[str, Any]
    box: dict[str, Any]
    latency: list[LatencyResult] = field(default_factory=list)
    knob_to_sound: list[TimingResult] = field(default_factory=list)
    switching: list[SwitchResult] = field(default_factory=list)
    dropouts: DropoutResult | None = None
    dry_path: DryPathResult | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=lambda: dict(METHODS))
    calibration: dict[str, Any] | None = None
    spoiled: list[Spoiled] = field(default_factory=list)
    server_xruns: list[str] = field(default_factory=list)

    def spoiled_in(self, section: str) -> list[Spoiled]:
        """The spoiled takes of one section."""
        return [take for take in self.spoiled if take.section == section]

    def figures(self) -> dict[str, Any]:
        """Every figure, JSON-ready: what ``report.json`` holds besides the plots' list."""
        baseline = self.latency[0].median if self.latency else None
        return {
            "settings": self.settings,
            "box": self.box,
            "methods": self.methods,
            "skipped": self.skipped,
            "latency": [r.figures(baseline) for r in self.latency],
            "knob_to_sound": [r.figures() for r in self.knob_to_sound],
            "switching": [r.figures() for r in self.switching],
            "dropouts": None if self.dropouts is None else self.dropouts.figures(),
            "dry_path": None if self.dry_path is None else self.dry_path.figures(),
            "calibration": self.calibration,
            "spoiled_takes": [take.figures() for take in self.spoiled],
            "server_xruns": self.server_xruns,
        }
