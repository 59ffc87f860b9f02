"""Similarity-preserving KD (SP): Tung & Mori, "Similarity-Preserving Knowledge
Distillation", ICCV 2019, Eq. 1-4: match the batch's pairwise-similarity matrix of
the teacher, on the pooled penultimate features (the two dims may differ):

    G = f . f^T                          (B, B)
    G~[i] = G[i] / ||G[i]||_2            each row L2-normalised
    L_sp = ||G~_t - G~_s||_F^2 / B^2

As RepDistiller's `Similarity` computes it for one feature pair (checked on identical tensors). It is
invariant to scaling either model's features by a positive constant, and bounded:
each normalised row has norm 1, so L_sp <= 4 / B. The authors weight it by a large
factor (RepDistiller's beta = 3000) because on CIFAR feature maps it is tiny; on our
pooled features it is not, so our weight is the common lambda, chosen in
search_spaces/sp.py from measurements. A batch of one image has no pairs: the term
is then 0, still attached to the graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.losses.base import DistillTerm, Outputs
from trainables.losses.registry import register_loss


def similarity(features: Tensor) -> Tensor:
    """(B, D) -> (B, B): f . f^T with each row L2-normalised."""
    f = features.float()
    return F.normalize(f @ f.t(), p=2, dim=1)


def sp_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """||G~_t - G~_s||_F^2 / B^2 for student features (B, D_s) and teacher features
    (B, D_t); the teacher side carries no gradient (0 if B < 2)."""
    b = f_s.shape[0]
    if b < 2:
        return f_s.float().sum() * 0.0
    with torch.no_grad():
        g_t = similarity(f_t.detach())  # (B, B)
    g_s = similarity(f_s)  # (B, B)
    diff = g_t - g_s
    return (diff * diff).sum() / (b * b)


@register_loss("sp")
class SP(DistillTerm):
    """Similarity-preserving KD on the pooled penultimate features, or (`reads: map`) on the last
    stage's feature maps flattened to (B, C*H*W), as RepDistiller's `Similarity` reads its
    maps (logits unused)."""

    def forward(self, student: Outputs, teacher: Outputs, labels: Tensor, index: Tensor) -> Tensor:
        if self.opt.reads == "map":
            return sp_loss(student.maps[0].flatten(1), teacher.maps[0].detach().flatten(1))
        return sp_loss(student.features, teacher.features.detach())
