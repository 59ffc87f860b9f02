"""Task loss: cross-entropy on the student's logits (paper Eq. 9, L_task), and `vt`,
vanilla training, whose loss is that cross-entropy alone (no distillation term).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from trainables.losses.base import DistillTerm, Mix, Outputs
from trainables.losses.registry import register_loss


def cross_entropy(logits: Tensor, labels: Tensor, mix: Mix | None = None) -> Tensor:
    """Mean cross-entropy of (B, C) logits against (B,) long labels, in float32; on a mixed
    batch lam * CE(labels) + (1 - lam) * CE(labels[partner]) (mixup's and cutmix's target)."""
    if mix is None:
        return F.cross_entropy(logits.float(), labels)
    return mix.lam * F.cross_entropy(logits.float(), labels) + (1.0 - mix.lam) * F.cross_entropy(
        logits.float(), labels[mix.partner])


@register_loss("vt")  # the baseline (trainables.methods)
class VanillaTraining(DistillTerm):
    """Vanilla training: no teacher, no distillation term (StudentLoss builds none)."""

    needs_teachers = False

    def forward(self, student: Outputs, teacher: Outputs, labels: Tensor, index: Tensor) -> Tensor:
        raise RuntimeError("vt has no distillation term; StudentLoss never calls it")
