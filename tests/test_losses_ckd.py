"""The CKD term: gradients, memory bank, negative sampling, Z modes, checkpointing, symmetric term."""
import math

import pytest
import torch
import torch.nn.functional as F

from trainables.errors import ConfigError
from trainables.hparams import HParams
from trainables.losses import LOSSES, LossContext, Outputs
from trainables.losses.ckd import contrastive_nce_loss

S_DIM, T_DIM = 4, 6


def make(train_labels, **hp):
    hp = HParams.from_dict({"method": "ckd", "embed_dim": 3, "k": 3, **hp})
    labels = torch.as_tensor(train_labels, dtype=torch.long)
    ctx = LossContext(S_DIM, (T_DIM,), labels)
    return LOSSES["ckd"](hp, S_DIM, T_DIM, ctx), labels


def batch(labels, index, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(index)
    student = Outputs(torch.zeros(b, 2), torch.randn(b, S_DIM, generator=g).requires_grad_(True))
    teacher = Outputs(torch.zeros(b, 2), torch.randn(b, T_DIM, generator=g).requires_grad_(True))
    index = torch.as_tensor(index)
    return student, teacher, labels[index], index


def embed(linear, x):
    return F.normalize(x.detach() @ linear.weight.detach().T + linear.bias.detach(), dim=1)


def fix_negatives(term, neg_idx):
    term.sample_negatives = lambda labels, index: torch.as_tensor(neg_idx)


LABELS = [0] * 10 + [1] * 10


def test_gradient_reaches_student_and_heads_not_teacher():
    term, labels = make(LABELS)
    student, teacher, y, index = batch(labels, [0, 3, 12, 15])
    loss = term(student, teacher, y, index)
    loss.backward()
    assert torch.isfinite(loss)
    assert student.features.grad is not None and student.features.grad.abs().sum() > 0
    for p in (term.embed_s.weight, term.embed_t.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert teacher.features.grad is None  # the term detaches teacher outputs


def test_memory_bank_momentum_update_by_hand():
    term, labels = make(LABELS, momentum=0.3)
    before = term.student_bank.bank.clone()
    student, teacher, y, index = batch(labels, [2, 11])
    term(student, teacher, y, index)
    after = term.student_bank.bank
    v = embed(term.embed_s, student.features)  # (2, 3)
    mixed = 0.3 * before[11] + 0.7 * v[1]
    assert torch.allclose(after[11], mixed / mixed.norm(), atol=1e-6)
    others = [i for i in range(20) if i not in (2, 11)]
    assert torch.equal(after[others], before[others])
    assert torch.allclose(after.norm(dim=1), torch.ones(20), atol=1e-5)


def test_eval_mode_leaves_bank_and_z_alone():
    term, labels = make(LABELS)
    term.eval()
    before = {k: v.clone() for k, v in term.state_dict().items()}
    term(*batch(labels, [2, 11]))
    for k, v in term.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bank_initialised_random_unit_rows():
    term, _ = make(LABELS)
    bank = term.student_bank.bank
    assert torch.allclose(bank.norm(dim=1), torch.ones(20), atol=1e-5)
    assert bank.std() > 0.1


def test_opposite_class_draws_only_opposite_class_without_replacement():
    torch.manual_seed(0)
    labels = [0] * 6 + [1] * 14
    term, train_labels = make(labels, k=5)
    index = torch.tensor([0, 1, 5, 6, 7, 19])
    for _ in range(50):
        neg = term.sample_negatives(train_labels[index], index)  # (6, 5)
        assert neg.shape == (6, 5)
        for row, anchor in zip(neg.tolist(), index.tolist()):
            assert all(labels[j] != labels[anchor] for j in row)
            assert len(set(row)) == 5  # both classes have >= 5 images: no repeats


def test_opposite_class_with_replacement_when_class_too_small():
    torch.manual_seed(0)
    labels = [0] * 3 + [1] * 17
    term, train_labels = make(labels, k=5)
    index = torch.tensor([4, 10])  # class-1 anchors: only 3 class-0 images for K = 5
    seen = set()
    for _ in range(30):
        neg = term.sample_negatives(train_labels[index], index)
        assert neg.shape == (2, 5)
        assert set(neg.flatten().tolist()) <= {0, 1, 2}
        seen |= set(neg.flatten().tolist())
    assert seen == {0, 1, 2}


@pytest.mark.parametrize("k", [3, 5, 9])  # fewer than, exactly, more than the M - 1 = 5 others
def test_instance_mode_never_draws_the_anchor(k):
    torch.manual_seed(0)
    labels = [0, 1, 0, 1, 0, 1]
    term, train_labels = make(labels, k=k, negatives="instance")
    index = torch.arange(6)
    for _ in range(40):
        neg = term.sample_negatives(train_labels, index)
        assert neg.shape == (6, k)
        assert neg.min() >= 0 and neg.max() <= 5
        for row, anchor in zip(neg.tolist(), index.tolist()):
            assert anchor not in row
            if k <= 5:
                assert len(set(row)) == k


def test_opposite_class_missing_is_config_error():
    with pytest.raises(ConfigError, match="label 0"):
        make([0] * 8)


def scores(term, bank, anchor, positive, neg_idx):
    """x = a.b / tau for the positive pairs and the negatives, by hand."""
    tau = term.opt.tau
    x_pos = (anchor * positive).sum(1) / tau
    x_neg = torch.stack([bank[neg_idx[b]] @ anchor[b] for b in range(len(anchor))]) / tau
    return x_pos, x_neg


def hand_log_z(x_pos, x_neg, m):
    xs = x_pos.tolist() + x_neg.flatten().tolist()
    return math.log(sum(math.exp(x) for x in xs) / len(xs) * m)


def test_first_batch_z_fixed_then_unchanged():
    term, labels = make(LABELS, z_mode="first_batch", tau=0.5)
    neg_idx = [[10, 11, 12], [0, 1, 2]]
    fix_negatives(term, neg_idx)
    bank = term.student_bank.bank.clone()
    student, teacher, y, index = batch(labels, [3, 14])
    loss = term(student, teacher, y, index)
    v_t, v_s = embed(term.embed_t, teacher.features), embed(term.embed_s, student.features)
    x_pos, x_neg = scores(term, bank, v_t, v_s, neg_idx)
    log_z = hand_log_z(x_pos, x_neg, 20)
    assert term.student_bank.log_z.item() == pytest.approx(log_z, rel=1e-5)
    expected = contrastive_nce_loss(v_t, v_s, bank[torch.tensor(neg_idx)], 0.5, 20, log_z)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for seed in (1, 2):
        term(*batch(labels, [5, 16], seed=seed))
        assert term.student_bank.log_z.item() == pytest.approx(log_z, rel=1e-6)


def test_running_z_is_running_mean_of_z():
    term, labels = make(LABELS, z_mode="running", tau=0.5)
    neg_idx = [[10, 11, 12], [0, 1, 2]]
    fix_negatives(term, neg_idx)
    z = []
    for seed, rows in ((0, [3, 14]), (1, [5, 16])):
        bank = term.student_bank.bank.clone()
        student, teacher, y, index = batch(labels, rows, seed=seed)
        term(student, teacher, y, index)
        v_t, v_s = embed(term.embed_t, teacher.features), embed(term.embed_s, student.features)
        z.append(math.exp(hand_log_z(*scores(term, bank, v_t, v_s, neg_idx), 20)))
    assert term.student_bank.log_z.item() == pytest.approx(math.log(0.9 * z[0] + 0.1 * z[1]), rel=1e-5)


def test_z_none_is_eq7_literally():
    term, labels = make(LABELS, z_mode="none", tau=0.5)
    neg_idx = [[10, 11, 12], [0, 1, 2]]
    fix_negatives(term, neg_idx)
    bank = term.student_bank.bank.clone()
    student, teacher, y, index = batch(labels, [3, 14])
    loss = term(student, teacher, y, index)
    v_t, v_s = embed(term.embed_t, teacher.features), embed(term.embed_s, student.features)
    expected = contrastive_nce_loss(v_t, v_s, bank[torch.tensor(neg_idx)], 0.5, 20, 0.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_state_dict_round_trip_restores_banks_and_z():
    torch.manual_seed(0)
    term, labels = make(LABELS, symmetric=True)
    for seed in (0, 1):
        term(*batch(labels, [1, 2, 13, 18], seed=seed))
    state = term.state_dict()
    for key in ("student_bank.bank", "student_bank.log_z", "student_bank.z_set",
                "teacher_bank.bank", "teacher_bank.log_z", "embed_t.weight", "embed_s.weight"):
        assert key in state
    torch.manual_seed(123)
    fresh, _ = make(LABELS, symmetric=True)
    assert not torch.equal(fresh.student_bank.bank, term.student_bank.bank)
    fresh.load_state_dict(state)
    for key, value in term.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    torch.manual_seed(5)
    a = term(*batch(labels, [0, 11], seed=7))
    torch.manual_seed(5)
    b = fresh(*batch(labels, [0, 11], seed=7))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_symmetric_adds_student_anchor_term_against_teacher_bank():
    neg_idx = [[10, 11, 12], [0, 1, 2]]
    torch.manual_seed(0)
    sym, labels = make(LABELS, symmetric=True, z_mode="none")
    plain, _ = make(LABELS, z_mode="none")
    plain.load_state_dict(sym.state_dict(), strict=False)  # same heads and student bank
    for term in (sym, plain):
        fix_negatives(term, neg_idx)
    teacher_bank = sym.teacher_bank.bank.clone()
    args = batch(labels, [3, 14])
    extra = sym(*args) - plain(*args)
    student, teacher = args[0], args[1]
    v_t, v_s = embed(sym.embed_t, teacher.features), embed(sym.embed_s, student.features)
    expected = contrastive_nce_loss(v_s, v_t, teacher_bank[torch.tensor(neg_idx)], sym.opt.tau, 20)
    assert extra.item() == pytest.approx(expected.item(), rel=1e-5)
    # the teacher bank is refreshed with the teacher embeddings
    mixed = 0.5 * teacher_bank[14] + 0.5 * v_t[1]
    assert torch.allclose(sym.teacher_bank.bank[14], mixed / mixed.norm(), atol=1e-6)


def _student_grad(term, bank, content, neg_idx, labels):
    bank.bank.copy_(content)
    fix_negatives(term, neg_idx)
    student, teacher, y, index = batch(labels, [3, 14])
    term(student, teacher, y, index).backward()
    return student.features.grad


def test_student_gets_negative_gradient_only_with_symmetric():
    neg_idx = [[10, 11, 12], [0, 1, 2]]
    a, b = F.normalize(torch.randn(20, 3), dim=1), F.normalize(torch.randn(20, 3), dim=1)
    plain, labels = make(LABELS, z_mode="none")
    # teacher-anchor term only: the student gradient comes from the positive pair alone
    g1 = _student_grad(plain, plain.student_bank, a, neg_idx, labels)
    g2 = _student_grad(plain, plain.student_bank, b, neg_idx, labels)
    assert torch.allclose(g1, g2, atol=1e-7)
    sym, _ = make(LABELS, z_mode="none", symmetric=True)
    g1 = _student_grad(sym, sym.teacher_bank, a, neg_idx, labels)
    g2 = _student_grad(sym, sym.teacher_bank, b, neg_idx, labels)
    assert not torch.allclose(g1, g2, atol=1e-4)


def test_bf16_autocast_inputs_give_float32_loss():
    term, labels = make(LABELS, tau=0.01)
    student, teacher, y, index = batch(labels, [0, 1, 12, 13])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = Outputs(student.logits.bfloat16(), student.features.bfloat16())
        t = Outputs(teacher.logits.bfloat16(), teacher.features.detach().bfloat16())
        loss = term(s, t, y, index)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
