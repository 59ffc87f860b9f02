"""Has a student finished learning what its data can teach it? A budget check from the
per-epoch validation curve every trial already records. Torch-free: the trial logs the
diagnostic, the budget stage and the analysis read it.

The diagnostic of one run is its *late gain*: the mean validation AUC over the last third
of its epochs minus the mean over the third before it. A run whose curve has flattened
gains about 0 (noise either way); one still improving gains clearly more. A cell (one
method and volume, over its seeds) is *still improving* when the mean late gain of its
runs exceeds `LATE_GAIN_TOL`; a number from such a cell measures how fast a method fits,
not what it can learn, and every table and summary marks it.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

CURVE_METRIC = "val_auc"  # the per-epoch validation metric the diagnostic reads
LATE_GAIN = "val_late_gain"  # the run metric that holds it
LATE_GAIN_TOL = 0.01  # validation AUC: a mean late gain above this is "still improving"
MIN_EPOCHS = 3  # fewer epochs have no last and previous third


def late_gain(curve: Sequence[float]) -> float:
    """mean(last third) - mean(the third before it) of a per-epoch curve; nan with fewer than
    `MIN_EPOCHS` points. A third is `len(curve) // 3` epochs (at least 1)."""
    values = [float(v) for v in curve if v is not None and not math.isnan(float(v))]
    if len(values) < MIN_EPOCHS:
        return math.nan
    third = len(values) // 3
    last, before = values[-third:], values[-2 * third:-third]
    return sum(last) / len(last) - sum(before) / len(before)


def still_improving(gains: Iterable[float], tol: float = LATE_GAIN_TOL) -> bool:
    """A cell whose runs' mean late gain exceeds `tol` (runs without a diagnostic are left out;
    with none, the cell cannot be judged and is not flagged)."""
    known = [float(g) for g in gains if g is not None and not math.isnan(float(g))]
    return bool(known) and sum(known) / len(known) > tol
