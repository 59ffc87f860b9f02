"""AT and FitNet hints, checked against RepDistiller (github.com/HobbitLong/RepDistiller,
commit b84f547c5db6a35318d4671d7d5c4de74c822403) on identical tensors: AT against its
`Attention.at_loss` (distiller_zoo/AT.py), FitNet against its `HintLoss`
(distiller_zoo/FitNet.py) applied to its `ConvReg` (models/util.py), with the regressor's
parameters set to the same seeded values. The recorded values (losses, gradient sums and
norms, a few gradient entries) come from running that code, on CPU in float32, on the
tensors built here; plus hand computations."""
from __future__ import annotations

import pytest
import torch

from trainables.losses.at import at_loss, attention_map
from trainables.losses.fitnet import ConvReg, hint_loss

REL = 1e-5


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def seeded_maps(s_shape, t_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Student then teacher map, standard normal from a generator seeded with 0."""
    g = torch.Generator().manual_seed(0)
    return randn(g, *s_shape), randn(g, *t_shape)


def close(got: float, expected: float, rel: float = REL, abs_: float = 1e-9) -> bool:
    return got == pytest.approx(expected, rel=rel, abs=abs_)


# ---- AT against RepDistiller ----------------------------------------------------------------

# name: (student shape, teacher shape, p) -> RepDistiller's loss, d loss / d f_s: sum, norm, [0, 0, 0, :4]
AT_REFERENCE = {
    "same": ((4, 3, 4, 4), (4, 5, 4, 4), 2.0, 0.0384968333, 0.00544366334, 0.00992432516,
             [0.00018391374, 0.000656662858, 4.45825608e-05, 0.000143433848]),
    "student_larger": ((4, 3, 8, 8), (4, 5, 4, 4), 2.0, 0.0353574939, -0.0152864251, 0.00855256431,
                       [-2.06188488e-05, -2.06188488e-05, 2.9702785e-06, 2.9702785e-06]),
    "teacher_larger": ((4, 3, 4, 4), (4, 5, 8, 8), 2.0, 0.0365890451, -0.00206126552, 0.0100357989,
                       [0.00119598338, -3.93823975e-05, 0.000229065437, 0.000254801824]),
    "same_p4": ((4, 3, 4, 4), (4, 5, 4, 4), 4.0, 0.0915366486, 0.0215322971, 0.0189161226,
                [0.000374803756, 0.00102670677, 7.71061764e-07, 7.87991848e-06]),
}


@pytest.mark.parametrize("name", sorted(AT_REFERENCE))
def test_at_matches_repdistiller(name):
    s_shape, t_shape, p, loss, grad_sum, grad_norm, grad_first = AT_REFERENCE[name]
    f_s, f_t = seeded_maps(s_shape, t_shape)
    f_s.requires_grad_(True)
    f_t.requires_grad_(True)
    got = at_loss(f_s, f_t, p=p)
    got.backward()
    assert got.dim() == 0 and got.dtype == torch.float32
    assert close(got.item(), loss)
    assert close(f_s.grad.norm().item(), grad_norm)
    assert close(f_s.grad.sum().item(), grad_sum, rel=1e-4, abs_=1e-8)
    assert f_s.grad[0, 0, 0, :4].tolist() == pytest.approx(grad_first, rel=REL, abs=1e-10)
    assert f_t.grad is None  # teacher detached


# ---- AT by hand ------------------------------------------------------------------------------


def test_attention_map_constant_over_channels_by_hand():
    # every channel holds a = [[1, 0], [0, 0]] (student) or all ones (teacher):
    # mean_c f^2 = a^2 -> student (1, 0, 0, 0), teacher (1, 1, 1, 1) / 2
    # diff (0.5, -0.5, -0.5, -0.5): squares sum 1, mean over B * H * W = 4 -> 0.25
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    f_s = a.expand(1, 3, 2, 2).clone()
    f_t = torch.ones(1, 5, 2, 2)
    assert attention_map(f_s).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert attention_map(f_t).tolist() == [[0.5, 0.5, 0.5, 0.5]]
    assert at_loss(f_s, f_t).item() == pytest.approx(0.25, rel=1e-6)


def test_attention_map_p_and_channel_mean_by_hand():
    # two channels (1, 2) and (3, 0): p = 2 -> mean (5, 2), norm sqrt(29)
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    got = attention_map(f, p=2.0)
    assert got.tolist()[0] == pytest.approx([5 / 29**0.5, 2 / 29**0.5], rel=1e-6)
    # p = 4 -> mean (41, 8)
    got = attention_map(f, p=4.0)
    n = (41**2 + 8**2) ** 0.5
    assert got.tolist()[0] == pytest.approx([41 / n, 8 / n], rel=1e-6)


@pytest.mark.parametrize("teacher_larger", [True, False])
def test_at_pools_the_larger_map_by_hand(teacher_larger):
    # the larger map is constant on 2x2 blocks equal to the smaller map's pixels:
    # average pooling gives the smaller map back exactly, so the loss is 0
    small = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(2, 3, 2, 2).clone()
    large = small[:, :1].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).expand(2, 4, 4, 4).clone()
    f_s, f_t = (small, large) if teacher_larger else (large, small)
    assert at_loss(f_s, f_t).item() == pytest.approx(0.0, abs=1e-12)
    # scaling one side does not change the normalised map either
    assert at_loss(3.0 * f_s, f_t).item() == pytest.approx(0.0, abs=1e-12)


def test_at_rejects_bad_shapes():
    with pytest.raises(ValueError, match="B, C, H, W"):
        at_loss(torch.ones(2, 3, 4), torch.ones(2, 3, 4, 4))
    with pytest.raises(ValueError, match="batch sizes"):
        at_loss(torch.ones(2, 3, 4, 4), torch.ones(3, 3, 4, 4))


def test_at_float32_from_bf16():
    f_s, f_t = seeded_maps((2, 3, 4, 4), (2, 5, 4, 4))
    got = at_loss(f_s.bfloat16(), f_t.bfloat16())
    assert got.dtype == torch.float32


# ---- FitNet against RepDistiller ---------------------------------------------------------------


def set_params(module: torch.nn.Module, seed: int) -> None:
    """0.3 * standard normal into every parameter, in name order (conv.bias, conv.weight, bn.bias,
    bn.weight): RepDistiller's ConvReg has the same names and shapes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(0.3 * randn(g, *p.shape))


# name: (student (B, C, H, W), teacher) -> RepDistiller's conv: type, weight shape, stride, padding;
# HintLoss()(ConvReg(f_s), f_t) in train mode; d/d f_s: norm; d/d conv.weight: norm, sum
FIT_REFERENCE = {
    "same": ((4, 3, 4, 4), (4, 5, 4, 4), torch.nn.Conv2d, (5, 3, 1, 1), (1, 1), (0, 0),
             1.12059474, 0.0225358941, 0.0635754466, 0.0421688743),
    "student_2x": ((4, 3, 8, 8), (4, 5, 4, 4), torch.nn.Conv2d, (5, 3, 3, 3), (2, 2), (1, 1),
                   1.16966343, 0.025280498, 0.0854918733, -0.0296751335),
    "student_half": ((4, 3, 4, 4), (4, 5, 8, 8), torch.nn.ConvTranspose2d, (3, 5, 4, 4), (2, 2), (1, 1),
                     1.10429788, 0.0120506119, 0.0376087911, 0.0774139389),
    "student_larger": ((4, 3, 6, 6), (4, 5, 4, 4), torch.nn.Conv2d, (5, 3, 3, 3), (1, 1), (0, 0),
                       1.15034735, 0.0274224039, 0.0804326832, -0.0469613597),
}


@pytest.mark.parametrize("name", sorted(FIT_REFERENCE))
def test_fitnet_matches_repdistiller(name):
    s_shape, t_shape, conv_type, w_shape, stride, padding, loss, grad_norm, w_grad_norm, w_grad_sum = (
        FIT_REFERENCE[name]
    )
    f_s, f_t = seeded_maps(s_shape, t_shape)
    reg = ConvReg(s_shape[1:], t_shape[1:])
    assert type(reg.conv) is conv_type
    assert tuple(reg.conv.weight.shape) == w_shape
    assert reg.conv.stride == stride and reg.conv.padding == padding
    set_params(reg, seed=1)
    f_s.requires_grad_(True)
    f_t.requires_grad_(True)
    got = hint_loss(reg(f_s), f_t)
    got.backward()
    assert got.dim() == 0 and got.dtype == torch.float32
    assert close(got.item(), loss)
    assert close(f_s.grad.norm().item(), grad_norm)
    assert close(reg.conv.weight.grad.norm().item(), w_grad_norm)
    assert close(reg.conv.weight.grad.sum().item(), w_grad_sum, rel=1e-4, abs_=1e-8)
    assert f_t.grad is None  # teacher detached


# ---- FitNet by hand ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s_shape, t_shape, conv_type, kernel, stride",
    [
        ((16, 8, 8), (32, 8, 8), torch.nn.Conv2d, (1, 1), (1, 1)),  # same size: 1x1
        ((16, 16, 16), (32, 8, 8), torch.nn.Conv2d, (3, 3), (2, 2)),  # student 2x larger
        ((16, 4, 4), (32, 8, 8), torch.nn.ConvTranspose2d, (4, 4), (2, 2)),  # student 2x smaller
        ((16, 7, 9), (32, 4, 5), torch.nn.Conv2d, (4, 5), (1, 1)),  # larger: kernel 1 + s - t
        ((16, 7, 7), (32, 14, 14), torch.nn.ConvTranspose2d, (4, 4), (2, 2)),
        ((16, 9, 9), (32, 4, 4), torch.nn.Conv2d, (6, 6), (1, 1)),  # 9 != 2 * 4: valid conv
    ],
)
def test_convreg_output_shapes(s_shape, t_shape, conv_type, kernel, stride):
    reg = ConvReg(s_shape, t_shape)
    assert type(reg.conv) is conv_type
    assert reg.conv.kernel_size == kernel and reg.conv.stride == stride
    assert [type(m) for m in reg.children()] == [conv_type, torch.nn.BatchNorm2d, torch.nn.ReLU]
    out = reg(torch.randn(3, *s_shape))
    assert tuple(out.shape) == (3, *t_shape)
    assert (out >= 0).all()  # ReLU last


