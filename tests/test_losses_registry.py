"""The registry and StudentLoss: CE + lambda * sum over teachers, every registered loss built and run."""
import copy
import math

import pytest
import torch

from trainables.errors import ConfigError
from trainables.hparams import HParams
from trainables.losses import LOSSES, LossContext, Outputs, StudentLoss, baseline_method, build_loss


def t_(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_the_papers_methods_are_registered_and_vt_is_the_baseline():
    assert set(LOSSES) >= {"vt", "kd", "rkd", "ckd"}
    assert baseline_method() == "vt" and [m for m, cls in LOSSES.items() if cls.baseline] == ["vt"]
    assert all(cls.needs_teachers for m, cls in LOSSES.items() if not cls.baseline)


def test_unknown_method_lists_registered():
    with pytest.raises(ConfigError, match=r"method='dkd' is not one of \['vt', .*'ckd'.*'fitnet'"):
        HParams(method="dkd")


def test_teacher_count_mismatch_is_config_error():
    ctx = LossContext(2, (2,), torch.tensor([0, 1]))
    loss = build_loss(HParams(method="kd"), ctx)
    s = Outputs(t_([[1.0, 0.0]]), torch.zeros(1, 2))
    with pytest.raises(ConfigError, match="1 teacher"):
        loss(s, [s, s], torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(ConfigError, match="teacher"):
        build_loss(HParams(method="ckd"), LossContext(2, (), torch.tensor([0, 1])))


def test_vt_is_cross_entropy_and_ignores_teachers():
    loss = build_loss(HParams(method="vt"), LossContext(2, (), torch.tensor([0, 1])))
    assert not loss.needs_teachers and not list(loss.parameters())
    s = Outputs(t_([[1.0, 0.0]]), torch.zeros(1, 2))
    total, logs = loss(s, [s, s], torch.tensor([0]), torch.tensor([0]))
    expected = -math.log(math.e / (math.e + 1))  # 0.313262
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert logs == pytest.approx({"ce": expected, "distill": 0.0})


def test_kd_ensemble_is_ce_plus_lambda_sum():
    hp = HParams.from_dict(dict(method="kd", lam=0.3, kd_t=2.0))
    loss = build_loss(hp, LossContext(2, (2, 2), torch.tensor([0, 1])))
    s = Outputs(t_([[2.0, 0.0]]), torch.zeros(1, 2))
    t1 = Outputs(t_([[0.0, 2.0]]), torch.zeros(1, 2))
    t2 = Outputs(t_([[2.0, 0.0]]), torch.zeros(1, 2))  # same as the student: KD 0
    total, logs = loss(s, [t1, t2], torch.tensor([0]), torch.tensor([0]))
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert total.item() == pytest.approx(ce + 0.3 * (1.848469 + 0.0), rel=1e-5)
    assert logs["distill_0"] == pytest.approx(1.848469, rel=1e-5)
    assert logs["distill_1"] == pytest.approx(0.0, abs=1e-6)
    assert logs["distill"] == pytest.approx(1.848469, rel=1e-5)


def test_ckd_ensemble_sums_terms_each_with_its_own_heads():
    torch.manual_seed(0)
    hp = HParams.from_dict(dict(method="ckd", lam=0.1, k=4, embed_dim=8))
    labels = torch.tensor([0, 1] * 10)
    loss = build_loss(hp, LossContext(5, (6, 10), labels))
    assert [term.embed_t.in_features for term in loss.terms] == [6, 10]
    params = {id(p) for p in loss.parameters()}
    for term in loss.terms:
        assert {id(term.embed_t.weight), id(term.embed_s.weight)} <= params
    assert loss.terms[0].student_bank.bank.data_ptr() != loss.terms[1].student_bank.bank.data_ptr()
    reference = copy.deepcopy(loss)
    index = torch.tensor([0, 3, 8, 11])
    s = Outputs(torch.randn(4, 2), torch.randn(4, 5))
    teachers = [Outputs(torch.randn(4, 2), torch.randn(4, 6)), Outputs(torch.randn(4, 2), torch.randn(4, 10))]
    torch.manual_seed(1)
    total, logs = loss(s, teachers, labels[index], index)
    torch.manual_seed(1)  # same negative draws, in the same order
    parts = [term(s, t, labels[index], index) for term, t in zip(reference.terms, teachers)]
    ce = torch.nn.functional.cross_entropy(s.logits, labels[index])
    assert total.item() == pytest.approx((ce + 0.1 * (parts[0] + parts[1])).item(), rel=1e-6)
    assert logs["distill_0"] == pytest.approx(parts[0].item(), rel=1e-6)
    assert logs["distill_1"] == pytest.approx(parts[1].item(), rel=1e-6)


@pytest.mark.parametrize("method", sorted(LOSSES))
@pytest.mark.parametrize("symmetric", [False, True])
def test_every_registered_loss_builds_and_trains(method, symmetric):
    torch.manual_seed(0)
    m, b = 20, 6
    labels = torch.tensor([0, 1] * (m // 2))
    hp = HParams.from_dict(HParams.subset(dict(method=method, k=4, symmetric=symmetric), method))
    stages = len(hp.map_stages)  # a method that reads feature maps gets one (B, C, H, W) per stage
    ctx = LossContext(student_dim=8, teacher_dims=(16,), train_labels=labels, student_maps=((3, 4, 4),) * stages,
                      teacher_maps=(((5, 4, 4),) * stages,))
    loss = build_loss(hp, ctx)
    assert isinstance(loss, StudentLoss)
    index = torch.randperm(m)[:b]
    features = torch.randn(b, 8, requires_grad=True)
    head = torch.randn(8, 2)
    to_map = torch.randn(8, 3 * 4 * 4)  # the student's maps from its features, so that gradients reach them
    student = Outputs(features @ head, features, tuple((features @ to_map).view(b, 3, 4, 4) for _ in range(stages)))
    teacher = Outputs(torch.randn(b, 2), torch.randn(b, 16), tuple(torch.randn(b, 5, 4, 4) for _ in range(stages)))
    total, logs = loss(student, [teacher], labels[index], index)
    total.backward()
    assert total.dim() == 0 and torch.isfinite(total)
    assert all(isinstance(v, float) and math.isfinite(v) for v in logs.values())
    assert {"ce", "distill"} <= set(logs)
    assert features.grad is not None and torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    for p in loss.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
