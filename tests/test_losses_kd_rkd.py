"""Hinton KD and RKD against hand computations."""
import math

import pytest
import torch

from trainables.hparams import HParams
from trainables.losses import LOSSES, LossContext, Outputs
from trainables.losses.kd import kd_loss
from trainables.losses.rkd import rkd_angle_loss, rkd_distance_loss


def t_(rows):
    return torch.tensor(rows, dtype=torch.float32)


def huber(d):
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


# ---- KD ---------------------------------------------------------------------------------


def test_kd_two_classes_by_hand():
    # T = 2: s/T = (1, 0), t/T = (0, 1); p_t = (0.268941, 0.731059), p_s = (0.731059, 0.268941)
    p_t = (1 / (1 + math.e), math.e / (1 + math.e))
    p_s = (p_t[1], p_t[0])
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    assert kl == pytest.approx(0.462117, abs=1e-6)  # (0.731059 - 0.268941) * 1
    got = kd_loss(t_([[2.0, 0.0]]), t_([[0.0, 2.0]]), temperature=2.0)
    assert got.item() == pytest.approx(4 * kl, rel=1e-6)  # T^2 = 4: 1.848469
    # batch mean: a second row with equal logits adds 0
    got = kd_loss(t_([[2.0, 0.0], [0.3, -0.1]]), t_([[0.0, 2.0], [0.3, -0.1]]), temperature=2.0)
    assert got.item() == pytest.approx(4 * kl / 2, rel=1e-6)


def test_kd_zero_when_logits_equal():
    logits = torch.randn(5, 2)
    assert kd_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_t_squared_scaling():
    # T = 4: s/T = (0.5, 0), t/T = (0, 0.5); KL = (sigmoid(0.5) - sigmoid(-0.5)) * 0.5
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    kl = (sig(0.5) - sig(-0.5)) * 0.5  # 0.122459
    got = kd_loss(t_([[2.0, 0.0]]), t_([[0.0, 2.0]]), temperature=4.0)
    assert got.item() == pytest.approx(16 * kl, rel=1e-6)


def test_kd_term_uses_hp_kd_t():
    hp = HParams.from_dict(dict(method="kd", kd_t=2.0))
    ctx = LossContext(4, (4,), torch.tensor([0, 1]))
    term = LOSSES["kd"](hp, 4, 4, ctx)
    s = Outputs(t_([[2.0, 0.0]]), torch.zeros(1, 4))
    t = Outputs(t_([[0.0, 2.0]]), torch.zeros(1, 4))
    assert term(s, t, torch.tensor([0]), torch.tensor([0])).item() == pytest.approx(1.848469, abs=1e-5)


# ---- RKD --------------------------------------------------------------------------------
# Means over ALL B^2 distance and B^3 angle entries, as lenscloth/RKD, RepDistiller, mdistiller
# and torchdistill: with B = 3 the 6 ordered pairs i != j are averaged over 9 entries and the
# 6 ordered triplets of distinct points over 27 (the degenerate entries add 0).

TEACHER = [[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]  # 3-4-5 right triangle, right angle at point 0
STUDENT = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]  # isosceles right triangle


