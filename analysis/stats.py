"""Spread over seeds and paired comparisons between methods (the paper reports single runs).

A comparison pairs two cells by seed: the same seed is the same student subset and the
same initial weights, and every trial of a study is scored on the same test rows (checked
by their digest, `analysis.tables._compare`), so a difference is the methods' alone. It
gives the mean difference with a Student-t 95 % interval and the paired t-test's p-value;
a difference is *resolved* when its interval excludes 0. With fewer than two common seeds
there is no interval: "n/a (1 seed)".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; nan for one value) and count."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan, 0
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else math.nan), int(x.size)


@dataclass(frozen=True)
class Paired:
    n: int  # common seeds
    mean: float  # mean of a - b over common seeds
    low: float
    high: float
    p: float  # two-sided paired t-test
    seeds: tuple[int, ...]

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def resolved(self) -> bool:
        """The 95 % interval excludes 0 (a point interval, all differences equal, counts when not 0)."""
        if self.n < 2 or math.isnan(self.low):
            return False
        return self.low > 0 or self.high < 0

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


def per_seed(seeds: Sequence[int], values: Sequence[float]) -> dict[int, float]:
    """Seed -> value (the mean if a seed occurs twice)."""
    out: dict[int, list[float]] = {}
    for s, v in zip(seeds, values):
        out.setdefault(int(s), []).append(float(v))
    return {s: float(np.mean(v)) for s, v in out.items()}


def paired(a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE) -> Paired:
    """a - b paired by seed."""
    common = tuple(sorted(set(a) & set(b)))
    diffs = [a[s] - b[s] for s in common]
    mean, low, high, p = t_interval(diffs, confidence)
    return Paired(len(common), mean, low, high, p, common)
