"""FitNet hints (Romero et al. 2015): a regressor of a middle student stage matched to the
teacher's map at that stage (loss: losses/fitnet.py)."""
from __future__ import annotations

from dataclasses import dataclass

from trainables.methods import declare_method


@dataclass(frozen=True)
class FitNetOptions:
    """FitNet's own option: the stage of the hint (teacher) and guided (student) layers, an
    index into the model's timm `feature_info` (negative from the last); the middle stage by
    default, as RepDistiller's hint layer 2 is."""

    stage: int = 2

    def map_stages(self) -> tuple[int, ...]:
        return (self.stage,)


declare_method("fitnet", options=FitNetOptions, unlabeled_rows=True, ablatable=("lam",), label="FitNet")
