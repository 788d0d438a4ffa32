"""What the rig reads off a recording: latency, gaps, clicks, level changes, switches, THD+N, response.

Pure functions of numpy arrays: no JACK, no clock, no files, so any thread
may call them and every one is tested on synthesized signals with known
answers (``tests/test_rig_analysis.py``). Every position is a frame index
into the recording handed in: the recording's own frame clock, never a wall
clock. Levels are in dB; "dBFS" means relative to a full-scale 1.0 sample.

Each function's docstring says its method; the report quotes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import signal as sps

#: What :func:`rms_db` says for digital silence (log of zero).
SILENCE_DB = -240.0
#: A sample quieter than this (about −80 dBFS) counts as silent in a gap.
GAP_FLOOR = 1e-4
#: A tone crosses zero for a sample or two; a run of silence this long is a gap.
GAP_MIN_FRAMES = 4
#: Frames either side of a latency peak that :attr:`Latency.clarity` ignores (the peak's own skirt).
PEAK_GUARD = 8
#: Default click threshold: residual peak relative to the tone's amplitude.
CLICK_THRESHOLD_DB = -40.0
#: A click must also stand this many robust standard deviations above the residual's noise.
CLICK_NOISE_FACTOR = 8.0
#: Blocks fitted at once by :func:`sine_residual` (bounds memory on hour-long recordings).
_FIT_CHUNK = 4096


# -- levels -------------------------------------------------------------------------


def rms_db(x: np.ndarray) -> float:
    """RMS level in dBFS (:data:`SILENCE_DB` for digital silence or no samples)."""
    power = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return 10.0 * float(np.log10(power)) if power > 1e-24 else SILENCE_DB


def gain_db(recorded: np.ndarray, reference: np.ndarray) -> float:
    """Level of ``recorded`` relative to ``reference`` in dB (RMS over each)."""
    return rms_db(recorded) - rms_db(reference)


def _power_db(power: np.ndarray) -> np.ndarray:
    """:func:`rms_db` of mean powers, elementwise."""
    safe = np.where(power > 1e-24, power, 1.0)
    db: np.ndarray = np.where(power > 1e-24, 10.0 * np.log10(safe), SILENCE_DB)
    return db


def window_gains(recorded: np.ndarray, reference: np.ndarray, window: int = 480) -> np.ndarray:
    """Gain in dB of each whole ``window`` of ``recorded`` against ``reference``.

    Method: RMS of each non-overlapping window of both, as :func:`gain_db`.
    A 1 kHz probe at 48 kHz fills a 480-frame window with exactly ten
    periods, so every window of an unchanged signal reads the same gain; a
    dropout or a level change shows up in the windows it touches.
    """
    count = min(len(recorded), len(reference)) // window
    if count == 0:
        return np.zeros(0)

    def powers(x: np.ndarray) -> np.ndarray:
        blocks = np.asarray(x[: count * window], dtype=np.float64).reshape(count, window)
        power: np.ndarray = np.mean(np.square(blocks), axis=1)
        return power

    gains: np.ndarray = _power_db(powers(recorded)) - _power_db(powers(reference))
    return gains


def sliding_level_db(x: np.ndarray, window: int) -> np.ndarray:
    """The RMS level in dBFS of every window ``x[s : s + window]``, for each start ``s``.

    Method: running sums of the squared samples (one pass, so hour-long
    recordings are cheap); ``len(x) - window + 1`` values.
    """
    if window <= 0:
        raise ValueError(f"window must be positive, not {window}")
    if len(x) < window:
        return np.zeros(0)
    sums = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    power = (sums[window:] - sums[:-window]) / window
    return _power_db(np.maximum(power, 0.0))


def frames_to_ms(frames: float, rate: int) -> float:
    """Frames at ``rate`` Hz in milliseconds."""
    return float(frames) * 1000.0 / rate


# -- latency ------------------------------------------------------------------------


def _cross_correlation(
    recorded: np.ndarray, reference: np.ndarray, max_lag: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(lags, correlation at each lag) of ``recorded`` against ``reference``, by FFT."""
    rec = np.asarray(recorded, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    rec = rec - rec.mean() if rec.size else rec
    ref = ref - ref.mean() if ref.size else ref
    n = len(rec) + len(ref)
    size = 1 << max(0, (n - 1).bit_length())
    spectrum = np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size))
    corr = np.fft.irfft(spectrum, size)
    limit = max_lag if max_lag is not None else len(rec) - 1
    lags = np.concatenate([np.arange(0, limit + 1), np.arange(-min(limit, len(ref) - 1), 0)])
    return lags, corr[lags % size]


