"""Has a student finished learning what its data can teach it? A budget check from the
per-epoch curves every trial already records. Torch-free: the trial logs the diagnostic,
the analysis reads it.

Two signs that a run stopped too early, either of which marks its cell *still improving*
(the mean over the cell's runs):
- it had not fitted its labelled training images: the cross-entropy of its last epoch
  (`train_ce`, the label term of every method's loss) is above `FIT_CE_TOL` nats. With 10 to
  1000 images a student trained long enough fits them; on the quickstart's data the final
  training CE of 100-image students was 0.42 at 75 steps, 0.19 at 150, 0.05 at 300 and 0.01
  at 600 steps, while doubling the budget raised validation AUC by about 0.03 up to 300 steps
  and not beyond (VT, KD and CKD alike);
- its validation curve was still rising steeply: the *late gain*, mean validation AUC over
  the last third of its epochs minus the mean over the third before, above `LATE_GAIN_TOL`.
  Under a cosine schedule the curve rises to its end even at a sufficient budget (as the
  learning rate anneals: +0.02 to +0.03 on average at 75, 150 and 300 steps alike on the
  data above, ±0.02 from seed to seed), so only a steep late rise counts.
A number from such a cell measures how fast a method fits, not what it can learn; every
table and summary marks it. Whether more steps would help is answered for certain only by
training more: `students.hparams.min_steps: auto` (study/budget.py) doubles the budget on
validation until it no longer helps.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

CURVE_METRIC = "val_auc"  # the per-epoch validation metric the late gain reads
LATE_GAIN = "val_late_gain"  # the run metric that holds it
LATE_GAIN_TOL = 0.05  # validation AUC: a mean late gain above this is "still rising"
FIT_METRIC = "train_ce"  # the last epoch's mean cross-entropy on the labelled training images
FIT_CE_TOL = 0.1  # nats: a mean final training CE above this is "not fitted yet"
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


def mean_known(values: Iterable[float]) -> float:
    """The mean of the values that are not None or nan; nan when none is."""
    known = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(known) / len(known) if known else math.nan


def still_improving(gains: Iterable[float], fit_ces: Iterable[float] = (), tol: float = LATE_GAIN_TOL,
                    fit_tol: float = FIT_CE_TOL) -> bool:
    """A cell whose runs' mean late gain exceeds `tol`, or whose mean final training CE exceeds
    `fit_tol` (runs without a value are left out; with none of either, the cell cannot be judged
    and is not flagged)."""
    gain, ce = mean_known(gains), mean_known(fit_ces)
    return (not math.isnan(gain) and gain > tol) or (not math.isnan(ce) and ce > fit_tol)
