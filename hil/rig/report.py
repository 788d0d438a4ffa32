"""The rig's report: a folder with ``report.json``, ``report.html`` and the PNGs it shows.

:func:`write_report` turns a :class:`~hil.rig.results.RigRun` into

* ``report.json``: every figure (:meth:`RigRun.figures`), the box's
  ``/healthz`` and version, the rig's settings, how each section was
  measured, what was skipped and why, and the list of plots;
* ``report.html``: the same figures as tables beside the plots a person
  would rather look at than read: the impulse response, the latency
  histogram, the knob-to-sound distribution, the recording around each
  switch and each dropout, the frequency response;
* one PNG per plot, drawn headless with matplotlib's Agg canvas (no pyplot,
  no display, no global state).

:func:`compare` sets two report folders side by side: a text table of every
figure (A, B, B − A, B / A) and an HTML page with the same table and each
plot of A beside the same plot of B. That is how a change to the box is
judged. Both functions write files and belong on a worker thread or a
command line, not on a running event loop.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeGuard

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hil.rig.results import Excerpt, RigRun

#: The report format's version, in ``report.json``.
FORMAT = 1
JSON_NAME = "report.json"
HTML_NAME = "report.html"
#: Recordings drawn per section; the rest are in the JSON only (the page says how many).
MAX_EXCERPTS = 12
#: The widest a column of `compare`'s text table is padded to (longer texts overflow it).
COLUMN_MAX = 24
#: Taps of the impulse response drawn past the latency peak.
IMPULSE_AFTER = 96
#: Taps drawn before it.
IMPULSE_BEFORE = 16
_SIZE = (8.0, 3.0)
_DPI = 100

_STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; font-size: 90%; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
p.method { color: #555; font-size: 90%; }
p.spoiled { color: #a00; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.pair { display: flex; gap: 1em; } .pair > div { flex: 1; min-width: 0; }
"""


@dataclass(frozen=True)
class Plot:
    """One PNG of a report: its file name (in the folder), title and section."""

    file: str
    title: str
    section: str


# -- JSON ---------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made plain, NaN and infinities as ``None``."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


# -- plots --------------------------------------------------------------------------


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    return figure, figure.add_subplot()


def _save(figure: Figure, folder: Path, plot: Plot) -> Plot:
    figure.savefig(folder / plot.file, format="png")
    return plot


def _plot_impulses(run: RigRun, folder: Path) -> list[Plot]:
    drawn = [r for r in run.latency if r.impulse is not None and r.impulse.size]
    if not drawn:
        return []
    figure, ax = _figure()
    for result in drawn:
        assert result.impulse is not None
        peak = int(np.argmax(np.abs(result.impulse)))
        first = max(0, peak - IMPULSE_BEFORE)
        taps = result.impulse[first : peak + IMPULSE_AFTER]
        ms = (np.arange(len(taps)) + first) * 1000.0 / result.rate
        own = f", {result.interface_frames} of them the rig's interface" if result.interface_frames else ""
        ax.plot(ms, taps, label=f"{result.board} (peak at {peak} frames{own})")
    ax.set_xlabel("ms after the probe")
    ax.set_ylabel("amplitude")
    ax.set_title("Impulse response")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return [_save(figure, folder, Plot("impulse.png", "Impulse response", "latency"))]


def _plot_latency_histogram(run: RigRun, folder: Path) -> list[Plot]:
    drawn = [r for r in run.latency if r.frames]
    if not drawn:
        return []
    figure, ax = _figure()
    low = min(min(r.box_frames) for r in drawn)
    high = max(max(r.box_frames) for r in drawn)
    bins = [edge + 0.5 for edge in range(low - 1, high + 1)]
    for result in drawn:
        ax.hist(result.box_frames, bins=bins, alpha=0.6, label=f"{result.board} (n={len(result.frames)})")
    ax.set_xlabel("round-trip latency through the box, frames")
    ax.set_ylabel("takes")
    ax.set_title("Latency per take")
    ax.legend(loc="upper right")
    return [_save(figure, folder, Plot("latency-histogram.png", "Latency per take", "latency"))]


