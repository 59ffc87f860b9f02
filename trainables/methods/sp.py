"""Similarity-preserving KD (Tung & Mori 2019): the batch's pairwise similarities matched, on the
pooled embedding (the default) or on the last stage's feature map, as its authors and
RepDistiller apply it (loss: losses/sp.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trainables.methods import declare_method


@dataclass(frozen=True)
class SPOptions:
    """Where SP reads: "embedding", the pooled penultimate features; "map", the last stage's
    feature map (B, C, H, W) flattened, as the authors do."""

    reads: Literal["embedding", "map"] = "embedding"

    def map_stages(self) -> tuple[int, ...]:
        return (-1,) if self.reads == "map" else ()


declare_method("sp", options=SPOptions, unlabeled_rows=True, ablatable=("lam",))  # features only: labels unused
