"""Hinton KD: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network"
(2015), Sec. 2: match the teacher's temperature-softened class probabilities,
scaled by T^2 so gradients keep their size when T changes:

    L_kd = T^2 * KL( softmax(t / T) || softmax(s / T) ),  batch mean, T = kd_t.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from trainables.losses.base import DistillTerm, Outputs
from trainables.losses.registry import register_loss


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, averaged over the batch."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)  # (B, C)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)  # (B, C)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    return kl * temperature * temperature


@register_loss("kd")  # options: KDOptions (kd_t, the temperature T) in trainables/methods/
class KD(DistillTerm):
    """Hinton KD on the logits (features unused)."""

    def forward(self, student: Outputs, teacher: Outputs, labels: Tensor, index: Tensor) -> Tensor:
        return kd_loss(student.logits, teacher.logits.detach(), self.opt.kd_t)
