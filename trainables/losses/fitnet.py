"""FitNet hints: Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for
Thin Deep Nets", ICLR 2015, the hint-based training loss (Eq. 3):

    L_hint = 1/2 || u_h(x; W_hint) - r(v_g(x; W_guided); W_r) ||^2

u_h: the teacher's hint layer; v_g: the student's guided layer; r: a convolutional
regressor mapping the student's map to the teacher's shape. The paper's regressor is
one convolution whose kernel makes the sizes meet (k = n_s - n_t + 1 per spatial
dimension), chosen over a fully connected one to keep the parameter count small.

As RepDistiller's `HintLoss` and `ConvReg` compute it: the loss is `nn.MSELoss`, the mean
of the squared differences over every entry (the paper's 1/2 and sum become a mean),
and the regressor is a convolution, then BatchNorm2d, then ReLU, its convolution
picked by comparing the heights of the two maps, in this order:
  - student height twice the teacher's:  Conv2d 3x3, stride 2, padding 1;
  - student height half the teacher's:   ConvTranspose2d 4x4, stride 2, padding 1;
  - student height >= the teacher's:     Conv2d with kernel (1 + H_s - H_t, 1 + W_s - W_t),
    no padding (the paper's regressor; equal sizes give a 1x1 convolution);
  - otherwise it cannot map the student to the teacher.
RepDistiller applies it to the student's map and compares with the teacher's map,
detached; the regressor trains with the student. ConvReg here makes the same choices
and raises a ValueError, naming both shapes, where the chosen convolution would not
produce the teacher's (H, W) (RepDistiller fails later, or at once, in those cases).

The teacher side carries no gradient; the loss is computed in float32.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _chw(shape: Sequence[int], side: str) -> tuple[int, int, int]:
    """(C, H, W) from a (C, H, W) shape or an (N, C, H, W) one (N ignored)."""
    dims = tuple(int(d) for d in shape)
    if len(dims) == 4:
        dims = dims[1:]
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"ConvReg: the {side} shape must be (C, H, W) with positive sizes, got {tuple(shape)}")
    return dims  # type: ignore[return-value]


def _regressor_conv(s: tuple[int, int, int], t: tuple[int, int, int]) -> tuple[nn.Module, tuple[int, int]]:
    """RepDistiller's choice of convolution for student (C, H, W) `s` and teacher `t`,
    and the (H, W) it outputs."""
    (s_c, s_h, s_w), (t_c, t_h, t_w) = s, t
    if s_h == 2 * t_h:
        conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        return conv, ((s_h - 1) // 2 + 1, (s_w - 1) // 2 + 1)
    if 2 * s_h == t_h:
        conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        return conv, (2 * s_h, 2 * s_w)
    if s_h >= t_h and s_w >= t_w:
        conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        return conv, (t_h, t_w)
    raise ValueError(f"ConvReg cannot map a student map of shape {s} to a teacher map of shape {t} (C, H, W)")


class ConvReg(nn.Module):
    """FitNet's convolutional regressor: student map (B, C_s, H_s, W_s) -> (B, C_t, H_t, W_t),
    convolution then BatchNorm2d then ReLU. `s_shape`, `t_shape`: (C, H, W) of the student's
    and teacher's maps (an (N, C, H, W) shape is accepted, N ignored)."""

    def __init__(self, s_shape: Sequence[int], t_shape: Sequence[int]):
        super().__init__()
        s, t = _chw(s_shape, "student"), _chw(t_shape, "teacher")
        self.conv, out_hw = _regressor_conv(s, t)
        if out_hw != t[1:]:
            raise ValueError(
                f"ConvReg cannot map a student map of shape {s} to a teacher map of shape {t} (C, H, W): "
                f"the regressor picked from the heights would output (H, W) = {out_hw}"
            )
        self.bn = nn.BatchNorm2d(t[0])
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


def hint_loss(f_s_regressed: Tensor, f_t: Tensor) -> Tensor:
    """Mean squared error between the regressed student map and the teacher's map (same
    shape); scalar, float32; no gradient to the teacher."""
    if f_s_regressed.shape != f_t.shape:
        raise ValueError(
            f"hint_loss: the regressed student map {tuple(f_s_regressed.shape)} and the teacher map "
            f"{tuple(f_t.shape)} differ in shape"
        )
    return F.mse_loss(f_s_regressed.float(), f_t.detach().float())


from trainables.losses.base import DistillTerm, LossContext, Outputs  # noqa: E402
from trainables.losses.registry import register_loss  # noqa: E402


@register_loss("fitnet")
class FitNet(DistillTerm):
    """The hint loss of the student's map at the declared stage, through its own `ConvReg`
    (trained with the student, one per teacher), against the teacher's map there; the
    common lambda weights it (RepDistiller's beta = 100 is FitNet's paper value)."""

    def __init__(self, hp, student_dim: int, teacher_dim: int, ctx: LossContext):
        super().__init__(hp, student_dim, teacher_dim, ctx)
        if not ctx.student_maps or not ctx.own_teacher_maps:
            raise ValueError("FitNet reads feature maps: the loss context has no map shapes "
                             "(the engine gives them for a method whose options name map_stages)")
        self.regressor = ConvReg(ctx.student_maps[0], ctx.own_teacher_maps[0])

    def forward(self, student: Outputs, teacher: Outputs, labels: Tensor, index: Tensor) -> Tensor:
        return hint_loss(self.regressor(student.maps[0].float()), teacher.maps[0])