def latency_frames(recorded: np.ndarray, reference: np.ndarray, max_lag: int | None = None) -> int:
    """How many frames ``recorded`` lags ``reference``: the cross-correlation peak.

    Method: as :func:`measure_latency`. Use a broadband signal (noise, MLS, a
    click): a sine's correlation repeats every period. Negative means
    ``recorded`` leads.
    """
    lags, corr = _cross_correlation(recorded, reference, max_lag)
    return int(lags[int(np.argmax(np.abs(corr)))])


@dataclass(frozen=True)
class Latency:
    """A round-trip latency read off one recording.

    Attributes:
        frames: how many frames the recording lags the reference.
        rate: the sample rate, for :attr:`ms`.
        clarity_db: the correlation peak over the largest value farther than
            :data:`PEAK_GUARD` frames from it; under about 6 dB the figure
            is not to be trusted (a tonal probe, or the box's output is not
            the probe).
        inverted: the box turned the signal upside down.
    """

    frames: int
    rate: int
    clarity_db: float
    inverted: bool

    @property
    def ms(self) -> float:
        """The latency in milliseconds."""
        return frames_to_ms(self.frames, self.rate)


def measure_latency(
    recorded: np.ndarray, reference: np.ndarray, rate: int, max_lag: int | None = None
) -> Latency:
    """The round-trip latency of ``recorded`` against the ``reference`` played, in whole frames.

    Method: cross-correlation by FFT (zero-padded to a power of two, so it is
    linear, not circular) of the mean-removed signals; the lag of the largest
    absolute value, so a box that inverts polarity still reads right. With a
    broadband probe (noise, MLS, an impulse) the peak is one sample wide and
    stands tens of dB above the rest; its height over the next largest value
    outside the peak's skirt is reported as :attr:`Latency.clarity_db`.

    Args:
        recorded: what came back, sample-aligned with ``reference``.
        reference: what was played.
        rate: sample rate in Hz.
        max_lag: largest lag searched either way (default: the whole recording).
    """
    lags, corr = _cross_correlation(recorded, reference, max_lag)
    magnitude = np.abs(corr)
    best = int(np.argmax(magnitude))
    lag = int(lags[best])
    others = magnitude[np.abs(lags - lag) > PEAK_GUARD]
    peak = float(magnitude[best])
    rest = float(others.max()) if others.size else 0.0
    clarity = 20.0 * np.log10(peak / rest) if rest > 0 and peak > 0 else (0.0 if peak == 0 else 240.0)
    return Latency(frames=lag, rate=rate, clarity_db=float(clarity), inverted=bool(corr[best] < 0))


