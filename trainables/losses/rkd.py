"""Relational KD: Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019:
its distance-wise and angle-wise losses, on the pooled penultimate features.

Distance: psi_D(t_i, t_j) = ||t_i - t_j|| / mu, mu the mean distance over the B(B-1)
pairs i != j of the batch (so the term is scale-free and the two feature dims may differ);
L_D = (1/B^2) sum over all i, j of Huber(psi_D(s_i, s_j) - psi_D(t_i, t_j)).
Angle: psi_A(t_i, t_j, t_k) = <e_ji, e_ki>, the cos of the angle at t_i, with
e_ji = (t_j - t_i) / ||t_j - t_i|| (0 when j = i);
L_A = (1/B^3) sum over all i, j, k of Huber(psi_A(s_i, s_j, s_k) - psi_A(t_i, t_j, t_k)).
Huber = smooth-L1 with delta 1 (the paper's l_delta).
L_rkd = rkd_distance_w * L_D + rkd_angle_w * L_A (weights 25 and 50, as Park et al.).

Averaging convention, that of the authors' code (lenscloth/RKD), RepDistiller,
mdistiller and torchdistill: the means run over ALL B^2 distance entries and ALL B^3
angle entries, degenerate ones included. These are equal on both sides and add 0: the
diagonal i = j of the distances (0), angle entries with j = i or k = i (0), and those
with j = k != i (cos 1), for points that do not coincide. So L_D is (B-1)/B and L_A
is (B-1)(B-2)/B^2 times the mean over the non-degenerate entries only (pairs i != j,
triplets of distinct indices): at B = 10, 0.9 and 0.72. The normaliser mu is, as
there, the mean of the positive off-diagonal distances (the references' mean over
d > 0; off the diagonal distances are clamped to >= 1e-6, so every pair counts).
A term that needs more points than the batch has (distance 2, angle 3) is 0,
still attached to the graph (the references give NaN for B = 1).
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


def _distances(diff: Tensor) -> Tensor:
    """Pairwise distances normalised by their mean over i != j; (B, B), diagonal 0."""
    n = diff.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=diff.device)
    # clamp keeps sqrt's gradient finite on the diagonal and for coincident points
    dist = (diff * diff).sum(-1).clamp_min(_EPS).sqrt() * off  # (B, B)
    mean = dist.sum() / (n * (n - 1))
    return dist / mean.clamp_min(_EPS)


def _angles(diff: Tensor) -> Tensor:
    """(B, B, B) with [a, b, c] = cos of the angle at point a between b and c (0 if b or c is a)."""
    unit = diff * (diff * diff).sum(-1, keepdim=True).clamp_min(_EPS).rsqrt()  # (B, B, D)
    return torch.bmm(unit, unit.transpose(1, 2))  # (B, B, B)


def rkd_distance_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Park et al. distance-wise loss: Huber between normalised pairwise distances, mean
    over all B^2 entries (0 if B < 2)."""
    s = student_features.float()
    if s.shape[0] < 2:
        return s.sum() * 0.0
    with torch.no_grad():
        d_t = _distances(_differences(teacher_features.float()))  # (B, B)
    d_s = _distances(_differences(s))  # (B, B)
    return F.smooth_l1_loss(d_s, d_t, beta=1.0)


def rkd_angle_loss(student_features: Tensor, teacher_features: Tensor) -> Tensor:
    """Park et al. angle-wise loss: Huber between cosines of triplet angles, mean over all
    B^3 entries (0 if B < 3)."""
    s = student_features.float()
    if s.shape[0] < 3:
        return s.sum() * 0.0
    with torch.no_grad():
        a_t = _angles(_differences(teacher_features.float()))  # (B, B, B)
    a_s = _angles(_differences(s))  # (B, B, B)
    return F.smooth_l1_loss(a_s, a_t, beta=1.0)


@register_loss("rkd")  # options: RKDOptions (rkd_distance_w, rkd_angle_w) in trainables/methods/
class RKD(DistillTerm):
    """Relational KD on penultimate features: distance and angle terms, weighted."""

    def forward(self, student: Outputs, teacher: Outputs, labels: Tensor, index: Tensor) -> Tensor:
        t = teacher.features.detach()
        return self.opt.rkd_distance_w * rkd_distance_loss(student.features, t) + (
            self.opt.rkd_angle_w * rkd_angle_loss(student.features, t)
        )