def test_rkd_distance_three_points_by_hand():
    # teacher distances 3, 4, 5 (mean 4) -> 0.75, 1, 1.25
    # student distances 1, 1, sqrt2 (mean (2 + sqrt2)/3) -> 0.878680, 0.878680, 1.242641
    mu_s = (2 + math.sqrt(2)) / 3
    diffs = [1 / mu_s - 0.75, 1 / mu_s - 1.0, math.sqrt(2) / mu_s - 1.25]
    expected = 2 * sum(huber(d) for d in diffs) / 9  # each unordered pair twice; 9 = 3^2 entries
    assert expected == pytest.approx(0.0034812, abs=1e-7)  # old convention: / 6, 0.0052219
    got = rkd_distance_loss(t_(STUDENT), t_(TEACHER))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_rkd_angle_three_points_by_hand():
    # cos of the angle at each apex: teacher 0, 3/5, 4/5; student 0, 1/sqrt2, 1/sqrt2
    r = 1 / math.sqrt(2)
    diffs = [0.0, r - 0.6, r - 0.8]
    expected = 2 * sum(huber(d) for d in diffs) / 27  # each apex in 2 ordered triplets; 27 = 3^3
    assert expected == pytest.approx(0.00074448, abs=1e-8)  # old convention: / 6, 0.0033502
    got = rkd_angle_loss(t_(STUDENT), t_(TEACHER))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_rkd_angle_huber_linear_branch():
    # collinear teacher: cos at apexes 1, -1, 1; student right triangle: 0, 1/sqrt2, 1/sqrt2
    r = 1 / math.sqrt(2)
    diffs = [0.0 - 1.0, r + 1.0, r - 1.0]  # |r + 1| > 1: linear part of Huber
    expected = 2 * sum(huber(d) for d in diffs) / 27
    got = rkd_angle_loss(t_(STUDENT), t_([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def rkd_by_loops(student, teacher, distinct_only: bool) -> tuple[float, float]:
    """Independent float64 reference by explicit loops over python lists: (L_D, L_A).
    distinct_only=False: mean over all B^2 pairs and B^3 triplets (the references' convention);
    True: mean over pairs i != j and triplets of distinct indices only (the former convention)."""
    n = len(student)

    def normalised_distances(p):
        d = {(i, j): math.dist(p[i], p[j]) for i in range(n) for j in range(n)}
        mu = sum(v for (i, j), v in d.items() if i != j) / (n * (n - 1))
        return {k: v / mu for k, v in d.items()}

    def cos(p, i, j, k):  # angle at p[i] between p[j] and p[k]; a zero edge gives 0
        u = [b - a for a, b in zip(p[i], p[j])]
        v = [b - a for a, b in zip(p[i], p[k])]
        nu, nv = math.hypot(*u), math.hypot(*v)
        if nu == 0 or nv == 0:
            return 0.0
        return sum(a * b for a, b in zip(u, v)) / (nu * nv)

    ds, dt = normalised_distances(student), normalised_distances(teacher)
    pairs = [(i, j) for i in range(n) for j in range(n) if not distinct_only or i != j]
    l_d = sum(huber(ds[p] - dt[p]) for p in pairs) / len(pairs)
    triplets = [(i, j, k) for i in range(n) for j in range(n) for k in range(n)
                if not distinct_only or len({i, j, k}) == 3]
    l_a = sum(huber(cos(student, *t) - cos(teacher, *t)) for t in triplets) / len(triplets)
    return l_d, l_a


def random_batch(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, generator=g, dtype=torch.float64), torch.randn(b, 4, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("b", [3, 5, 10])
def test_rkd_means_over_all_entries_as_the_explicit_loops(b):
    student, teacher = random_batch(b, seed=b)
    l_d, l_a = rkd_by_loops(student.tolist(), teacher.tolist(), distinct_only=False)
    assert rkd_distance_loss(student, teacher).item() == pytest.approx(l_d, rel=1e-5)
    assert rkd_angle_loss(student, teacher).item() == pytest.approx(l_a, rel=1e-5)


@pytest.mark.parametrize("b", [3, 4, 10])
def test_rkd_equals_the_non_degenerate_mean_times_the_share_of_non_degenerate_entries(b):
    student, teacher = random_batch(b, seed=100 + b)
    old_d, old_a = rkd_by_loops(student.tolist(), teacher.tolist(), distinct_only=True)
    new_d = rkd_distance_loss(student, teacher).item()
    new_a = rkd_angle_loss(student, teacher).item()
    assert new_d == pytest.approx(old_d * (b - 1) / b, rel=1e-5)  # B(B-1) of B^2 pairs
    assert new_a == pytest.approx(old_a * (b - 1) * (b - 2) / b**2, rel=1e-5)  # B(B-1)(B-2) of B^3
    assert new_d < old_d and new_a < old_a


def test_rkd_term_weights():
    hp = HParams.from_dict(dict(method="rkd", rkd_distance_w=25.0, rkd_angle_w=50.0))
    term = LOSSES["rkd"](hp, 2, 2, LossContext(2, (2,), torch.tensor([0, 1, 0])))
    s, t = Outputs(torch.zeros(3, 2), t_(STUDENT)), Outputs(torch.zeros(3, 2), t_(TEACHER))
    got = term(s, t, torch.tensor([0, 1, 0]), torch.arange(3))
    s_, t_x = t_(STUDENT), t_(TEACHER)
    expected = 25 * rkd_distance_loss(s_, t_x) + 50 * rkd_angle_loss(s_, t_x)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_rkd_zero_for_scaled_rotated_and_embedded_teacher():
    teacher = torch.randn(6, 2)
    c, s = math.cos(0.7), math.sin(0.7)
    rotation = t_([[c, -s], [s, c]])
    # student in 3-D: the teacher rotated, scaled by 3.5 and padded with a zero coordinate
    embedded = torch.cat([3.5 * teacher @ rotation, torch.zeros(6, 1)], dim=1)
    for student in (2.5 * teacher, teacher @ rotation, embedded):
        assert rkd_distance_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-8)
        assert rkd_angle_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("b", [1, 2, 3])
def test_rkd_small_and_degenerate_batches_finite(b):
    hp = HParams(method="rkd")
    term = LOSSES["rkd"](hp, 4, 5, LossContext(4, (5,), torch.tensor([0, 1, 0])))
    for features in (torch.randn(b, 4), torch.ones(b, 4)):  # random, and all points equal
        features = features.requires_grad_(True)
        loss = term(Outputs(torch.zeros(b, 2), features), Outputs(torch.zeros(b, 2), torch.randn(b, 5)),
                    torch.zeros(b, dtype=torch.long), torch.arange(b))
        loss.backward()
        assert torch.isfinite(loss)
        assert features.grad is not None and torch.isfinite(features.grad).all()
        if b < 3:  # distance normalised to 1 on both sides with 2 points; no angle below 3
            assert loss.item() == pytest.approx(0.0, abs=1e-6)