def test_convreg_takes_batch_shapes_too():
    reg = ConvReg(torch.Size([8, 16, 8, 8]), torch.Size([8, 32, 4, 4]))
    assert tuple(reg(torch.randn(2, 16, 8, 8)).shape) == (2, 32, 4, 4)


@pytest.mark.parametrize(
    "s_shape, t_shape",
    [
        ((16, 4, 4), (32, 6, 6)),  # smaller, not half
        ((16, 4, 4), (32, 16, 16)),  # a quarter
        ((16, 8, 8), (32, 8, 9)),  # wider teacher
        ((16, 8, 6), (32, 4, 4)),  # stride-2 conv would give (4, 3)
        ((16, 4, 3), (32, 8, 8)),  # transposed conv would give (8, 6)
    ],
)
def test_convreg_rejects_shapes_it_cannot_map(s_shape, t_shape):
    with pytest.raises(ValueError) as err:
        ConvReg(s_shape, t_shape)
    assert str(s_shape) in str(err.value) and str(t_shape) in str(err.value)


def test_convreg_rejects_malformed_shapes():
    with pytest.raises(ValueError, match="student shape"):
        ConvReg((16, 8), (32, 8, 8))
    with pytest.raises(ValueError, match="teacher shape"):
        ConvReg((16, 8, 8), (32, 0, 8))


def test_hint_loss_by_hand():
    # (1 - 0)^2, (2 - 0)^2, (0 - 1)^2, (3 - 1)^2 -> (1 + 4 + 1 + 4) / 4 = 2.5
    s = torch.tensor([[[[1.0, 2.0], [0.0, 3.0]]]], requires_grad=True)
    t = torch.tensor([[[[0.0, 0.0], [1.0, 1.0]]]], requires_grad=True)
    got = hint_loss(s, t)
    assert got.item() == pytest.approx(2.5, rel=1e-7)
    got.backward()
    assert s.grad.tolist() == [[[[0.5, 1.0], [-0.5, 1.0]]]]  # 2 (s - t) / 4
    assert t.grad is None


def test_hint_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        hint_loss(torch.ones(2, 3, 4, 4), torch.ones(2, 3, 2, 2))
