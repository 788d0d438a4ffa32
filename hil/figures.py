"""How the benchmarks summarise a list of measurements: nearest-rank percentiles, one line each."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted values (``share`` 0.99 for p99)."""
    return float(ordered[max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))])


def spread(values: Sequence[float], unit: str = "ms", digits: int = 0) -> str:
    """``p50 … p99 … max … (n=…)`` of unsorted values, or ``(none)``."""
    if not values:
        return "(none)"
    ordered = sorted(values)
    width = 7 + digits
    p50, p99 = statistics.median(ordered), percentile(ordered, 0.99)
    return (
        f"p50 {p50:{width}.{digits}f} {unit}   p99 {p99:{width}.{digits}f} {unit}   "
        f"max {ordered[-1]:{width}.{digits}f} {unit}   (n={len(ordered)})"
    )
