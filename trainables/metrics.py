"""Detection metrics at frame and video level: ACC (threshold 0.5, as the paper reports
it), balanced ACC (the mean of the real and the fake recall: on an unbalanced test split,
such as Celeb-DF's 178 real and 340 fake videos, it does not reward always saying "fake"),
AUC, EER, AP.

Computed with scikit-learn; a metric that is undefined (one class only) is NaN.
Video level = mean fake probability over a video's frames.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score, roc_curve


def frame_metrics(labels: Sequence[int], probs: Sequence[float]) -> dict[str, float]:
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    pred = (p >= 0.5).astype(int)
    out = {"acc": float(np.mean(pred == y)) if len(y) else math.nan}
    if len(np.unique(y)) < 2:
        return {**out, "bacc": math.nan, "auc": math.nan, "eer": math.nan, "ap": math.nan}
    out["bacc"] = float(balanced_accuracy_score(y, pred))
    out["auc"] = float(roc_auc_score(y, p))
    out["eer"] = equal_error_rate(y, p)
    out["ap"] = float(average_precision_score(y, p))
    return out


def equal_error_rate(labels: np.ndarray, probs: np.ndarray) -> float:
    """The rate where false positives equal false negatives (linear interpolation on the ROC)."""
    fpr, tpr, _ = roc_curve(labels, probs)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # decreasing from 1 to -1 along the curve
    i = int(np.argmax(diff <= 0))
    if i == 0:
        return float(fpr[0])
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def compute_metrics(
    labels: Sequence[int], probs: Sequence[float], videos: Sequence[str] | None = None
) -> dict[str, float]:
    """Frame metrics, plus `video_*` ones when each frame's video id is given."""
    out = frame_metrics(labels, probs)
    if videos is not None:
        frame = pd.DataFrame({"y": np.asarray(labels), "p": np.asarray(probs), "v": list(videos)})
        per_video = frame.groupby("v", sort=True).agg(y=("y", "max"), p=("p", "mean"))
        for key, value in frame_metrics(per_video["y"], per_video["p"]).items():
            out[f"video_{key}"] = value
    return out
