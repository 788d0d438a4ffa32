"""The rig's test signals: what it plays into a box to measure it.

Pure functions returning float32 arrays (JACK's sample format), levels in
dBFS. Any thread may call them.

* :func:`sine`: a tone, for levels, gaps, clicks and THD+N.
* :func:`noise`: white noise, broadband, for latency and frequency response.
* :func:`mls`: a maximum-length sequence, the classic latency probe: its
  circular autocorrelation is one peak and a flat floor.
* :func:`log_sweep`: an exponential sine sweep (Farina), for frequency
  response with more energy per band than noise.
* :func:`impulse`: one non-zero sample.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps


def _amplitude(level_db: float) -> float:
    return float(10.0 ** (level_db / 20.0))


def sine(
    frequency: float = 1000.0, frames: int = 24000, rate: int = 48000, level_db: float = -12.0
) -> np.ndarray:
    """A sine of ``frames`` samples at ``level_db`` dBFS peak, starting at phase 0, as float32."""
    t = np.arange(frames, dtype=np.float64) / rate
    wave: np.ndarray = np.sin(2.0 * np.pi * frequency * t) * _amplitude(level_db)
    return wave.astype(np.float32)


def noise(frames: int = 24000, level_db: float = -20.0, seed: int = 1) -> np.ndarray:
    """White Gaussian noise at ``level_db`` dBFS RMS (broadband: good for latency)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(frames)
    x *= _amplitude(level_db) / np.sqrt(np.mean(x**2))
    return x.astype(np.float32)


def mls(order: int = 14, level_db: float = -12.0) -> np.ndarray:
    """A maximum-length sequence of ``2**order - 1`` samples of ±``level_db`` dBFS.

    Method: scipy's linear-feedback shift register with the standard taps
    (:func:`scipy.signal.max_len_seq`), mapped from {0, 1} to {−a, +a}.
    """
    bits = sps.max_len_seq(order)[0]
    return ((bits.astype(np.float64) * 2.0 - 1.0) * _amplitude(level_db)).astype(np.float32)


def log_sweep(
    low: float = 20.0,
    high: float = 20000.0,
    frames: int = 96000,
    rate: int = 48000,
    level_db: float = -12.0,
    fade: int = 480,
) -> np.ndarray:
    """An exponential sine sweep from ``low`` to ``high`` Hz, peak ``level_db`` dBFS.

    Method: Farina's sweep, ``sin(2π f₀ T/ln(f₁/f₀) (e^{t ln(f₁/f₀)/T} − 1))``,
    with ``fade`` frames of raised-cosine fade at each end so that neither
    end is a click.
    """
    seconds = frames / rate
    ratio = np.log(high / low)
    t = np.arange(frames, dtype=np.float64) / rate
    wave = np.sin(2.0 * np.pi * low * seconds / ratio * (np.exp(t * ratio / seconds) - 1.0))
    if fade and frames > 2 * fade:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        wave[:fade] *= ramp
        wave[-fade:] *= ramp[::-1]
    scaled: np.ndarray = (wave * _amplitude(level_db)).astype(np.float32)
    return scaled


def impulse(frames: int = 4800, at: int = 0, level_db: float = -6.0) -> np.ndarray:
    """``frames`` of silence with one sample of ``level_db`` dBFS at ``at``."""
    x = np.zeros(frames, dtype=np.float32)
    x[at] = _amplitude(level_db)
    return x