def impulse_response(
    recorded: np.ndarray, reference: np.ndarray, length: int, floor_db: float = -80.0
) -> np.ndarray:
    """The box's impulse response, ``length`` taps from lag 0, as seen through ``reference``.

    Method: regularized deconvolution, ``h = IFFT(Y·X* / (|X|² + ε))`` with
    ε at ``floor_db`` below the reference's strongest bin, so that bands the
    probe does not excite give zero instead of noise. For a box that only
    delays and scales, the result is one tap at the latency with the gain.
    """
    rec = np.asarray(recorded, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    n = len(rec) + len(ref)
    size = 1 << max(0, (n - 1).bit_length())
    x = np.fft.rfft(ref, size)
    y = np.fft.rfft(rec, size)
    power = np.abs(x) ** 2
    eps = float(power.max()) * 10.0 ** (floor_db / 10.0) if power.size else 0.0
    h = np.fft.irfft(y * np.conj(x) / (power + eps + 1e-300), size)
    result: np.ndarray = h[:length]
    return result


# -- gaps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """A run of silence in a recording: ``length`` frames from frame ``start``."""

    start: int
    length: int

    @property
    def end(self) -> int:
        """The first frame after the gap."""
        return self.start + self.length


def _quiet_runs(x: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of every run of samples with ``|x| < floor``."""
    quiet = np.concatenate([[0], (np.abs(x) < floor).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(quiet))
    starts, stops = edges[::2], edges[1::2]
    return starts, stops - starts


def find_gaps(recorded: np.ndarray, floor: float = GAP_FLOOR, min_length: int = GAP_MIN_FRAMES) -> list[Gap]:
    """Every run of at least ``min_length`` samples quieter than ``floor``, in order.

    Method: mark samples with ``|x| < floor``, find the edges of the marked
    runs, keep runs of ``min_length`` or more. A tone crosses zero for a
    sample or two (a 1 kHz sine at −40 dBFS spends two samples under 1e-4 at
    48 kHz); a dropout is a run much longer. Trim the recording's own silent
    lead-in and tail before calling.
    """
    starts, lengths = _quiet_runs(recorded, floor)
    keep = lengths >= min_length
    return [Gap(int(s), int(n)) for s, n in zip(starts[keep], lengths[keep], strict=True)]


def longest_gap(recorded: np.ndarray, floor: float = GAP_FLOOR) -> tuple[int, int]:
    """The longest run of samples quieter than ``floor``, and where it starts: ``(length, start)``.

    Method: as :func:`find_gaps`, every run counted; ``(0, 0)`` when no
    sample is quiet.
    """
    starts, lengths = _quiet_runs(recorded, floor)
    if not starts.size:
        return 0, 0
    longest = int(np.argmax(lengths))
    return int(lengths[longest]), int(starts[longest])


# -- clicks -------------------------------------------------------------------------


def estimate_frequency(x: np.ndarray, rate: int) -> float:
    """The frequency of the strongest tone in ``x``, in Hz.

    Method: the magnitude spectrum of the Hann-windowed, mean-removed signal;
    the largest bin, refined by a parabola through the log magnitudes of it
    and its neighbours (good to a few hundredths of a bin).
    """
    data = np.asarray(x, dtype=np.float64)
    data = data - data.mean()
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    if len(spectrum) < 3:
        raise ValueError("too few samples to find a tone")
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-300)
    denominator = a - 2.0 * b + c
    shift = 0.5 * (a - c) / denominator if denominator != 0 else 0.0
    return float((k + shift) * rate / len(data))


def _block_basis(block: int, omega: float) -> np.ndarray:
    """Columns: sin, cos, their linear ramps (a changing level), and DC, over ``block`` samples."""
    n = np.arange(block, dtype=np.float64)
    ramp = (n - (block - 1) / 2.0) / block
    s, c = np.sin(omega * n), np.cos(omega * n)
    return np.stack([s, c, ramp * s, ramp * c, np.ones(block)], axis=1)


def _fit_blocks(x: np.ndarray, omega: float, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(residual, tone amplitude of each block) of the blockwise sine fit of :func:`sine_residual`."""
    data = np.asarray(x, dtype=np.float64)
    total = len(data)
    block = min(block, total)
    if block < 5:
        return data - (data.mean() if total else 0.0), np.zeros(0)
    basis = _block_basis(block, omega)
    solve = np.linalg.pinv(basis)  # (5, block)
    residual = np.empty(total)
    amplitudes: list[np.ndarray] = []
    whole = total // block
    for first in range(0, whole, _FIT_CHUNK):
        last = min(whole, first + _FIT_CHUNK)
        blocks = data[first * block : last * block].reshape(last - first, block)
        coefficients = blocks @ solve.T
        residual[first * block : last * block] = (blocks - coefficients @ basis.T).ravel()
        amplitudes.append(np.hypot(coefficients[:, 0], coefficients[:, 1]))
    if whole * block < total:  # the tail: a block aligned with the end, overlapping the last whole one
        tail = data[total - block :]
        coefficients = solve @ tail
        rest = total - whole * block
        residual[whole * block :] = (tail - basis @ coefficients)[-rest:]
    return residual, np.concatenate(amplitudes) if amplitudes else np.zeros(0)


def sine_residual(x: np.ndarray, rate: int, frequency: float, block: int | None = None) -> np.ndarray:
    """What is left of ``x`` once a steady tone at ``frequency`` is taken out, sample by sample.

    Method: ``x`` cut into blocks of ``block`` samples (default four periods,
    at least 32); in each, a least-squares fit of ``sin``, ``cos``, the same
    two times a linear ramp (so a level that glides, a fade, fits too) and a
    DC offset; the residual is ``x`` minus the fit. A steady or gliding tone
    leaves only noise; a discontinuity (a click, a dropped or repeated
    sample, an abrupt level step) cannot be fitted by those five smooth
    functions and leaves a spike where it happened.
    """
    size = block if block is not None else max(32, round(4 * rate / frequency))
    return _fit_blocks(x, 2.0 * np.pi * frequency / rate, size)[0]


@dataclass(frozen=True)
class Click:
    """A discontinuity in a recorded tone.

    Attributes:
        frame: where the residual jumps, in frames into the recording.
        size_db: the residual's peak relative to the tone's peak amplitude.
    """

    frame: int
    size_db: float


def _events(over: np.ndarray, merge: int) -> list[tuple[int, int]]:
    """Group the sorted indices ``over`` into (first, last) runs no more than ``merge`` apart."""
    if not over.size:
        return []
    breaks = np.flatnonzero(np.diff(over) > merge)
    firsts = np.concatenate([[over[0]], over[breaks + 1]])
    lasts = np.concatenate([over[breaks], [over[-1]]])
    return [(int(a), int(b)) for a, b in zip(firsts, lasts, strict=True)]


def find_clicks(
    recorded: np.ndarray,
    rate: int,
    frequency: float | None = None,
    threshold_db: float = CLICK_THRESHOLD_DB,
    block: int | None = None,
) -> list[Click]:
    """Every discontinuity in a recorded steady tone, located in frames.

    Method: the residual after the blockwise sine fit of :func:`sine_residual`
    (the tone's ``frequency`` is estimated with :func:`estimate_frequency`
    when not given); samples where ``|residual|`` exceeds both
    ``threshold_db`` below the tone's amplitude (the median of the blocks'
    fitted amplitudes) and :data:`CLICK_NOISE_FACTOR` robust standard
    deviations (1.4826 × median absolute residual) are grouped when less than
    a block apart, and each group is one click, sized by its largest residual
    and placed where the residual jumps most within a block of the group (a
    spike's first sample, a step's edge, a dropped sample's place). Both
    edges of a gap are discontinuities and are reported too; so is a tone
    that starts or stops inside the recording, so trim those ends first.

    Args:
        recorded: a steady tone, possibly with dropouts and level changes.
        rate: sample rate in Hz.
        frequency: the tone's frequency in Hz (estimated when ``None``).
        threshold_db: smallest click reported, relative to the tone's peak amplitude.
        block: fit block length in frames (default: four periods, at least 32).
    """
    tone = frequency if frequency is not None else estimate_frequency(recorded, rate)
    size = block if block is not None else max(32, round(4 * rate / tone))
    residual, amplitudes = _fit_blocks(recorded, 2.0 * np.pi * tone / rate, size)
    if amplitudes.size:
        amplitude = float(np.median(amplitudes))
    else:
        amplitude = float(np.max(np.abs(recorded), initial=0.0))
    magnitude = np.abs(residual)
    noise = 1.4826 * float(np.median(magnitude)) if magnitude.size else 0.0
    threshold = max(amplitude * 10.0 ** (threshold_db / 20.0), CLICK_NOISE_FACTOR * noise, 1e-12)
    # jumps[i]: how far the residual moves from frame i - 1 to frame i (where a discontinuity is).
    jumps = np.abs(np.diff(residual, prepend=residual[:1]))
    clicks = []
    for first, last in _events(np.flatnonzero(magnitude > threshold), size):
        lo, hi = max(0, first - size), min(len(residual), last + size + 1)
        span = jumps[lo:hi]
        at = lo + int(np.argmax(span >= 0.9 * span.max()))  # a spike jumps twice: its first sample
        peak = float(magnitude[first : last + 1].max())
        size_db = 20.0 * np.log10(peak / amplitude) if amplitude > 0 else 0.0
        clicks.append(Click(frame=at, size_db=float(size_db)))
    return clicks


@dataclass(frozen=True)
class Dropout:
    """One fault in a recording of a steady tone.

    Attributes:
        kind: ``"gap"`` (the sound stopped) or ``"click"`` (it jumped).
        frame: where it starts, in frames into the recording.
        length: the gap's length in frames (0 for a click).
        size_db: a click's size relative to the tone (0 for a gap).
    """

    kind: str
    frame: int
    length: int
    size_db: float


def find_dropouts(
    recorded: np.ndarray,
    rate: int,
    frequency: float | None = None,
    floor: float = GAP_FLOOR,
    min_gap: int = GAP_MIN_FRAMES,
    threshold_db: float = CLICK_THRESHOLD_DB,
) -> list[Dropout]:
    """Every gap and every click in a recorded steady tone, in order of frame.

    Method: :func:`find_gaps` and :func:`find_clicks`; a click within a fit
    block of a gap's edges is that gap's edge and is not listed again.
    """
    tone = frequency if frequency is not None else estimate_frequency(recorded, rate)
    block = max(32, round(4 * rate / tone))
    gaps = find_gaps(recorded, floor, min_gap)
    events = [Dropout("gap", g.start, g.length, 0.0) for g in gaps]
    for click in find_clicks(recorded, rate, tone, threshold_db, block):
        if not any(g.start - block <= click.frame <= g.end + block for g in gaps):
            events.append(Dropout("click", click.frame, 0, click.size_db))
    return sorted(events, key=lambda e: e.frame)


# -- level changes ------------------------------------------------------------------


def frames_to_level(
    recorded: np.ndarray,
    request_frame: int,
    target_db: float,
    *,
    reference: np.ndarray | None = None,
    window: int = 48,
    tolerance_db: float = 0.5,
    hold: int | None = None,
) -> int | None:
    """Frames from ``request_frame`` until the recording's level is within ``tolerance_db`` of ``target_db``.

    Method: the RMS level of every ``window``-frame window (relative to the
    same window of ``reference`` when given, so a tone need not fill whole
    periods; in dBFS otherwise); the answer is the start of the first window
    at or after ``request_frame`` that is within ``tolerance_db`` of
    ``target_db`` and stays so for the ``hold`` frames that follow (default
    one window), so noise crossing the line once does not count. A window
    that starts just before an abrupt change already reads close to the new
    level, so the figure may be early by the frames that hold the share of
    the window's energy the tolerance allows (for a 6 dB step read within
    0.5 dB, about 2 of the default 48, a few more when the change falls
    near a zero crossing of a tone); it is never late. Both ``request_frame`` and
    the answer are on the recording's own frame clock.

    Returns:
        Frames (0 when the level is already there), or ``None`` when the
        recording never gets there.
    """
    levels = sliding_level_db(recorded, window)
    if reference is not None:
        count = min(len(recorded), len(reference)) - window + 1
        levels = levels[: max(count, 0)] - sliding_level_db(reference, window)[: max(count, 0)]
    near = np.abs(levels - target_db) <= tolerance_db
    span = window if hold is None else hold
    # steady[s]: windows s..s+span all near (past the end counts as not near), by running counts.
    misses = np.concatenate([[0], np.cumsum(~near), np.full(span, len(near) + 1)])
    steady = misses[span + 1 : span + 1 + len(near)] - misses[: len(near)] == 0
    candidates = np.flatnonzero(steady[max(request_frame, 0) :])
    return int(candidates[0]) if candidates.size else None


# -- switching ----------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchAnalysis:
    """What a player hears of one switch (snapshot recall or pedalboard change).

    Attributes:
        longest_silence: the longest run of silent samples, in frames.
        silence_start: where it starts.
        step_at_switch: the largest sample-to-sample step in the switch's span.
        own_step: the signal's own largest step (of the reference, or of the
            recording outside the switch's span).
        to_new_sound: frames from the request to the new level
            (:func:`frames_to_level`), or ``None`` when no level was asked
            for or it was never reached.
        tail_db: the recording's level where the input is silent after the
            request (the old board's tail ringing on), or ``None`` when the
            input never paused long enough to tell.
        tail_continues: whether that tail is above the tail floor.
    """

    longest_silence: int
    silence_start: int
    step_at_switch: float
    own_step: float
    to_new_sound: int | None
    tail_db: float | None
    tail_continues: bool | None

    @property
    def step_ratio_db(self) -> float:
        """The switch's largest step over the signal's own, in dB (≤ 0: no click)."""
        if self.own_step <= 0:
            return 0.0 if self.step_at_switch <= 0 else 240.0
        if self.step_at_switch <= 0:
            return SILENCE_DB
        return float(20.0 * np.log10(self.step_at_switch / self.own_step))


def largest_step(x: np.ndarray) -> float:
    """The largest ``|x[n] − x[n−1]|`` (0 for fewer than two samples)."""
    if len(x) < 2:
        return 0.0
    return float(np.max(np.abs(np.diff(np.asarray(x, dtype=np.float64)))))


def analyse_switch(
    recorded: np.ndarray,
    request_frame: int,
    *,
    reference: np.ndarray | None = None,
    span: int = 4800,
    floor: float = GAP_FLOOR,
    new_level_db: float | None = None,
    window: int = 48,
    tolerance_db: float = 0.5,
    tail_floor_db: float = -60.0,
    min_tail: int = 480,
) -> SwitchAnalysis:
    """Read one switch off a recording of it.

    Method:

    * longest silence: :func:`longest_gap` over the whole recording (trim
      the recording's own silent lead-in and tail first);
    * steps: :func:`largest_step` over ``recorded[request_frame : request_frame + span]``
      against the reference's largest step, or, without a reference, the
      recording's own largest step outside that span; a ratio over 0 dB is
      a click the signal itself does not have;
    * to new sound: :func:`frames_to_level` to ``new_level_db`` (a gain
      against ``reference`` when given, else dBFS);
    * tail: the RMS level of the recording over every run of at least
      ``min_tail`` frames after the request where the reference is silent
      (under ``floor``): the input has stopped, so whatever is heard is the
      old board's tail; it continues when louder than ``tail_floor_db``.

    Args:
        recorded: the box's output around the switch.
        request_frame: when the switch was asked for, in frames into the recording.
        reference: what was played, sample-aligned (optional).
        span: frames after the request that belong to the switch (its fade and settling).
        floor: a sample under this is silent.
        new_level_db: the level the switch goes to, for :attr:`SwitchAnalysis.to_new_sound`.
        window: level window for :func:`frames_to_level`.
        tolerance_db: how near the new level counts as there.
        tail_floor_db: a tail quieter than this has stopped.
        min_tail: shortest pause in the input that tells a tail.
    """
    silence, silence_start = longest_gap(recorded, floor)
    start = max(request_frame, 1)
    stop = min(len(recorded), request_frame + span)
    at_switch = largest_step(recorded[start - 1 : stop])
    if reference is not None:
        own = largest_step(reference)
    else:
        outside = [recorded[: start - 1], recorded[stop:]]
        own = max((largest_step(part) for part in outside), default=0.0)
    to_new = (
        frames_to_level(
            recorded,
            request_frame,
            new_level_db,
            reference=reference,
            window=window,
            tolerance_db=tolerance_db,
        )
        if new_level_db is not None
        else None
    )
    tail_db: float | None = None
    if reference is not None:
        after = max(request_frame, 0)
        starts, lengths = _quiet_runs(reference[after : len(recorded)], floor)
        keep = lengths >= min_tail
        runs = zip(starts[keep], lengths[keep], strict=True)
        pieces = [recorded[after + s : after + s + n] for s, n in runs]
        if pieces:
            tail_db = rms_db(np.concatenate(pieces))
    return SwitchAnalysis(
        longest_silence=silence,
        silence_start=silence_start,
        step_at_switch=at_switch,
        own_step=own,
        to_new_sound=to_new,
        tail_db=tail_db,
        tail_continues=None if tail_db is None else tail_db > tail_floor_db,
    )


# -- quality of the dry path --------------------------------------------------------


@dataclass(frozen=True)
class Distortion:
    """THD+N and THD of a recorded sine.

    Attributes:
        frequency: the fitted fundamental, Hz.
        amplitude: its peak amplitude.
        thd_n_db: everything but the fundamental in the band, relative to the
            whole signal in the band (AES17's ratio), in dB.
        thd_db: the harmonics alone relative to the fundamental, in dB.
    """

    frequency: float
    amplitude: float
    thd_n_db: float
    thd_db: float

    @property
    def thd_n_percent(self) -> float:
        """THD+N as a percentage."""
        return float(100.0 * 10.0 ** (self.thd_n_db / 20.0))


def _fit_tones(x: np.ndarray, omegas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit of DC plus a sin and a cos per angular frequency; (fit, amplitude per tone)."""
    n = np.arange(len(x), dtype=np.float64)
    columns = [np.ones(len(x))]
    for omega in omegas:
        columns += [np.sin(omega * n), np.cos(omega * n)]
    basis = np.stack(columns, axis=1)
    coefficients = np.linalg.lstsq(basis, x, rcond=None)[0]
    amplitudes = np.hypot(coefficients[1::2], coefficients[2::2])
    return basis @ coefficients, amplitudes


def _refine_frequency(x: np.ndarray, frequency: float, rate: int, steps: int = 4) -> float:
    """``frequency`` made exact by Gauss-Newton steps on the fit of a sine to ``x``.

    ``A sin((ω+δ)n + φ) ≈ A sin(ωn + φ) + δ n A cos(ωn + φ)``: fitting sin, cos,
    n·sin, n·cos and DC gives ``(a, b, c, d)`` with ``δ = (a d − b c)/(a² + b²)``.
    """
    n = np.arange(len(x), dtype=np.float64)
    centre = (len(x) - 1) / 2.0
    omega = 2.0 * np.pi * frequency / rate
    for _ in range(steps):
        s, c = np.sin(omega * (n - centre)), np.cos(omega * (n - centre))
        m = n - centre
        basis = np.stack([s, c, m * s, m * c, np.ones(len(x))], axis=1)
        a, b, cs, cc, _ = np.linalg.lstsq(basis, x, rcond=None)[0]
        power = a * a + b * b
        if power <= 0:
            break
        omega += float((a * cc - b * cs) / power)
    return float(omega * rate / (2.0 * np.pi))


def _band_power(x: np.ndarray, rate: int, band: tuple[float, float]) -> float:
    """Mean power of ``x`` within ``band`` Hz (an ideal band-pass by FFT)."""
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    inside = (freqs >= band[0]) & (freqs <= band[1])
    weights = np.where((freqs == 0) | (freqs == rate / 2), 1.0, 2.0)  # one-sided spectrum
    return float(np.sum(weights[inside] * np.abs(spectrum[inside]) ** 2)) / len(x) ** 2


def thd_n(
    recorded: np.ndarray,
    rate: int,
    frequency: float | None = None,
    band: tuple[float, float] = (20.0, 20000.0),
    harmonics: int = 9,
) -> Distortion:
    """THD+N and THD of a recorded steady sine.

    Method: the fundamental's frequency is found with
    :func:`estimate_frequency` (or taken as given) and refined to the value
    that minimizes the residual of a least-squares fit of DC, sin and cos
    over the whole recording (a bounded scalar search within one FFT bin);
    the residual (recording minus that fit: harmonics, noise, hum, clicks)
    and the recording are each limited to ``band`` (clipped to Nyquist) by
    FFT, and THD+N is the ratio of their powers (AES17: relative to the
    whole signal). THD is the root-sum-square of harmonics 2 to
    ``harmonics`` (those under Nyquist), each fitted at its exact multiple
    of the fundamental, over the fundamental. Record whole seconds of a
    steady tone; the fit needs no window and no whole number of periods.
    """
    x = np.asarray(recorded, dtype=np.float64)
    if len(x) < 16:
        raise ValueError("too few samples for THD+N")
    guess = frequency if frequency is not None else estimate_frequency(x, rate)
    bin_hz = rate / len(x)

    def residual_power(f: float) -> float:
        fit, _ = _fit_tones(x, [2.0 * np.pi * f / rate])
        return float(np.mean((x - fit) ** 2))

    found = optimize.minimize_scalar(
        residual_power, bounds=(guess - bin_hz, guess + bin_hz), method="bounded", options={"xatol": 1e-4}
    )
    fundamental = _refine_frequency(x, float(found.x), rate)
    fit, amplitudes = _fit_tones(x, [2.0 * np.pi * fundamental / rate])
    limits = (band[0], min(band[1], rate / 2.0))
    total = _band_power(x, rate, limits)
    rest = _band_power(x - fit, rate, limits)
    thd_n_db = 10.0 * np.log10(max(rest, 1e-30) / max(total, 1e-30))
    orders = [k for k in range(1, harmonics + 1) if k * fundamental < rate / 2.0]
    _, levels = _fit_tones(x, [2.0 * np.pi * k * fundamental / rate for k in orders])
    harmonic_power = float(np.sum(levels[1:] ** 2))
    thd_db = 10.0 * np.log10(max(harmonic_power, 1e-30) / max(float(levels[0]) ** 2, 1e-30))
    return Distortion(
        frequency=fundamental, amplitude=float(amplitudes[0]), thd_n_db=float(thd_n_db), thd_db=float(thd_db)
    )


@dataclass(frozen=True)
class FrequencyResponse:
    """A measured transfer function, one value per frequency bin.

    Attributes:
        frequency: bin centres, Hz.
        magnitude_db: gain at each, dB (NaN where the probe had no energy).
        phase_deg: phase at each once the latency is taken out, degrees.
        coherence: 0..1; near 1 where the output is a linear function of the input.
        latency: the frames taken out before estimating.
    """

    frequency: np.ndarray
    magnitude_db: np.ndarray
    phase_deg: np.ndarray
    coherence: np.ndarray
    latency: int

    def at(self, hz: float) -> float:
        """The gain at ``hz``, interpolated between bins, in dB."""
        valid = ~np.isnan(self.magnitude_db)
        return float(np.interp(hz, self.frequency[valid], self.magnitude_db[valid]))

    def deviation_db(self, low: float = 20.0, high: float = 20000.0) -> tuple[float, float]:
        """(lowest, highest) gain in dB between ``low`` and ``high`` Hz."""
        inside = (self.frequency >= low) & (self.frequency <= high) & ~np.isnan(self.magnitude_db)
        values = self.magnitude_db[inside]
        if not values.size:
            return float("nan"), float("nan")
        return float(values.min()), float(values.max())


def frequency_response(
    recorded: np.ndarray,
    reference: np.ndarray,
    rate: int,
    segment: int = 4096,
    latency: int | None = None,
) -> FrequencyResponse:
    """The transfer function from ``reference`` to ``recorded``.

    Method: the recording is first shifted by its latency
    (:func:`measure_latency` unless given), since a delay that is a sizeable
    part of a segment would bias the estimate; then Welch's method with Hann
    windows of ``segment`` frames overlapping by half: the H1 estimate
    ``H = P_xy / P_xx`` (cross spectrum over the reference's auto spectrum),
    and the coherence ``|P_xy|² / (P_xx P_yy)``. Works with noise, an MLS or
    a log sweep as the reference; bins where the reference has less than
    −100 dB of its strongest bin's energy are NaN.
    """
    ref = np.asarray(reference, dtype=np.float64)
    rec = np.asarray(recorded, dtype=np.float64)
    lag = latency if latency is not None else measure_latency(rec, ref, rate).frames
    if lag >= 0:
        rec, ref = rec[lag:], ref[: len(ref) - lag]
    else:
        rec, ref = rec[: len(rec) + lag], ref[-lag:]
    count = min(len(rec), len(ref))
    rec, ref = rec[:count], ref[:count]
    size = min(segment, count)
    freqs, pxx = sps.welch(ref, rate, window="hann", nperseg=size)
    _, pyy = sps.welch(rec, rate, window="hann", nperseg=size)
    _, pxy = sps.csd(ref, rec, rate, window="hann", nperseg=size)
    excited = pxx > float(pxx.max()) * 1e-10 if pxx.size else pxx > 0
    safe_pxx = np.where(excited, pxx, 1.0)
    h = pxy / safe_pxx
    magnitude = np.where(excited, 20.0 * np.log10(np.maximum(np.abs(h), 1e-15)), np.nan)
    phase = np.where(excited, np.degrees(np.angle(h)), np.nan)
    coherence = np.where(excited, np.abs(pxy) ** 2 / np.maximum(safe_pxx * pyy, 1e-300), 0.0)
    return FrequencyResponse(
        frequency=np.asarray(freqs, dtype=np.float64),
        magnitude_db=np.asarray(magnitude, dtype=np.float64),
        phase_deg=np.asarray(phase, dtype=np.float64),
        coherence=np.asarray(coherence, dtype=np.float64),
        latency=lag,
    )
