"""Attention transfer (AT): Zagoruyko & Komodakis, "Paying More Attention to Attention:
Improving the Performance of Convolutional Neural Networks via Attention Transfer",
ICLR 2017, activation-based AT (Eq. 2 with the p-th power mapping, p = 2).

For a feature map f of shape (B, C, H, W):

    Q(f) = vec( (1/C) sum_c f_c^p )            (B, H*W), the spatial attention map
    Q~(f) = Q(f) / ||Q(f)||_2                   each image's map L2-normalised
    L_at = mean over (b, j) of (Q~(f_s)[b, j] - Q~(f_t)[b, j])^2

This is what RepDistiller's `Attention` computes for one pair of maps (its `at_loss`):
`F.normalize(f.pow(p).mean(1).view(B, -1))` per side, then `.pow(2).mean()` of the
difference, i.e. the squared distance averaged over B * H * W entries (the paper writes
the un-squared L2 distance summed over layers, with weight beta / 2; RepDistiller's
beta is 1000). It raises f to the p-th power without an absolute value (the paper's
|f|^p); for the default p = 2 the two agree.

Different spatial sizes: RepDistiller compares the heights only and adaptive-average-pools
the FEATURE map (before Q) of the larger side, student or teacher, down to the smaller
side's size; the channel counts may differ, since Q averages over channels. Here both
sides are pooled to (min H, min W), which is the same on square maps (the only ones
RepDistiller handles) and on any pair where one map is larger in both dimensions.

The teacher side carries no gradient; everything is computed in float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """(B, C, H, W) -> (B, H*W): mean over channels of f^p, each row L2-normalised."""
    f = f.float()
    return F.normalize(f.pow(p).mean(1).view(f.shape[0], -1))


def _pool_to(f: Tensor, size: tuple[int, int]) -> Tensor:
    """Adaptive average pooling of (B, C, H, W) to `size`; unchanged if already that size."""
    if tuple(f.shape[2:]) == size:
        return f
    return F.adaptive_avg_pool2d(f, size)


def _check_maps(f_s: Tensor, f_t: Tensor) -> None:
    if f_s.dim() != 4 or f_t.dim() != 4:
        raise ValueError(
            f"at_loss takes (B, C, H, W) feature maps, got student {tuple(f_s.shape)} "
            f"and teacher {tuple(f_t.shape)}"
        )
    if f_s.shape[0] != f_t.shape[0]:
        raise ValueError(
            f"at_loss: student and teacher batch sizes differ: {tuple(f_s.shape)} vs {tuple(f_t.shape)}"
        )


def at_loss(f_s: Tensor, f_t: Tensor, p: float = 2.0) -> Tensor:
    """Mean squared difference of the normalised attention maps of one student map
    (B, C_s, H_s, W_s) and one teacher map (B, C_t, H_t, W_t); the larger map is
    average-pooled to the smaller one first. Scalar, float32; no gradient to the teacher."""
    _check_maps(f_s, f_t)
    size = (min(f_s.shape[2], f_t.shape[2]), min(f_s.shape[3], f_t.shape[3]))
    with torch.no_grad():
        q_t = attention_map(_pool_to(f_t.detach().float(), size), p)  # (B, h*w)
    q_s = attention_map(_pool_to(f_s.float(), size), p)  # (B, h*w)
    return (q_s - q_t).pow(2).mean()


from trainables.losses.base import DistillTerm, Outputs  # noqa: E402
from trainables.losses.registry import register_loss  # noqa: E402


@register_loss("at")
class AT(DistillTerm):
    """Attention transfer over the declared stages: the sum over stage pairs of `at_loss`
    (student's and teacher's maps at the same stage); the common lambda weights it (the
    authors' and RepDistiller's beta = 1000 is AT's paper value)."""

    def forward(self, student: Outputs, teacher: Outputs, labels: Tensor, index: Tensor) -> Tensor:
        parts = [at_loss(s, t, p=self.opt.p) for s, t in zip(student.maps, teacher.maps)]
        return torch.stack(parts).sum()