def _plot_timings(run: RigRun, folder: Path) -> list[Plot]:
    drawn = [r for r in run.knob_to_sound if r.frames]
    if not drawn:
        return []
    figure, ax = _figure()
    for result in drawn:
        ms = np.sort(np.asarray(result.ms))
        share = np.arange(1, len(ms) + 1) / len(ms)
        p50, p99 = np.percentile(ms, [50, 99])
        ax.step(ms, share, where="post", label=f"{result.name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    ax.set_xlabel("request → heard, ms (recording's frame clock)")
    ax.set_ylabel("share of changes")
    ax.set_ylim(0, 1.02)
    ax.set_title("Knob-to-sound")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return [_save(figure, folder, Plot("knob-to-sound.png", "Knob-to-sound", "knob_to_sound"))]


def _plot_excerpt(excerpt: Excerpt, folder: Path, file: str, section: str) -> Plot:
    figure, ax = _figure()
    seconds = (np.arange(len(excerpt.samples)) + excerpt.first_frame) / excerpt.rate
    ax.plot(seconds, excerpt.samples, linewidth=0.6)
    for row, (label, frame) in enumerate(excerpt.marks.items()):
        ax.axvline(frame / excerpt.rate, color="tab:red", linestyle="--", linewidth=0.8)
        ax.annotate(
            label,
            (frame / excerpt.rate, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -10 - 10 * row),  # one row per mark: close marks do not overprint
            textcoords="offset points",
            fontsize=8,
            color="tab:red",
        )
    ax.set_xlabel("s into the recording")
    ax.set_ylabel("sample")
    ax.set_title(excerpt.title)
    return _save(figure, folder, Plot(file, excerpt.title, section))


def _plot_switches(run: RigRun, folder: Path) -> list[Plot]:
    plots = []
    for kind, result in enumerate(run.switching):
        for index, excerpt in enumerate(result.excerpts[:MAX_EXCERPTS]):
            plots.append(_plot_excerpt(excerpt, folder, f"switch-{kind}-{index}.png", "switching"))
    return plots


def _plot_dropouts(run: RigRun, folder: Path) -> list[Plot]:
    if run.dropouts is None:
        return []
    return [
        _plot_excerpt(excerpt, folder, f"dropout-{index}.png", "dropouts")
        for index, excerpt in enumerate(run.dropouts.excerpts[:MAX_EXCERPTS])
    ]


def _plot_response(run: RigRun, folder: Path) -> list[Plot]:
    if run.dry_path is None:
        return []
    response = run.dry_path.response
    interface = run.dry_path.interface_response
    figure, ax = _figure()
    shown = response.frequency > 0
    ax.semilogx(response.frequency[shown], response.magnitude_db[shown], label="the box")
    values = response.magnitude_db[shown & ~np.isnan(response.magnitude_db)]
    if interface is not None:  # the calibration's, already taken out of the box's
        drawn = interface.frequency > 0
        ax.semilogx(
            interface.frequency[drawn],
            interface.magnitude_db[drawn],
            linestyle="--",
            linewidth=0.8,
            label="the rig's interface (taken out)",
        )
        ax.legend(loc="lower left")
        values = np.concatenate([values, interface.magnitude_db[drawn & ~np.isnan(interface.magnitude_db)]])
    ax.set_xlim(10.0, float(response.frequency[-1]))
    if values.size:  # a flat box is drawn flat, not as noise magnified to fill the plot
        ax.set_ylim(min(float(values.min()), -1.0) - 0.5, max(float(values.max()), 1.0) + 0.5)
    ax.set_xlabel("Hz")
    ax.set_ylabel("gain, dB")
    distortion = run.dry_path.distortion
    ax.set_title(f"Frequency response (THD+N {distortion.thd_n_db:.1f} dB at {distortion.frequency:.0f} Hz)")
    ax.grid(alpha=0.3, which="both")
    return [_save(figure, folder, Plot("frequency-response.png", "Frequency response", "dry_path"))]


# -- HTML ---------------------------------------------------------------------------


def _flat(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, scalar) for every scalar leaf of nested dicts; lists are skipped."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flat(item, f"{prefix}.{key}" if prefix else str(key))
    elif not isinstance(value, list):
        yield prefix, value


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{html.escape(str(value))}</td>"
    if isinstance(value, int):
        return f'<td class="n">{value}</td>'
    if isinstance(value, float):
        return f'<td class="n">{value:.4g}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(rows: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in rows)
    return f"<table>{body}</table>" if body else ""


def _image(file: str, title: str) -> str:
    return f'<img src="{html.escape(file)}" alt="{html.escape(title)}">'


_SECTIONS = (
    ("latency", "Round-trip latency"),
    ("knob_to_sound", "Knob-to-sound"),
    ("switching", "Switching"),
    ("dropouts", "Dropouts over time"),
    ("dry_path", "The dry path"),
)


def _section_html(key: str, title: str, figures: dict[str, Any], run: RigRun, plots: list[Plot]) -> str:
    parts = [f'<h2 id="{key}">{html.escape(title)}</h2>']
    if key in run.methods:
        parts.append(f'<p class="method">Method: {html.escape(run.methods[key])}</p>')
    data = figures[key]
    spoiled = run.spoiled_in(key)
    if spoiled:
        listed = "; ".join(f"{take.what} ({take.xruns} xruns)" for take in spoiled)
        parts.append(
            f'<p class="spoiled"><strong>Spoiled takes:</strong> the rig\'s own JACK server had xruns '
            f"during {len(spoiled)} take(s) of this section; their figures are below all the same and "
            f"may include cycles the rig dropped, not the box: {html.escape(listed)}</p>"
        )
    if key in run.skipped:
        parts.append(f"<p><strong>Skipped:</strong> {html.escape(run.skipped[key])}</p>")
    if not data:
        if key not in run.skipped:
            parts.append("<p>Not measured in this run.</p>")
        return "\n".join(parts)
    items = data if isinstance(data, list) else [data]
    for item in items:
        label = item.get("board") or item.get("name")
        if label:
            parts.append(f"<h3>{html.escape(str(label))}</h3>")
        parts.append(_table(_flat(item)))
    excerpts = {"switching": sum(len(r.excerpts) for r in run.switching)}
    if run.dropouts is not None:
        excerpts["dropouts"] = len(run.dropouts.excerpts)
    if excerpts.get(key, 0) > MAX_EXCERPTS:
        parts.append(f"<p>{excerpts[key]} recordings kept; the first {MAX_EXCERPTS} of each kind drawn.</p>")
    if key == "dropouts" and isinstance(data, dict) and data.get("events"):
        rows = "".join(
            f"<tr><td>{html.escape(e['kind'])}</td>{_cell(e['at_s'])}{_cell(e['length_frames'])}"
            f"{_cell(e['size_db'])}</tr>"
            for e in data["events"]
        )
        parts.append(
            f"<table><tr><th>kind</th><th>at, s</th><th>frames</th><th>size, dB</th></tr>{rows}</table>"
        )
    parts += [_image(p.file, p.title) for p in plots if p.section == key]
    return "\n".join(parts)


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _report_html(run: RigRun, figures: dict[str, Any], plots: list[Plot]) -> str:
    version = run.box.get("version", "unknown")
    parts = [
        "<h1>Rig report</h1>",
        f"<p>Box version {html.escape(str(version))}; written {html.escape(figures['written'])}.</p>",
        "<h2>The rig's settings</h2>",
        _table(_flat(run.settings)),
        "<h2>The box</h2>",
        _table(_flat(run.box)),
    ]
    if run.calibration is not None:
        parts += [
            "<h2>The rig's interface (calibration)</h2>",
            "<p>Measured with a loopback cable; its round trip is taken out of every latency and "
            "its response out of the dry path's.</p>",
            _table(_flat(run.calibration)),
        ]
        notes = run.calibration.get("notes") or []
        parts += [f"<p><strong>Note:</strong> {html.escape(str(n))}</p>" for n in notes]
    parts.append("<h2>Spoiled takes</h2>")
    if run.spoiled:
        parts += [
            "<p><strong>The rig's own JACK server had xruns during these takes.</strong> A take is "
            "never taken again: its figures are kept in their section and marked there.</p>",
            _table((f"{take.section}: {take.what}", take.xruns) for take in run.spoiled),
        ]
        if run.server_xruns:
            listed = "".join(f"<li>{html.escape(line)}</li>" for line in run.server_xruns)
            parts.append(f"<p>What the rig's JACK server said of its late cycles:</p><ul>{listed}</ul>")
    else:
        parts.append("<p>None: the rig's own JACK server had no xrun during any take.</p>")
    parts += [_section_html(key, title, figures, run, plots) for key, title in _SECTIONS]
    others = [(key, why) for key, why in run.skipped.items() if key not in dict(_SECTIONS)]
    if others:
        parts += ["<h2>Also skipped</h2>", _table(others)]
    return _page("Rig report", "\n".join(parts))


# -- the report ---------------------------------------------------------------------


def write_report(run: RigRun, folder: Path) -> Path:
    """Write ``report.json``, ``report.html`` and their PNGs into ``folder`` (made if missing).

    Blocking file I/O and plotting: call it from a worker thread or a command line.

    Returns:
        The path of ``report.html``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    plots: list[Plot] = []
    for draw in (
        _plot_impulses,
        _plot_latency_histogram,
        _plot_timings,
        _plot_switches,
        _plot_dropouts,
        _plot_response,
    ):
        plots += draw(run, folder)
    figures = _jsonable(run.figures())
    figures["format"] = FORMAT
    figures["written"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    figures["plots"] = [{"file": p.file, "title": p.title, "section": p.section} for p in plots]
    (folder / JSON_NAME).write_text(json.dumps(figures, indent=2, allow_nan=False) + "\n")
    page = folder / HTML_NAME
    page.write_text(_report_html(run, figures, plots))
    return page


def load_report(folder: Path) -> dict[str, Any]:
    """The figures of the report in ``folder`` (its ``report.json``)."""
    data: dict[str, Any] = json.loads((folder / JSON_NAME).read_text())
    return data


# -- comparing two reports ----------------------------------------------------------


def _labelled(figures: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every scalar figure under a key that names its board or series rather than its index."""
    for key, value in figures.items():
        if key in ("methods", "plots", "written", "format"):
            continue
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    label = item.get("board") or item.get("name") or str(index)
                    yield from _flat(
                        {k: v for k, v in item.items() if k not in ("board", "name")}, f"{key}[{label}]"
                    )
        else:
            yield from _flat(value, key)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def comparison_rows(
    a: dict[str, Any], b: dict[str, Any]
) -> list[tuple[str, Any, Any, float | None, float | None]]:
    """(figure, A, B, B − A, B / A) for every figure in either report, in A's order then B's extras."""
    left, right = dict(_labelled(a)), dict(_labelled(b))
    keys = list(left) + [k for k in right if k not in left]
    rows = []
    for key in keys:
        x, y = left.get(key), right.get(key)
        delta: float | None = None
        ratio: float | None = None
        if _is_number(x) and _is_number(y):
            delta = float(y) - float(x)
            ratio = float(y) / float(x) if x else None
        rows.append((key, x, y, delta, ratio))
    return rows


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def compare(a: Path, b: Path, html_path: Path | None = None, out: TextIO | None = None) -> Path:
    """Set the reports in folders ``a`` and ``b`` side by side.

    Prints a table of every figure (A, B, B − A, B / A) to ``out`` (default
    stdout) and writes an HTML page with the same table and each plot of A
    beside the same plot of B. Blocking file I/O.

    Args:
        a: the baseline report's folder.
        b: the report judged against it.
        html_path: where to write the page (default ``compare-A-B.html`` in the
            folder that holds both).
        out: where the text table goes.

    Returns:
        The page's path.
    """
    stream = out if out is not None else sys.stdout
    left, right = load_report(a), load_report(b)
    rows = comparison_rows(left, right)
    width = max((len(r[0]) for r in rows), default=10)
    column = min(max([12] + [len(_text(v)) for r in rows for v in r[1:3]]), COLUMN_MAX)
    stream.write(f"A = {a}\nB = {b}\n")
    stream.write(f"{'figure':<{width}}  {'A':>{column}}  {'B':>{column}}  {'B − A':>12}  {'B / A':>8}\n")
    for key, x, y, delta, ratio in rows:
        left_text, right_text = _text(x), _text(y)
        stream.write(
            f"{key:<{width}}  {left_text:>{column}}  {right_text:>{column}}  "
            f"{_text(delta):>12}  {_text(ratio):>8}\n"
        )
    page = (
        html_path
        if html_path is not None
        else Path(os.path.commonpath([a.resolve(), b.resolve()])) / (f"compare-{a.name}-{b.name}.html")
    )
    page.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(
        f"<tr><th>{html.escape(key)}</th>{_cell(x)}{_cell(y)}{_cell(delta)}{_cell(ratio)}</tr>"
        for key, x, y, delta, ratio in rows
    )
    parts = [
        "<h1>Two rig reports side by side</h1>",
        f"<p>A: {html.escape(str(a))}<br>B: {html.escape(str(b))}</p>",
        f"<table><tr><th>figure</th><th>A</th><th>B</th><th>B − A</th><th>B / A</th></tr>{body}</table>",
    ]
    titles = {p["file"]: p["title"] for p in left.get("plots", []) + right.get("plots", [])}
    for file, title in titles.items():
        cells = []
        for folder in (a, b):
            if (folder / file).exists():
                cells.append(_image(os.path.relpath(folder / file, page.parent), f"{title} ({folder.name})"))
            else:
                cells.append("<p>(not in this report)</p>")
        parts.append(
            f'<h2>{html.escape(title)}</h2><div class="pair">'
            f"<div>A{cells[0]}</div><div>B{cells[1]}</div></div>"
        )
    page.write_text(_page("Rig reports compared", "\n".join(parts)))
    return page
