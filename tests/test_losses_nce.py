"""contrastive_nce_loss (CKD Eq. 7-8) against hand computations with plain `math`."""
import math

import pytest
import torch
import torch.nn.functional as F

from trainables.losses.ckd import contrastive_nce_loss


def t_(rows):
    return torch.tensor(rows, dtype=torch.float32)


def hand_loss(t, s_pos, s_neg, tau, m, log_z=0.0):
    """The naive formula, one scalar at a time: h = P / (P + K/M), P = exp(a.b/tau - log_z)."""
    k = len(s_neg[0])
    total = 0.0
    for b in range(len(t)):
        dot = lambda u, v: sum(x * y for x, y in zip(u, v))  # noqa: E731
        p = math.exp(dot(t[b], s_pos[b]) / tau - log_z)
        total += math.log(p / (p + k / m))
        for neg in s_neg[b]:
            p = math.exp(dot(t[b], neg) / tau - log_z)
            total += math.log(1.0 - p / (p + k / m))
    return -total / len(t)


def test_b1_k2_by_hand():
    # t.s_pos = 0.6, t.s_neg = (0, -1); tau 0.5 -> x = 1.2, (0, -2); K/M = 2/10 = 0.2
    t, s_pos, s_neg = [[1.0, 0.0]], [[0.6, 0.8]], [[[0.0, 1.0], [-1.0, 0.0]]]
    log_h_pos = math.log(math.exp(1.2) / (math.exp(1.2) + 0.2))  # -0.058494
    log_not_h_1 = math.log(1.0 - 1.0 / (1.0 + 0.2))  # log(1/6) = -1.791759
    log_not_h_2 = math.log(1.0 - math.exp(-2) / (math.exp(-2) + 0.2))  # -0.516814
    expected = -(log_h_pos + log_not_h_1 + log_not_h_2)
    assert expected == pytest.approx(2.367067, abs=1e-6)
    got = contrastive_nce_loss(t_(t), t_(s_pos), t_(s_neg), tau=0.5, num_data=10)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_b1_k2_with_log_z():
    # log Z = log 2: every P halves
    t, s_pos, s_neg = [[1.0, 0.0]], [[0.6, 0.8]], [[[0.0, 1.0], [-1.0, 0.0]]]
    p_pos, p_1, p_2 = math.exp(1.2) / 2, 1.0 / 2, math.exp(-2) / 2
    expected = -(
        math.log(p_pos / (p_pos + 0.2)) + math.log(0.2 / (p_1 + 0.2)) + math.log(0.2 / (p_2 + 0.2))
    )
    for log_z in (math.log(2.0), torch.tensor(math.log(2.0))):
        got = contrastive_nce_loss(t_(t), t_(s_pos), t_(s_neg), tau=0.5, num_data=10, log_z=log_z)
        assert got.item() == pytest.approx(expected, rel=1e-6)


def test_b2_k1_by_hand():
    # anchor 0: x_pos = 1/1 = 1, x_neg = 0; anchor 1: x_pos = 0.8, x_neg = -1; K/M = 1/4
    t = [[1.0, 0.0], [0.0, 1.0]]
    s_pos = [[1.0, 0.0], [0.6, 0.8]]
    s_neg = [[[0.0, 1.0]], [[0.0, -1.0]]]
    c = 0.25
    row0 = math.log(math.e / (math.e + c)) + math.log(c / (1.0 + c))
    row1 = math.log(math.exp(0.8) / (math.exp(0.8) + c)) + math.log(c / (math.exp(-1) + c))
    expected = -(row0 + row1) / 2
    got = contrastive_nce_loss(t_(t), t_(s_pos), t_(s_neg), tau=1.0, num_data=4)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert got.item() == pytest.approx(hand_loss(t, s_pos, s_neg, 1.0, 4), rel=1e-6)


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("tau,log_z", [(0.2, 0.0), (0.5, 1.3), (1.0, -2.0), (0.1, 3.0)])
def test_equals_naive_formula_where_finite(tau, log_z):
    b, k, d, m = 3, 4, 5, 50
    t, s_pos, s_neg = _unit(b, d, seed=1), _unit(b, d, seed=2), _unit(b, k, d, seed=3)
    expected = hand_loss(t.tolist(), s_pos.tolist(), s_neg.tolist(), tau, m, log_z)
    got = contrastive_nce_loss(t.float(), s_pos.float(), s_neg.float(), tau, m, log_z)
    assert got.item() == pytest.approx(expected, rel=1e-4)


def _cases(b=4, k=6, d=8):
    t = _unit(b, d, seed=10).float()
    yield "random", t, _unit(b, d, seed=11).float(), _unit(b, k, d, seed=12).float(), 0.0
    yield "identical", t, t.clone(), t.unsqueeze(1).expand(b, k, d).clone(), 0.0
    yield "opposite", t, -t, (-t).unsqueeze(1).expand(b, k, d).clone(), 0.0
    yield "pos opposite, neg identical", t, -t, t.unsqueeze(1).expand(b, k, d).clone(), 0.0
    yield "large log_z", t, t.clone(), t.unsqueeze(1).expand(b, k, d).clone(), 1e4
    yield "very negative log_z", t, -t, t.unsqueeze(1).expand(b, k, d).clone(), -1e4
    yield "tensor log_z", t, t.clone(), _unit(b, k, d, seed=13).float(), torch.tensor(250.0)


@pytest.mark.parametrize("tau", [0.01, 0.05, 1.0])
def test_finite_loss_and_gradient(tau):
    for name, t, s_pos, s_neg, log_z in _cases():
        t = t.clone().requires_grad_(True)
        s_pos = s_pos.clone().requires_grad_(True)
        s_neg = s_neg.clone().requires_grad_(True)
        loss = contrastive_nce_loss(t, s_pos, s_neg, tau, 1000, log_z)
        loss.backward()
        assert torch.isfinite(loss), name
        for g in (t.grad, s_pos.grad, s_neg.grad):
            assert torch.isfinite(g).all(), name


def test_higher_positive_similarity_lowers_loss():
    t = t_([[1.0, 0.0]])
    s_neg = t_([[[0.0, 1.0], [0.0, -1.0]]])
    losses = []
    for angle in (3.0, 2.0, 1.0, 0.5, 0.0):  # positive rotates toward the anchor
        s_pos = t_([[math.cos(angle), math.sin(angle)]])
        losses.append(contrastive_nce_loss(t, s_pos, s_neg, 0.1, 100).item())
    assert all(a > b for a, b in zip(losses, losses[1:])), losses
