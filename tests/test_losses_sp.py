"""SP (similarity-preserving KD) against hand computations and an independent loop; its
registration and its search spaces."""
import math

import numpy as np
import optuna
import pytest
import torch

from search_spaces import get_space, paper_values, space_keys
from trainables.hparams import HParams
from trainables.losses import LOSSES, LossContext, Outputs, build_loss
from trainables.losses.sp import sp_loss


def t_(rows):
    return torch.tensor(rows, dtype=torch.float32)


def sp_reference(f_s: np.ndarray, f_t: np.ndarray) -> float:
    """Tung & Mori's loss written out entry by entry, in float64."""
    b = f_s.shape[0]

    def normalised_gram(f):
        g = [[sum(float(f[i, k]) * float(f[j, k]) for k in range(f.shape[1])) for j in range(b)] for i in range(b)]
        norms = [math.sqrt(sum(v * v for v in row)) for row in g]
        return [[v / n for v in row] for row, n in zip(g, norms)]

    g_s, g_t = normalised_gram(f_s), normalised_gram(f_t)
    return sum((g_t[i][j] - g_s[i][j]) ** 2 for i in range(b) for j in range(b)) / (b * b)


# ---- the loss by hand ---------------------------------------------------------------------


def test_sp_two_points_by_hand():
    # student (1, 0), (0, 1): G_s = I, rows already unit -> [[1, 0], [0, 1]]
    # teacher (1, 0), (1, 1): G_t = [[1, 1], [1, 2]], row norms sqrt2, sqrt5
    #   -> [[1/sqrt2, 1/sqrt2], [1/sqrt5, 2/sqrt5]] = [[0.707107, 0.707107], [0.447214, 0.894427]]
    # diff = [[-0.292893, 0.707107], [0.447214, -0.105573]]
    # squares 0.085786 + 0.5 + 0.2 + 0.011146 = 0.796932; / B^2 = 4 -> 0.199233
    expected = ((1 - 1 / math.sqrt(2)) ** 2 + 0.5 + 0.2 + (1 - 2 / math.sqrt(5)) ** 2) / 4
    assert expected == pytest.approx(0.199233, abs=1e-6)
    got = sp_loss(t_([[1.0, 0.0], [0.0, 1.0]]), t_([[1.0, 0.0], [1.0, 1.0]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_sp_three_points_different_dims_by_hand():
    # teacher 1-d: 1, 2, -1 -> G_t = t t^T, every row +-(1, 2, -1): rows (1,2,-1)/sqrt6, same, (-1,-2,1)/sqrt6
    # student 2-d: (1,0), (0,1), (1,1) -> G_s = [[1,0,1], [0,1,1], [1,1,2]]
    #   rows (1,0,1)/sqrt2, (0,1,1)/sqrt2, (1,1,2)/sqrt6
    # unit rows a, b: ||a - b||^2 = 2 - 2 a.b
    #   row 0: a.b = (1 + 0 - 1)/sqrt12 = 0          -> 2
    #   row 1: a.b = (0 + 2 - 1)/sqrt12 = 0.288675   -> 1.422650
    #   row 2: a.b = (-1 - 2 + 2)/6 = -1/6            -> 2.333333
    # sum 5.755983; / B^2 = 9 -> 0.639554
    expected = (2 + (2 - 2 / math.sqrt(12)) + (2 + 2 / 6)) / 9
    assert expected == pytest.approx(0.639554, abs=1e-6)
    got = sp_loss(t_([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), t_([[1.0], [2.0], [-1.0]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("b,d_s,d_t", [(2, 3, 5), (5, 8, 3), (10, 16, 96), (24, 7, 7)])
def test_sp_equals_a_float64_double_loop(b, d_s, d_t):
    gen = torch.Generator().manual_seed(b * 100 + d_s)
    f_s = torch.randn(b, d_s, generator=gen, dtype=torch.float64)
    f_t = torch.randn(b, d_t, generator=gen, dtype=torch.float64).abs()  # post-ReLU-like teacher
    got = sp_loss(f_s.float(), f_t.float())
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(sp_reference(f_s.numpy(), f_t.numpy()), rel=1e-5, abs=1e-7)


# ---- properties ---------------------------------------------------------------------------


def test_sp_is_scale_invariant_and_zero_on_equal_features():
    torch.manual_seed(0)
    f_s, f_t = torch.randn(6, 4), torch.randn(6, 9)
    base = sp_loss(f_s, f_t).item()
    assert base > 1e-3
    for c in (1e-3, 0.5, 7.0, 1e3):
        assert sp_loss(c * f_s, f_t).item() == pytest.approx(base, rel=1e-5)
        assert sp_loss(f_s, c * f_t).item() == pytest.approx(base, rel=1e-5)
    assert sp_loss(f_t.clone(), f_t).item() == pytest.approx(0.0, abs=1e-7)
    assert sp_loss(3.0 * f_t, f_t).item() == pytest.approx(0.0, abs=1e-7)  # same similarities, other scale


def test_sp_is_bounded_by_four_over_b_and_follows_a_shared_permutation():
    torch.manual_seed(1)
    for b in (2, 4, 10, 32):
        f_s, f_t = torch.randn(b, 5), torch.randn(b, 3)
        value = sp_loss(f_s, f_t).item()
        assert 0.0 <= value <= 4.0 / b  # each normalised row has norm 1: ||a - b||^2 <= 4
        perm = torch.randperm(b)
        assert sp_loss(f_s[perm], f_t[perm]).item() == pytest.approx(value, rel=1e-5)
    # 1-d: student 1, -1 -> G_s rows (1, -1)/sqrt2, (-1, 1)/sqrt2; teacher 1, 1 -> rows (1, 1)/sqrt2;
    # orthogonal rows: ||a - b||^2 = 2 each, (2 + 2) / 4 = 1 (4/B is not reached: G's diagonal is >= 0)
    assert sp_loss(t_([[1.0], [-1.0]]), t_([[1.0], [1.0]])).item() == pytest.approx(1.0, rel=1e-6)


def test_sp_computes_in_float32():
    f_s, f_t = torch.randn(4, 8).bfloat16(), torch.randn(4, 8).bfloat16()
    assert sp_loss(f_s, f_t).dtype == torch.float32


# ---- gradients ----------------------------------------------------------------------------


def test_sp_gradient_reaches_the_student_only():
    torch.manual_seed(2)
    f_s = torch.randn(6, 4, requires_grad=True)
    f_t = torch.randn(6, 9, requires_grad=True)
    sp_loss(f_s, f_t).backward()
    assert f_s.grad is not None and torch.isfinite(f_s.grad).all() and f_s.grad.abs().sum() > 0
    assert f_t.grad is None


def test_sp_gradient_matches_finite_differences_of_the_loop():
    torch.manual_seed(3)
    f_s = torch.randn(3, 2, dtype=torch.float64)
    f_t = torch.randn(3, 4, dtype=torch.float64)
    x = f_s.float().requires_grad_(True)
    sp_loss(x, f_t.float()).backward()
    h, numeric = 1e-6, np.zeros((3, 2))
    for i in range(3):
        for k in range(2):
            up, down = f_s.numpy().copy(), f_s.numpy().copy()
            up[i, k] += h
            down[i, k] -= h
            numeric[i, k] = (sp_reference(up, f_t.numpy()) - sp_reference(down, f_t.numpy())) / (2 * h)
    np.testing.assert_allclose(x.grad.numpy(), numeric, rtol=1e-3, atol=1e-6)


def test_one_image_batch_gives_zero_on_the_graph():
    f_s = torch.randn(1, 4, requires_grad=True)
    loss = sp_loss(f_s, torch.randn(1, 3))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(f_s.grad, torch.zeros_like(f_s))


# ---- the registered method ----------------------------------------------------------------


def test_sp_is_registered_with_where_it_reads_and_is_ce_plus_lambda_sp():
    assert "sp" in LOSSES and LOSSES["sp"].needs_teachers and not LOSSES["sp"].baseline
    hp = HParams.from_dict({"method": "sp", "lam": 30.0})
    assert set(HParams.keys("sp")) == set(HParams.common_keys()) | {"reads"}  # its one option: where it reads
    assert hp.options.reads == "embedding"
    torch.manual_seed(4)
    loss = build_loss(hp, LossContext(5, (7, 3), torch.tensor([0, 1] * 4)))
    assert not list(loss.parameters())
    f_s = torch.randn(4, 5, requires_grad=True)
    logits = f_s @ torch.randn(5, 2)
    teachers = [Outputs(torch.randn(4, 2), torch.randn(4, 7)), Outputs(torch.randn(4, 2), torch.randn(4, 3))]
    labels = torch.tensor([0, 1, 1, 0])
    total, logs = loss(Outputs(logits, f_s), teachers, labels, torch.arange(4))
    parts = [sp_loss(f_s, t.features).item() for t in teachers]
    ce = torch.nn.functional.cross_entropy(logits, labels).item()
    assert total.item() == pytest.approx(ce + 30.0 * sum(parts), rel=1e-5)
    assert logs["distill_0"] == pytest.approx(parts[0], rel=1e-5)
    assert logs["distill_1"] == pytest.approx(parts[1], rel=1e-5)
    total.backward()
    assert torch.isfinite(f_s.grad).all() and f_s.grad.abs().sum() > 0


def test_minimising_sp_matches_the_teachers_similarities():
    torch.manual_seed(5)
    term = LOSSES["sp"](HParams.from_dict({"method": "sp"}), 6, 12, LossContext(6, (12,), torch.tensor([0, 1])))
    teacher = Outputs(torch.randn(8, 2), torch.randn(8, 12).relu())
    f_s = torch.randn(8, 6, requires_grad=True)
    opt = torch.optim.Adam([f_s], lr=0.05)
    first = None
    for _ in range(300):
        loss = term(Outputs(torch.zeros(8, 2), f_s), teacher, torch.zeros(8, dtype=torch.long), torch.arange(8))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first


# ---- search spaces ------------------------------------------------------------------------


def test_paper_space_gives_sps_measured_weight():
    assert paper_values("sp", 100) == {"method": "sp", "batch_size": 24, "lam": 30.0}
    assert paper_values("sp", 10)["batch_size"] == 10
    hp = HParams.from_dict(paper_values("sp", 100))
    assert (hp.method, hp.lam) == ("sp", 30.0)


def test_sp_space_searches_lambda_on_a_log_range_and_the_common_knobs():
    assert space_keys("sp", "sp", 100) == ("batch_size", "lam", "lr", "weight_decay")
    fixed = optuna.trial.FixedTrial(dict(lam=30.0, batch_size=16, lr=1e-3, weight_decay=1e-4))
    constants = get_space("sp", "sp", 100)(fixed)
    hp = HParams.from_dict({**fixed.params, **constants})
    assert (hp.method, hp.lam) == ("sp", 30.0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    get_space("sp", "sp", 100)(trial)
    lam = trial.distributions["lam"]
    assert (lam.low, lam.high, lam.log) == (3.0, 300.0, True)  # two decades around the default 30
    assert lam.low < 30.0 < lam.high


def test_sp_on_the_last_stage_map_equals_repdistillers_similarity():
    """`reads: map`: the SP term on (B, C, H, W) maps flattened to (B, C*H*W). Checked against
    RepDistiller's `distiller_zoo/SP.py` `Similarity` (commit b84f547c5db6a35318d4671d7d5c4de74c822403)
    on identical tensors: torch.manual_seed(0); f_s = randn(4, 3, 4, 4); f_t = randn(4, 5, 2, 2);
    the recorded values are what it gave (loss, and the student map's gradient)."""
    from trainables.hparams import HParams
    from trainables.losses import LossContext, Outputs, build_loss

    torch.manual_seed(0)
    f_s = torch.randn(4, 3, 4, 4).requires_grad_(True)
    f_t = torch.randn(4, 5, 2, 2)
    hp = HParams.from_dict({"method": "sp", "reads": "map", "lam": 1.0})
    assert hp.map_stages == (-1,) and HParams.from_dict({"method": "sp"}).map_stages == ()
    loss = build_loss(hp, LossContext(student_dim=8, teacher_dims=(8,), train_labels=torch.tensor([0, 1, 0, 1]),
                                      student_maps=((3, 4, 4),), teacher_maps=(((5, 2, 2),),)))
    term = loss.terms[0]
    student = Outputs(torch.zeros(4, 2), torch.randn(4, 8), (f_s,))  # features unused when it reads maps
    teacher = Outputs(torch.zeros(4, 2), torch.randn(4, 8), (f_t,))
    value = term(student, teacher, torch.tensor([0, 1, 0, 1]), torch.arange(4))
    value.backward()
    assert value.item() == pytest.approx(0.019431795924901962, rel=1e-6)
    assert f_s.grad.sum().item() == pytest.approx(0.005807666573673487, rel=1e-5)
    assert f_s.grad.norm().item() == pytest.approx(0.01774233765900135, rel=1e-5)
    assert f_s.grad[0, 0, 0, :2].tolist() == pytest.approx([-0.0012148140231147408, 0.0007295432733371854], rel=1e-5)
