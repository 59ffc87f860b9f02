"""Detection metrics at frame and video level: ACC (threshold 0.5, as the paper reports
it), balanced ACC (the mean of the real and the fake recall: on an unbalanced test split,
such as Celeb-DF's 178 real and 340 fake videos, it does not reward always saying "fake"),
AUC, EER, AP.

Computed with scikit-learn; a metric that is undefined (one class only) is NaN.
Video level = the mean (`video_rule="mean"`, the default) or the max ("max": a video is as
fake as its most suspicious frame) of its frames' fake probabilities; with
`frames_per_video=k`, of at most k frames evenly spaced over the video in their given order
(DeepfakeBench scores 32 frames a video). Frame-level metrics always use every frame.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score, roc_curve

VIDEO_RULES = ("mean", "max")  # how a video's frame probabilities make its own


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
    labels: Sequence[int], probs: Sequence[float], videos: Sequence[str] | None = None,
    video_rule: str = "mean", frames_per_video: int | None = None,
) -> dict[str, float]:
    """Frame metrics, plus `video_*` ones when each frame's video id is given (rules: module docstring)."""
    if video_rule not in VIDEO_RULES:
        raise ValueError(f"video_rule={video_rule!r} must be one of {list(VIDEO_RULES)}")
    if frames_per_video is not None and (
            isinstance(frames_per_video, bool) or not isinstance(frames_per_video, (int, np.integer))
            or frames_per_video < 1):
        raise ValueError(f"frames_per_video={frames_per_video!r} must be an integer >= 1 or None")
    out = frame_metrics(labels, probs)
    if videos is not None:
        frame = pd.DataFrame({"y": np.asarray(labels), "p": np.asarray(probs), "v": list(videos)})
        if frames_per_video is not None:
            frame = frame.iloc[_evenly_spaced(frame["v"], frames_per_video)]
        per_video = frame.groupby("v", sort=True).agg(y=("y", "max"), p=("p", video_rule))
        for key, value in frame_metrics(per_video["y"], per_video["p"]).items():
            out[f"video_{key}"] = value
    return out


def _evenly_spaced(videos: pd.Series, k: int) -> np.ndarray:
    """Row positions of at most `k` frames a video: round(linspace(0, n - 1, k)), unique, in order."""
    keep = []
    for rows in videos.groupby(videos, sort=False).indices.values():  # (n,) positions, ascending
        # k >= n picks every frame: consecutive points are <= 1 apart, so each index is someone's nearest
        keep.append(rows[np.unique(np.linspace(0, len(rows) - 1, k).round().astype(int))])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, int)
