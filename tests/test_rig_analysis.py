"""The rig's analysis and report, on synthesized signals whose answers are known.

No JACK and no box: a delay of exactly N frames, a gap of exactly N samples,
a click at a known frame, a step of known size, a harmonic at a known level,
a known filter. Each test's docstring says what a person reading a rig
report would be misled about if it broke.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import signal as sps

from hil.rig import analysis
from hil.rig.analysis import (
    Dropout,
    Gap,
    analyse_switch,
    find_clicks,
    find_dropouts,
    find_gaps,
    frames_to_level,
    frequency_response,
    impulse_response,
    latency_frames,
    longest_gap,
    measure_latency,
    sine_residual,
    thd_n,
    window_gains,
)
from hil.rig.report import HTML_NAME, JSON_NAME, compare, load_report, write_report
from hil.rig.results import (
    DropoutResult,
    DryPathResult,
    Excerpt,
    LatencyResult,
    RigRun,
    Spoiled,
    SwitchResult,
    TimingResult,
)
from hil.rig.signals import log_sweep, mls, noise, sine

RATE = 48000
#: A −12 dBFS sine's peak.
AMPLITUDE = 10 ** (-12 / 20)


def delayed(x: np.ndarray, frames: int, gain: float = 1.0) -> np.ndarray:
    """``x`` delayed by exactly ``frames`` (zeros in front), same length, times ``gain``."""
    out = np.zeros(len(x), dtype=np.float64)
    out[frames:] = x[: len(x) - frames]
    return out * gain


def hiss(frames: int, level_db: float, seed: int = 7) -> np.ndarray:
    """Independent white noise at ``level_db`` dBFS RMS (the rig's interface noise)."""
    return noise(frames, level_db, seed).astype(np.float64)


# -- latency ------------------------------------------------------------------------


def test_latency_of_a_delay_of_exactly_n_frames() -> None:
    """A box 137 frames late, at half gain, under −60 dBFS hiss, reads 137 frames and 2.854 ms:
    if not, every latency in the report is wrong."""
    reference = noise(RATE // 2, -20.0)
    recorded = delayed(reference, 137, 0.5) + hiss(RATE // 2, -60.0)
    latency = measure_latency(recorded, reference, RATE)
    assert latency.frames == 137
    assert latency.ms == pytest.approx(137 / 48)
    assert latency.clarity_db > 20.0
    assert not latency.inverted
    assert latency_frames(recorded, reference) == 137


def test_latency_through_an_inverting_box_and_an_mls_probe() -> None:
    """An MLS probe through a box that flips polarity still reads its delay, and says it is
    inverted: a phase-flipping HAT would otherwise look like a latency of some other lag."""
    probe = mls(13)
    reference = np.concatenate([probe, np.zeros(512, dtype=np.float32)])
    recorded = -delayed(reference, 300)
    latency = measure_latency(recorded, reference, RATE)
    assert (latency.frames, latency.inverted) == (300, True)
    assert latency_frames(recorded, reference) == 300


def test_a_recording_that_leads_reads_negative() -> None:
    """A recording ahead of its reference (a misaligned rig) reads a negative lag, not a huge one."""
    reference = noise(8000, -20.0)
    recorded = np.concatenate([reference[25:], np.zeros(25, dtype=np.float32)])
    assert latency_frames(recorded, reference) == -25


def test_a_tonal_probe_is_flagged_as_unclear() -> None:
    """A sine's correlation repeats every period, so its latency is not to be trusted: the
    clarity says so (a report built on it would look precise and be a period off)."""
    reference = sine(1000.0, RATE // 4, RATE)
    latency = measure_latency(delayed(reference, 10), reference, RATE)
    assert latency.clarity_db < 1.0


def test_impulse_response_of_a_known_filter() -> None:
    """Noise through a 40-frame delay and the FIR [0.5, −0.25] gives exactly those two taps at
    frames 40 and 41: the plotted impulse response shows the box's own filtering."""
    reference = noise(RATE // 2, -20.0).astype(np.float64)
    recorded = delayed(sps.lfilter([0.5, -0.25], [1.0], reference), 40)
    taps = impulse_response(recorded, reference, 64)
    assert taps[40] == pytest.approx(0.5, abs=0.01)
    assert taps[41] == pytest.approx(-0.25, abs=0.01)
    others = np.delete(taps, [40, 41])
    assert np.max(np.abs(others)) < 0.01


# -- gaps and clicks ----------------------------------------------------------------


def test_a_gap_of_exactly_n_samples_is_found_where_it_is() -> None:
    """A 100-sample dropout at frame 10,000 is one gap of 100 at 10,000, and the tone's zero
    crossings are not gaps: otherwise the dropout list would be wrong or drowned in noise."""
    tone = sine(1000.0, RATE, RATE, -40.0)
    tone[10000:10100] = 0.0
    assert find_gaps(tone) == [Gap(10000, 100)]
    assert longest_gap(tone) == (100, 10000)


def test_every_gap_is_listed_in_order() -> None:
    """Two dropouts, both listed in order with their lengths: an hour's run reports each one."""
    tone = sine(440.0, RATE, RATE)
    tone[5000:5010] = 0.0
    tone[30000:30480] = 0.0
    assert find_gaps(tone) == [Gap(5000, 10), Gap(30000, 480)]
    assert find_gaps(sine(440.0, RATE, RATE)) == []


def test_a_click_of_known_size_at_a_known_frame() -> None:
    """A 0.01 spike at frame 20,000 of a −12 dBFS tone (−28 dB re its peak) is one click there,
    of that size: the report locates and sizes each click the player heard."""
    tone = sine(1000.0, RATE, RATE).astype(np.float64)
    tone[20000] += 0.01
    clicks = find_clicks(tone, RATE)
    assert [c.frame for c in clicks] == [20000]
    assert clicks[0].size_db == pytest.approx(20 * np.log10(0.01 / AMPLITUDE), abs=1.0)


def test_a_dropped_sample_is_a_click() -> None:
    """One sample missing from a tone (a buffer underrun's typical mark) is a click at that frame."""
    tone = sine(997.0, RATE + 1, RATE).astype(np.float64)
    broken = np.delete(tone, 15011)
    clicks = find_clicks(broken, RATE, frequency=997.0)
    assert len(clicks) == 1
    assert abs(clicks[0].frame - 15011) <= 1


def test_a_clean_tone_and_a_fade_are_not_clicks() -> None:
    """A steady tone under hiss, and a 20 ms fade to half its level, are no clicks: a
    switch's fade would otherwise be reported as a fault."""
    clean = sine(1000.0, RATE, RATE).astype(np.float64) + hiss(RATE, -90.0)
    assert find_clicks(clean, RATE) == []
    envelope = np.ones(RATE)
    envelope[24000:24960] = np.linspace(1.0, 0.5, 960)
    envelope[24960:] = 0.5
    assert find_clicks(sine(1000.0, RATE, RATE) * envelope, RATE) == []
    assert np.max(np.abs(sine_residual(clean, RATE, 1000.0))) < 10 ** (-60 / 20)


def test_dropouts_list_gaps_and_clicks_once_each() -> None:
    """A gap and a separate click in a tone: one gap and one click, the gap's own edges not
    listed again as clicks (the dropout count would double)."""
    tone = sine(1000.0, 2 * RATE, RATE).astype(np.float64)
    tone[30000:30200] = 0.0
    tone[70000] += 0.05
    events = find_dropouts(tone, RATE)
    assert [(e.kind, e.frame, e.length) for e in events] == [("gap", 30000, 200), ("click", 70000, 0)]


# -- levels -------------------------------------------------------------------------


def test_window_gains_show_a_level_step_in_its_windows() -> None:
    """A −6 dB step at frame 4800 reads 0 dB in the windows before and −6.02 dB after."""
    reference = sine(1000.0, RATE // 5, RATE)
    recorded = reference.astype(np.float64)
    recorded[4800:] *= 0.5
    gains = window_gains(recorded, reference)
    assert gains[:10] == pytest.approx([0.0] * 10, abs=1e-6)
    assert gains[10:] == pytest.approx([-6.0206] * 10, abs=1e-3)


def test_level_change_is_timed_from_the_request_on_the_frame_clock() -> None:
    """A change requested at frame 23,000 and heard at 24,000 reads 1000 frames (never late,
    early by a few frames at most): the knob-to-sound figures rest on this."""
    reference = sine(1000.0, RATE, RATE)
    recorded = reference.astype(np.float64)
    recorded[24000:] *= 0.5
    frames = frames_to_level(recorded, 23000, -6.0206, reference=reference)
    assert frames is not None
    assert 1000 - 8 <= frames <= 1000
    in_dbfs = frames_to_level(recorded, 23000, -6.0206 - 15.05, window=480)
    assert in_dbfs is not None
    assert 1000 - 48 <= in_dbfs <= 1000


def test_a_momentary_dip_to_the_new_level_is_not_the_change() -> None:
    """The level touching the new value for a moment (a 60-frame dip) and only settling there
    later reads the settling, not the dip: a knob-to-sound figure must be when it stays changed."""
    reference = sine(1000.0, RATE // 2, RATE)
    envelope = np.ones(RATE // 2)
    envelope[5000:5060] = 0.5
    envelope[10000:] = 0.5
    frames = frames_to_level(reference * envelope, 4000, -6.0206, reference=reference)
    assert frames is not None
    assert 6000 - 8 <= frames <= 6000


def test_a_level_never_reached_or_already_there() -> None:
    """No change heard: ``None`` (counted as missed, not as a time); the level already there
    at the request: 0 frames."""
    reference = sine(1000.0, RATE // 2, RATE)
    assert frames_to_level(reference, 1000, -6.0, reference=reference) is None
    assert frames_to_level(reference, 1000, 0.0, reference=reference) == 0


# -- switches -----------------------------------------------------------------------


def test_a_switch_with_a_step_of_known_size_is_a_click() -> None:
    """A 0.2 jump at the switch is read as the largest step there, well over the tone's own
    (2π·1000/48000·0.25 ≈ 0.033), so the report flags the click."""
    reference = sine(1000.0, RATE // 2, RATE)
    recorded = reference.astype(np.float64)
    recorded[12000:] += 0.2
    result = analyse_switch(recorded, 11900, reference=reference, span=1000)
    own = 2 * np.pi * 1000 / RATE * AMPLITUDE
    assert result.own_step == pytest.approx(own, rel=0.01)
    assert 0.2 - own <= result.step_at_switch <= 0.2 + own
    assert result.step_ratio_db > 10.0


def test_a_clean_switch_has_no_step_no_gap_and_times_the_new_sound() -> None:
    """A switch that fades 0 dB → −6 dB over 20 ms: no step beyond the tone's own, no gap,
    and the new level is reached 960 frames after the fade began."""
    reference = sine(1000.0, RATE // 2, RATE)
    envelope = np.ones(RATE // 2)
    envelope[12000:12960] = np.linspace(1.0, 0.5, 960)
    envelope[12960:] = 0.5
    recorded = reference * envelope
    result = analyse_switch(recorded, 12000, reference=reference, new_level_db=-6.0206)
    assert result.step_ratio_db <= 0.0
    assert result.longest_silence <= 2
    assert result.to_new_sound is not None
    assert 960 - 120 <= result.to_new_sound <= 960
    assert result.tail_db is None and result.tail_continues is None


def test_a_gap_at_the_switch_is_its_longest_silence() -> None:
    """A 300-sample hole where the chains swapped is the switch's longest silence, where it was."""
    reference = sine(1000.0, RATE // 2, RATE)
    recorded = reference.astype(np.float64)
    recorded[12010:12310] = 0.0
    result = analyse_switch(recorded, 12000, reference=reference)
    assert (result.longest_silence, result.silence_start) == (300, 12010)


def test_the_tail_rings_on_or_stops() -> None:
    """Bursts in, a switch between two of them: a decaying echo heard in the pause means the tail
    continues (spillover on); silence there means it was cut (spillover off)."""
    reference = np.zeros(RATE, dtype=np.float64)
    reference[:4800] = sine(1000.0, 4800, RATE)
    reference[24000:28800] = sine(1000.0, 4800, RATE)
    echo = np.zeros(RATE)
    echo[7200:19200] = sine(1000.0, 12000, RATE) * np.exp(-np.arange(12000) / 4800) * 0.3
    ringing = analyse_switch(reference + echo, 6000, reference=reference)
    assert ringing.tail_continues is True
    assert ringing.tail_db is not None and ringing.tail_db > -40.0
    cut = analyse_switch(reference + np.where(np.arange(RATE) < 9600, echo, 0.0), 9600, reference=reference)
    assert cut.tail_continues is False


# -- the dry path -------------------------------------------------------------------


def test_thd_n_of_a_harmonic_at_a_known_level() -> None:
    """A 997 Hz sine with its second harmonic 40 dB down reads THD and THD+N of −40 dB (1 %):
    the dry-path quality figure is the distortion that is there."""
    n = np.arange(RATE)
    x = 0.5 * np.sin(2 * np.pi * 997 * n / RATE) + 0.005 * np.sin(2 * np.pi * 1994 * n / RATE + 0.3)
    result = thd_n(x, RATE)
    assert result.frequency == pytest.approx(997.0, abs=0.01)
    assert result.amplitude == pytest.approx(0.5, rel=1e-3)
    assert result.thd_db == pytest.approx(-40.0, abs=0.05)
    assert result.thd_n_db == pytest.approx(-40.0, abs=0.05)
    assert result.thd_n_percent == pytest.approx(1.0, rel=0.01)


def test_thd_n_counts_noise_in_the_band_and_thd_does_not() -> None:
    """A sine under white noise 60 dB below it: THD+N reads the noise within 20 Hz–20 kHz;
    THD (harmonics only) stays far below it."""
    x = sine(1000.0, 2 * RATE, RATE, -6.0).astype(np.float64)
    hum = hiss(2 * RATE, -6.0 - 3.01 - 60.0)  # sine RMS is 3.01 dB under its peak
    result = thd_n(x + hum, RATE)
    expected = -60.0 + 10 * np.log10(19980 / 24000)  # the share of white noise in the band
    assert result.thd_n_db == pytest.approx(expected, abs=0.3)
    assert result.thd_db < -75.0
    assert thd_n(x, RATE).thd_n_db < -120.0


def test_frequency_response_of_a_known_filter() -> None:
    """Noise through a 2 kHz second-order low-pass and a 50-frame delay: the measured response
    matches the filter's within 0.2 dB from 50 Hz to 10 kHz once the delay is taken out."""
    b, a = sps.butter(2, 2000.0, fs=RATE)
    reference = noise(4 * RATE, -20.0).astype(np.float64)
    recorded = delayed(sps.lfilter(b, a, reference), 50)
    response = frequency_response(recorded, reference, RATE)
    assert 50 <= response.latency <= 56  # the correlation peak sits on the filter's group delay
    points = [50.0, 200.0, 1000.0, 2000.0, 5000.0, 10000.0]
    _, h = sps.freqz(b, a, worN=points, fs=RATE)
    assert [response.at(f) for f in points] == pytest.approx(list(20 * np.log10(np.abs(h))), abs=0.2)
    valid = (response.frequency > 50) & (response.frequency < 10000)
    assert np.min(response.coherence[valid]) > 0.99


def test_frequency_response_from_a_log_sweep() -> None:
    """A log sweep through the same filter gives the same response within its band, and a
    flat box reads flat: the report's frequency-response plot can use either probe."""
    b, a = sps.butter(2, 2000.0, fs=RATE)
    sweep = log_sweep(20.0, 20000.0, 4 * RATE, RATE).astype(np.float64)
    response = frequency_response(sps.lfilter(b, a, sweep), sweep, RATE, latency=0)
    points = [100.0, 1000.0, 2000.0, 8000.0]
    _, h = sps.freqz(b, a, worN=points, fs=RATE)
    assert [response.at(f) for f in points] == pytest.approx(list(20 * np.log10(np.abs(h))), abs=0.5)
    flat = frequency_response(delayed(sweep, 64, 0.5), sweep, RATE)
    low, high = flat.deviation_db(50.0, 15000.0)
    assert low == pytest.approx(-6.02, abs=0.1) and high == pytest.approx(-6.02, abs=0.1)


# -- the probes ---------------------------------------------------------------------


def test_the_probes_are_what_they_say() -> None:
    """The MLS is ±level with a one-peak circular autocorrelation (floor −1/N), the sweep starts
    and ends in silence (no click of its own) at its peak level, the sine is at its level:
    a probe that were not would be measured as the box's fault."""
    probe = mls(10, -6.0).astype(np.float64)
    level = 10 ** (-6 / 20)
    assert len(probe) == 1023
    assert set(np.round(np.abs(probe), 6)) == {round(level, 6)}
    circular = np.fft.irfft(np.abs(np.fft.rfft(probe)) ** 2, len(probe)) / (len(probe) * level**2)
    assert circular[0] == pytest.approx(1.0)
    assert np.allclose(circular[1:], -1 / len(probe), atol=1e-9)
    sweep = log_sweep(20.0, 20000.0, RATE, RATE, -12.0)
    assert sweep[0] == 0.0 and abs(sweep[-1]) < 1e-4
    assert np.max(np.abs(sweep)) == pytest.approx(AMPLITUDE, rel=1e-3)
    assert np.max(np.abs(sine(1000.0, RATE, RATE, -12.0))) == pytest.approx(AMPLITUDE, rel=1e-4)


# -- the report ---------------------------------------------------------------------


def synthetic_run(latency: int = 137, version: str = "0.1.0") -> RigRun:
    """A run as the runner would fill it, from synthesized recordings (no JACK, no box)."""
    reference = noise(RATE // 4, -20.0)
    recorded = delayed(reference, latency, 0.5)
    tone = sine(1000.0, RATE, RATE)
    switched = tone.astype(np.float64)
    switched[24000:] *= 0.5
    broken = sine(1000.0, 2 * RATE, RATE).astype(np.float64)
    broken[30000:30200] = 0.0
    broken[70000] += 0.05
    events = find_dropouts(broken, RATE)
    sweep = noise(2 * RATE, -20.0)
    return RigRun(
        settings={"box": "ws://127.0.0.1:8000/ws", "rate": RATE, "period": 128, "rounds": 3},
        box={"healthz": {"running": True, "xruns": 0, "engine": "jalv"}, "version": version},
        latency=[
            LatencyResult(
                "empty",
                [latency] * 3,
                RATE,
                plugin_latency=0,
                clarity_db=measure_latency(recorded, reference, RATE).clarity_db,
                impulse=impulse_response(recorded, reference, 512),
            ),
            LatencyResult("5 plugins", [latency + 64, latency + 64, latency + 65], RATE, plugin_latency=64),
        ],
        knob_to_sound=[
            TimingResult("gain, 1 client", [256, 300, 384, 260], RATE),
            TimingResult("bypass, 20 clients", [512, 640, 700], RATE, missed=1),
        ],
        switching=[
            SwitchResult(
                "snapshot recall",
                [analyse_switch(switched, 23000, reference=tone, new_level_db=-6.02)],
                RATE,
                [Excerpt("snapshot recall 1", switched[22000:26000], RATE, 22000, {"request": 23000})],
            )
        ],
        dropouts=DropoutResult(
            2.0,
            RATE,
            events,
            clients=20,
            xruns=0,
            excerpts=[
                Excerpt(
                    f"{e.kind} at {e.frame / RATE:.3f} s",
                    broken[e.frame - 480 : e.frame + 960],
                    RATE,
                    e.frame - 480,
                )
                for e in events
            ],
        ),
        dry_path=DryPathResult(thd_n(tone, RATE), frequency_response(sweep, sweep, RATE, latency=0)),
        skipped={"recovery": "no USB relay configured"},
    )


def images(page: Path) -> list[Path]:
    return [page.parent / src for src in re.findall(r'<img src="([^"]+)"', page.read_text())]


def test_report_holds_every_figure_and_its_plots(tmp_path: Path) -> None:
    """report.json has the figures, the box's health and version and the rig's settings;
    report.html shows PNGs that exist: a report a person can open and a tool can read."""
    page = write_report(synthetic_run(), tmp_path / "run")
    assert page == tmp_path / "run" / HTML_NAME and page.exists()
    data = json.loads((tmp_path / "run" / JSON_NAME).read_text())
    assert data["box"] == {"healthz": {"running": True, "xruns": 0, "engine": "jalv"}, "version": "0.1.0"}
    assert data["settings"]["rate"] == RATE
    assert data["latency"][0]["frames"] == 137
    assert data["latency"][0]["ms"] == pytest.approx(137 / 48)
    assert data["latency"][1]["host_added_frames"] == 0
    assert data["knob_to_sound"][1]["missed"] == 1
    assert data["knob_to_sound"][0]["ms"]["count"] == 4
    assert data["switching"][0]["switches"][0]["to_new_sound_frames"] is not None
    assert (data["dropouts"]["gaps"], data["dropouts"]["clicks"]) == (1, 1)
    assert data["dry_path"]["thd_n_db"] < -100
    assert data["dry_path"]["response_db"]["1000"] == pytest.approx(0.0, abs=0.01)
    assert data["skipped"] == {"recovery": "no USB relay configured"}
    assert set(data["methods"]) >= {"latency", "knob_to_sound", "switching", "dropouts", "dry_path"}
    files = {p["file"] for p in data["plots"]}
    assert {"impulse.png", "latency-histogram.png", "knob-to-sound.png", "frequency-response.png"} <= files
    assert {"switch-0-0.png", "dropout-0.png", "dropout-1.png"} <= files
    shown = images(page)
    assert {p.name for p in shown} == files
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in shown)
    assert "no USB relay configured" in page.read_text()


def test_a_run_that_measured_little_still_makes_a_report(tmp_path: Path) -> None:
    """A run that could only measure latency says for every other section that it was not
    measured, with the reason where there is one, instead of failing to write a report."""
    run = RigRun(
        settings={"rate": RATE},
        box={"healthz": {"running": True}, "version": "x"},
        latency=[LatencyResult("empty", [0], RATE)],
        skipped={"dry_path": "the interface was not calibrated"},
    )
    page = write_report(run, tmp_path / "small")
    data = load_report(tmp_path / "small")
    assert data["dropouts"] is None and data["switching"] == []
    assert [p["file"] for p in data["plots"]] == ["latency-histogram.png"]
    assert all(p.exists() for p in images(page))
    assert "the interface was not calibrated" in page.read_text()
    assert "Not measured in this run." in page.read_text()


def test_a_spoiled_take_is_marked_not_hidden(tmp_path: Path) -> None:
    """A take during which the rig's own JACK server had xruns is listed in report.json and
    marked in its section of report.html; a run without one says so.

    Broken, a reader would take the rig's own dropped cycles for the box's figures."""
    clean = write_report(synthetic_run(), tmp_path / "clean")
    assert load_report(tmp_path / "clean")["spoiled_takes"] == []
    assert "None: the rig's own JACK server had no xrun during any take." in clean.read_text()
    run = synthetic_run()
    run.spoiled.append(Spoiled("switching", "snapshot recall 1", 2, (1200, 1330)))
    page = write_report(run, tmp_path / "spoiled")
    data = load_report(tmp_path / "spoiled")
    assert data["spoiled_takes"] == [
        {"section": "switching", "what": "snapshot recall 1", "xruns": 2, "frames": [1200, 1330]}
    ]
    text = page.read_text()
    switching = text[text.index('<h2 id="switching">') : text.index('<h2 id="dropouts">')]
    assert "Spoiled takes:" in switching and "snapshot recall 1 (2 xruns)" in switching
    latency = text[text.index('<h2 id="latency">') : text.index('<h2 id="knob_to_sound">')]
    assert "Spoiled takes:" not in latency


def test_compare_sets_two_reports_side_by_side(tmp_path: Path) -> None:
    """Two runs whose latency differs by 10 frames: the table shows A, B and B − A for it, and
    the page shows each plot of A beside B's: how a change to the box is judged."""
    write_report(synthetic_run(137, "0.1.0"), tmp_path / "a")
    write_report(synthetic_run(147, "0.2.0"), tmp_path / "b")
    out = io.StringIO()
    page = compare(tmp_path / "a", tmp_path / "b", out=out)
    assert page == tmp_path / "compare-a-b.html"
    text = out.getvalue()
    row = next(line for line in text.splitlines() if line.startswith("latency[empty].frames "))
    assert row.split()[1:4] == ["137", "147", "10"]
    assert any(line.startswith("box.version ") and "0.2.0" in line for line in text.splitlines())
    shown = images(page)
    assert {p.parent.name for p in shown} == {"a", "b"}
    assert len(shown) == 2 * len(load_report(tmp_path / "a")["plots"])
    assert all(p.exists() for p in shown)
    elsewhere = compare(
        tmp_path / "a", tmp_path / "b", html_path=tmp_path / "pages" / "c.html", out=io.StringIO()
    )
    sources = re.findall(r'<img src="([^"]+)"', elsewhere.read_text())
    assert sources and not any(Path(src).is_absolute() for src in sources), (
        "the pages would not move with the folders"
    )
    assert all((elsewhere.parent / src).exists() for src in sources)


def test_analysis_methods_are_documented() -> None:
    """Every public analysis function says its method: the report cites them."""
    for name in (
        "measure_latency",
        "impulse_response",
        "find_gaps",
        "find_clicks",
        "frames_to_level",
        "analyse_switch",
        "thd_n",
        "frequency_response",
        "window_gains",
    ):
        assert "Method:" in (getattr(analysis, name).__doc__ or ""), name


def test_dropout_ordering_is_by_frame() -> None:
    """Events come in time order, so the report's list reads as a timeline."""
    tone = sine(1000.0, 2 * RATE, RATE).astype(np.float64)
    tone[60000:60100] = 0.0
    tone[20000] += 0.05
    assert [e.kind for e in find_dropouts(tone, RATE)] == ["click", "gap"]
    assert isinstance(find_dropouts(tone, RATE)[0], Dropout)
