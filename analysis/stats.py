"""Spread over seeds and paired comparisons between methods (the paper reports single runs).

A comparison pairs two cells run by run on a key: (draw, seed), the training subset's draw
and the seed of the initial weights (legacy studies drew the subset with the seed: draw =
seed). The same key is the same student subset and the same initial weights, and every
trial of a study is scored on the same test rows (checked by their digest,
`analysis.tables._compare`), so a difference is the methods' alone. For the paired
differences it gives:
- the mean difference with a Student-t 95 % interval and the paired t-test's p-value;
- a percentile bootstrap 95 % interval of the mean difference (`scipy.stats.bootstrap`,
  fixed random state: a report comes out the same every time);
- the probability of improvement P(A > B): the share of pairs where A beats B, ties
  counting half (Agarwal et al. 2021, "Deep Reinforcement Learning at the Edge of the
  Statistical Precipice"), with its percentile bootstrap 95 % interval over pairs.
A study makes many comparisons, so their p-values are Holm-adjusted (`holm`) over every
comparison of the study on the same metric; a difference is *resolved* when its
Holm-adjusted p-value is below 0.05 and it has at least two pairs (`is_resolved`). With
fewer than two common keys there is no interval: "n/a (1 seed)".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # a difference is resolved when its Holm-adjusted p-value is below this
N_RESAMPLES = 9999  # bootstrap resamples (scipy's default)
BOOTSTRAP_SEED = 0  # fixed: the same runs give the same intervals in every report
TIE = 1e-12  # |a - b| at or below this is a tie (the same score up to float rounding)


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; nan for one value) and count."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else math.nan), int(x.size)


@dataclass(frozen=True)
class Paired:
    n: int  # common keys (pairs)
    mean: float  # mean of a - b over the pairs
    low: float  # Student-t 95 % interval of the mean
    high: float
    p: float  # two-sided paired t-test; 0 when every difference is the same non-zero value
    seeds: tuple[Hashable, ...]  # the paired keys: seeds, or (draw, seed)
    boot_low: float = math.nan  # percentile bootstrap 95 % interval of the mean difference
    boot_high: float = math.nan
    p_improvement: float = math.nan  # P(A > B) over the pairs, ties counting half
    p_improvement_lo: float = math.nan  # its percentile bootstrap 95 % interval
    p_improvement_hi: float = math.nan

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def text(self) -> str:
        if self.n == 0:
            return "n/a (no common seed)"
        if self.n < 2:
            return f"{self.mean:+.3f}, n/a (1 seed)"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n={self.n})"


def t_interval(diffs: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, low, high, p) of the mean of `diffs`: mean ± t_{(1+c)/2, n-1} · s/√n."""
    d = np.asarray(diffs, dtype=float)
    n = d.size
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(d.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se <= 1e-12:  # identical differences (up to rounding): a point, and no test
        return mean, mean, mean, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return mean, mean - half, mean + half, p


def _plain(key: Hashable) -> Hashable:
    """numpy integers as int, inside tuples too: keys compare and print the same whatever made them."""
    if isinstance(key, Integral):
        return int(key)
    return tuple(_plain(k) for k in key) if isinstance(key, tuple) else key


def per_seed(keys: Sequence[Hashable], values: Sequence[float]) -> dict[Hashable, float]:
    """Key (a seed, or a (draw, seed) tuple) -> value (the mean if a key occurs twice)."""
    out: dict[Hashable, list[float]] = {}
    for k, v in zip(keys, values):
        out.setdefault(_plain(k), []).append(float(v))
    return {k: float(np.mean(v)) for k, v in out.items()}


def bootstrap_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (fixed random state); nan with fewer
    than two values, the value itself when all are equal."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return math.nan, math.nan
    if np.ptp(x) == 0:  # every resample has the same mean
        return float(x[0]), float(x[0])
    res = stats.bootstrap((x,), np.mean, method="percentile", confidence_level=confidence,
                          n_resamples=N_RESAMPLES, random_state=BOOTSTRAP_SEED)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def probability_of_improvement(a: Sequence[float], b: Sequence[float],
                               confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(P(A > B), low, high) over paired values: the mean over pairs of 1[a_i > b_i] + 0.5 1[a_i = b_i]
    (Agarwal et al. 2021), and its percentile bootstrap interval resampling pairs."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    wins = np.where(np.abs(d) <= TIE, 0.5, (d > 0).astype(float))  # (n,) one score per pair
    return (float(wins.mean()), *bootstrap_interval(wins, confidence))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order: with the m non-nan p-values
    sorted ascending, p_adj_(i) = max over j <= i of min(1, (m - j + 1) p_(j)); nan stays nan and
    does not count in m. (scipy's `false_discovery_control` has only Benjamini-Hochberg/-Yekutieli.)"""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])  # (m,) multiplier m, m-1, ..., 1
    out[order] = np.maximum.accumulate(adjusted)
    return out


def is_resolved(n: int, p_holm: float) -> bool:
    """Resolved: at least two pairs and a Holm-adjusted p-value below ALPHA."""
    return n >= 2 and not math.isnan(p_holm) and p_holm < ALPHA


def paired(a: Mapping[Hashable, float], b: Mapping[Hashable, float], confidence: float = CONFIDENCE) -> Paired:
    """a - b paired on their common keys (seeds, or (draw, seed) tuples)."""
    common = tuple(sorted(set(a) & set(b)))
    va, vb = [a[k] for k in common], [b[k] for k in common]
    diffs = [x - y for x, y in zip(va, vb)]
    mean, low, high, p = t_interval(diffs, confidence)
    if len(common) >= 2 and math.isnan(p) and low == high and abs(mean) > TIE:
        p = 0.0  # every difference the same non-zero value: t is infinite, no spread to doubt it
    return Paired(len(common), mean, low, high, p, common, *bootstrap_interval(diffs, confidence),
                  *probability_of_improvement(va, vb, confidence))
