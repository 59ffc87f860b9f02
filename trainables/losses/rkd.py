"""Relational KD: Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019:
its distance-wise and angle-wise losses, on the pooled penultimate features.

Distance: psi_D(t_i, t_j) = ||t_i - t_j|| / mu, mu the mean distance over pairs i != j
of the batch (so the term is scale-free and the two feature dims may differ);
L_D = mean over pairs i != j of Huber(psi_D(t), psi_D(s)).
Angle: psi_A(t_i, t_j, t_k) = cos of the angle at t_j, <e_ij, e_kj> with
e_ij = (t_i - t_j) / ||t_i - t_j||; L_A = mean over distinct triplets of Huber(psi_A(t), psi_A(s)).
Huber = smooth-L1 with delta 1 (the paper's l_delta).
L_rkd = hp.rkd_distance_w * L_D + hp.rkd_angle_w * L_A (weights 25 and 50, as Park et al.).

Choice: the means run over pairs i != j and triplets of distinct points (the paper's
sums over X^2 and X^3, without the degenerate entries, which are 0 on both sides).
A term that needs more points than the batch has (distance 2, angle 3) is 0,
still attached to the graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.losses.base import DistillTerm, Outputs
from trainables.losses.registry import register_loss

_EPS = 1e-12


def _differences(e: Tensor) -> Tensor:
    """(B, D) -> (B, B, D) with [a, b] = e_b - e_a."""
    return e.unsqueeze(0) - e.unsqueeze(1)


def _off_diagonal(n: int, device: torch.device) -> Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def _distances(diff: Tensor) -> Tensor:
    """Pairwise distances normalised by their mean over i != j; (B, B), diagonal 0."""
    n = diff.shape[0]
    off = _off_diagonal(n, diff.device)
    # clamp keeps sqrt's gradient finite on the diagonal and for coincident points
    dist = (diff * diff).sum(-1).clamp_min(_EPS).sqrt() * off  # (B, B)
    mean = dist.sum() / (n * (n - 1))
    return dist / mean.clamp_min(_EPS)


def _angles(diff: Tensor) -> Tensor:
    """(B, B, B) with [a, b, c] = cos of the angle at point a between b and c."""
    unit = diff * (diff * diff).sum(-1, keepdim=True).clamp_min(_EPS).rsqrt()  # (B, B, D)
    return torch.bmm(unit, unit.transpose(1, 2))  # (B, B, B)


def _distinct_triplets(n: int, device: torch.device) -> Tensor:
    off = _off_diagonal(n, device)
    return off.unsqueeze(2) & off.unsqueeze(1) & off.unsqueeze(0)  # (B, B, B): a, b, c distinct


def rkd_distance_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Park et al. distance-wise loss: mean Huber between normalised pairwise distances (0 if B < 2)."""
    s = student_features.float()
    n = s.shape[0]
    if n < 2:
        return s.sum() * 0.0
    with torch.no_grad():
        d_t = _distances(_differences(teacher_features.float()))
    d_s = _distances(_differences(s))
    off = _off_diagonal(n, s.device)
    return F.smooth_l1_loss(d_s[off], d_t[off], beta=1.0)


def rkd_angle_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Park et al. angle-wise loss: mean Huber between cosines of triplet angles (0 if B < 3)."""
    s = student_features.float()
    n = s.shape[0]
    if n < 3:
        return s.sum() * 0.0
    with torch.no_grad():
        a_t = _angles(_differences(teacher_features.float()))
    a_s = _angles(_differences(s))
    keep = _distinct_triplets(n, s.device)
    return F.smooth_l1_loss(a_s[keep], a_t[keep], beta=1.0)


@register_loss("rkd")
class RKD(DistillTerm):
    """Relational KD on penultimate features: distance and angle terms, weighted."""

    def forward(self, student: Outputs, teacher: Outputs, labels: Tensor, index: Tensor) -> Tensor:
        t = teacher.features.detach()
        return self.hp.rkd_distance_w * rkd_distance_loss(student.features, t) + (
            self.hp.rkd_angle_w * rkd_angle_loss(student.features, t)
        )
