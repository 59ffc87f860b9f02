"""CRD, checked against RepDistiller (github.com/HobbitLong/RepDistiller, commit
b84f547c5db6a35318d4671d7d5c4de74c822403) on identical tensors: crd/memory.py's
`ContrastMemory` (banks initialised with torch.manual_seed(1), the same numbers as our
generator seeded with 1) and crd/criterion.py's `Embed` and `ContrastLoss`, summed over the
two anchors as its `CRDLoss` does, with the embedding heads' parameters set to the same
seeded values and the negatives' indices given. The recorded values (losses, Z, scores,
gradient sums, norms and entries, bank rows after each call) come from running that code,
on CPU in float32, for two consecutive calls on the tensors built here; plus hand
computations."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainables.losses.crd import CRDMemory, Embed, crd_loss, nce_loss, uniform_bank

REL = 1e-5
N, DIM, K, B = 10, 8, 3, 4
S_DIM, T_DIM = 6, 5
BATCHES = [
    ([0, 3, 5, 7], [[0, 1, 2, 9], [3, 4, 8, 1], [5, 0, 6, 2], [7, 9, 3, 4]]),
    ([1, 3, 8, 2], [[1, 0, 5, 6], [3, 7, 2, 9], [8, 5, 0, 4], [2, 3, 7, 6]]),
]

# RepDistiller's ContrastMemory(8, 10, 3, 0.07, 0.5) after torch.manual_seed(1): memory_v1[0]
BANK_S_INIT_ROW0 = [0.315532982, -0.270287871, -0.118715435, 0.287428617,
                    -0.576510012, 0.367250323, -0.125980526, 0.311540723]

# per call: RepDistiller's values after out_s, out_t = memory(embed_s(f_s), embed_t(f_t), idx, contrast_idx);
# loss = ContrastLoss(N)(out_s) + ContrastLoss(N)(out_t); loss.backward()
REFERENCE = [
    {
        "loss": 11.4949856, "loss_s": 3.40418911, "loss_t": 8.09079647,
        "z_s": 1326.89282, "z_t": 17741.8789,
        "scores_s0": [0.242465913, 1.76613742e-06, 0.297034115, 0.00663487287],
        "scores_t0": [0.000249789533, 2.25939184e-05, 0.000106083316, 0.0120587489],
        "f_s_grad_sum": 1.22408748, "f_s_grad_norm": 2.21384454,
        "f_s_grad_row0": [-0.0716797784, 0.349072129, -0.197399512, 0.0779133812, 0.163613111, 0.0706782714],
        "es_w_grad_norm": 6.55948639, "et_w_grad_norm": 11.8075151, "et_w_grad_sum": -5.22617531,
        "bank_s_row3": [-0.150432631, 0.225382268, 0.542969108, 0.0193220489,
                        -0.216376543, 0.238138303, 0.633060634, 0.356496513],
        "bank_t_row3": [-0.335146576, -0.718081415, -0.0340672731, -0.214222476,
                        0.162169278, -0.26477477, 0.407364219, 0.250267327],
        "bank_s_sum": 0.0256236792, "bank_t_sum": 3.82914448, "bank_s_abs": 21.7727604, "bank_t_abs": 24.9700241,
    },
    {
        "loss": 19.6770248, "loss_s": 10.7359333, "loss_t": 8.94109249,
        "z_s": 1326.89282, "z_t": 17741.8789,
        "scores_s0": [2.36516811e-07, 0.000113153888, 4.11076917e-06, 0.0114999209],
        "scores_t0": [3.58837096e-05, 0.278052121, 0.00133485475, 0.322559029],
        "f_s_grad_sum": 0.726443172, "f_s_grad_norm": 3.63511181,
        "f_s_grad_row0": [-0.321436048, -0.131978765, -0.351356387, 0.177856892, 0.046929352, -0.115860499],
        "es_w_grad_norm": 7.80488014, "et_w_grad_norm": 7.42559814, "et_w_grad_sum": -3.16157103,
        "bank_s_row3": [-0.0604135469, 0.68352741, 0.39558816, -0.439330816,
                        -0.278209209, 0.0991790295, 0.23901391, 0.187815055],
        "bank_t_row3": [0.322688818, -0.489392906, 0.0878198445, -0.218173012,
                        0.438184321, -0.586407363, 0.236055136, 0.0972299129],
        "bank_s_sum": 0.93268311, "bank_t_sum": 2.83192992, "bank_s_abs": 23.9593868, "bank_t_abs": 25.5310478,
    },
]


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def set_params(module: torch.nn.Module, seed: int) -> None:
    """0.3 * standard normal into every parameter, in name order (linear.bias, linear.weight),
    as set on RepDistiller's Embed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(0.3 * randn(g, *p.shape))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10 + step)
    f_s, f_t = randn(g, B, S_DIM), randn(g, B, T_DIM)
    index, contrast_index = BATCHES[step]
    return f_s, f_t, torch.tensor(index), torch.tensor(contrast_index)


def setup() -> tuple[Embed, Embed, CRDMemory]:
    embed_s, embed_t = Embed(S_DIM, DIM), Embed(T_DIM, DIM)
    set_params(embed_s, 2)
    set_params(embed_t, 3)
    memory = CRDMemory(DIM, N, K, tau=0.07, momentum=0.5, generator=torch.Generator().manual_seed(1))
    return embed_s, embed_t, memory


def close(got: float, expected: float, rel: float = REL) -> bool:
    return got == pytest.approx(expected, rel=rel, abs=1e-9)


# ---- against RepDistiller ----------------------------------------------------------------------


def test_bank_init_matches_repdistiller():
    _, _, memory = setup()
    assert memory.bank_s[0].tolist() == pytest.approx(BANK_S_INIT_ROW0, rel=1e-7)
    assert torch.equal(memory.bank_s, uniform_bank(N, DIM, torch.Generator().manual_seed(1)))
    torch.manual_seed(1)  # RepDistiller draws with the global generator: memory_v1, then memory_v2
    assert torch.equal(memory.bank_s, torch.rand(N, DIM).mul_(2 / math.sqrt(DIM / 3)).add_(-1 / math.sqrt(DIM / 3)))
    assert torch.equal(memory.z_s, torch.tensor(-1.0)) and torch.equal(memory.z_t, torch.tensor(-1.0))


def test_crd_two_calls_match_repdistiller():
    embed_s, embed_t, memory = setup()
    for step, ref in enumerate(REFERENCE):
        f_s, f_t, index, contrast_index = batch(step)
        f_s.requires_grad_(True)
        embed_s.zero_grad()
        embed_t.zero_grad()
        scores_s, scores_t = memory(embed_s(f_s), embed_t(f_t), index, contrast_index)
        loss_s, loss_t = nce_loss(scores_s, N), nce_loss(scores_t, N)
        loss = loss_s + loss_t
        loss.backward()
        assert loss.dim() == 0 and loss.dtype == torch.float32
        assert close(loss.item(), ref["loss"]), step
        assert close(loss_s.item(), ref["loss_s"]) and close(loss_t.item(), ref["loss_t"]), step
        # Z fixed at the first call, unchanged at the second
        assert close(memory.z_s.item(), ref["z_s"]) and close(memory.z_t.item(), ref["z_t"]), step
        assert scores_s[0].tolist() == pytest.approx(ref["scores_s0"], rel=REL)
        assert scores_t[0].tolist() == pytest.approx(ref["scores_t0"], rel=REL)
        # gradients: student features, both heads
        assert close(f_s.grad.sum().item(), ref["f_s_grad_sum"]), step
        assert close(f_s.grad.norm().item(), ref["f_s_grad_norm"]), step
        assert f_s.grad[0].tolist() == pytest.approx(ref["f_s_grad_row0"], rel=REL)
        assert close(embed_s.linear.weight.grad.norm().item(), ref["es_w_grad_norm"]), step
        assert close(embed_t.linear.weight.grad.norm().item(), ref["et_w_grad_norm"]), step
        assert close(embed_t.linear.weight.grad.sum().item(), ref["et_w_grad_sum"]), step
        # banks after the momentum update
        assert memory.bank_s[3].tolist() == pytest.approx(ref["bank_s_row3"], rel=REL, abs=1e-7)
        assert memory.bank_t[3].tolist() == pytest.approx(ref["bank_t_row3"], rel=REL, abs=1e-7)
        assert close(memory.bank_s.sum().item(), ref["bank_s_sum"], rel=1e-4), step
        assert close(memory.bank_t.sum().item(), ref["bank_t_sum"], rel=1e-4), step
        assert close(memory.bank_s.abs().sum().item(), ref["bank_s_abs"]), step
        assert close(memory.bank_t.abs().sum().item(), ref["bank_t_abs"]), step


def test_crd_loss_helper_is_the_sum_of_both_anchors():
    embed_s, embed_t, memory = setup()
    f_s, f_t, index, contrast_index = batch(0)
    got = crd_loss(memory, embed_s(f_s), embed_t(f_t), index, contrast_index)
    assert close(got.item(), REFERENCE[0]["loss"])
    assert close(memory.z_s.item(), REFERENCE[0]["z_s"])


# ---- by hand ----------------------------------------------------------------------------------


def test_nce_loss_tiny_by_hand():
    # N = 4, K = 1: m P_n = 1/4; x = (1/4, 1/4):
    # log h = log(0.25 / 0.5), log(1 - h) = log(0.25 / 0.5) -> loss = 2 log 2 (eps 1e-7 aside)
    got = nce_loss(torch.tensor([[0.25, 0.25]]), n_data=4)
    assert got.item() == pytest.approx(2 * math.log(2), rel=1e-6)
    # N = 10, K = 2: m P_n = 0.2; rows (0.5, 0.1, 0.2) and (0.2, 0.3, 0.0), mean over B = 2:
    row1 = math.log(0.5 / 0.7) + math.log(0.2 / 0.3) + math.log(0.2 / 0.4)
    row2 = math.log(0.2 / 0.4) + math.log(0.2 / 0.5) + math.log(0.2 / 0.2)
    got = nce_loss(torch.tensor([[0.5, 0.1, 0.2], [0.2, 0.3, 0.0]]), n_data=10)
    assert got.item() == pytest.approx(-(row1 + row2) / 2, rel=1e-6)


def test_nce_loss_gradient_by_hand():
    # d/dx of -log(x / (x + c)) = -c / (x (x + c)); of -log(c / (y + c)) = 1 / (y + c); over B = 1
    x = torch.tensor([[0.5, 0.1, 0.2]], requires_grad=True)
    nce_loss(x, n_data=10).backward()
    c = 0.2
    assert x.grad[0].tolist() == pytest.approx([-c / (0.5 * 0.7), 1 / 0.3, 1 / 0.4], rel=1e-5)


def test_scores_z_and_momentum_update_by_hand():
    memory = CRDMemory(DIM, N, K, tau=0.5, momentum=0.25, generator=torch.Generator().manual_seed(5))
    bank_s0, bank_t0 = memory.bank_s.clone(), memory.bank_t.clone()
    g = torch.Generator().manual_seed(6)
    v_s, v_t = F.normalize(randn(g, 2, DIM), dim=1), F.normalize(randn(g, 2, DIM), dim=1)
    index = torch.tensor([4, 1])
    contrast_index = torch.tensor([[4, 0, 9, 2], [1, 4, 3, 3]])
    scores_s, scores_t = memory(v_s, v_t, index, contrast_index)
    # raw scores: exp(<other model's bank row, anchor> / tau), rows read before the update
    raw_s = torch.stack([torch.exp(bank_t0[contrast_index[b]] @ v_s[b] / 0.5) for b in range(2)])
    raw_t = torch.stack([torch.exp(bank_s0[contrast_index[b]] @ v_t[b] / 0.5) for b in range(2)])
    z_s, z_t = raw_s.mean().item() * N, raw_t.mean().item() * N
    assert memory.z_s.item() == pytest.approx(z_s, rel=1e-6) and memory.z_t.item() == pytest.approx(z_t, rel=1e-6)
    assert torch.allclose(scores_s, raw_s / z_s, rtol=1e-5) and torch.allclose(scores_t, raw_t / z_t, rtol=1e-5)
    assert scores_s.mean().item() == pytest.approx(1 / N, rel=1e-5)  # Z = mean * N at the first call
    # rows 4 and 1: normalise(0.25 * old + 0.75 * v); every other row untouched
    for bank, old, v in ((memory.bank_s, bank_s0, v_s), (memory.bank_t, bank_t0, v_t)):
        expected = F.normalize(0.25 * old[index] + 0.75 * v, dim=1)
        assert torch.allclose(bank[index], expected, rtol=1e-6, atol=1e-7)
        others = [i for i in range(N) if i not in (4, 1)]
        assert torch.equal(bank[others], old[others])
    # second call: Z kept, not re-estimated
    memory(v_t, v_s, index, contrast_index)
    assert memory.z_s.item() == pytest.approx(z_s, rel=1e-6) and memory.z_t.item() == pytest.approx(z_t, rel=1e-6)


def test_update_false_reads_only():
    memory = CRDMemory(DIM, N, K, generator=torch.Generator().manual_seed(5))
    before = {k: v.clone() for k, v in memory.state_dict().items()}
    g = torch.Generator().manual_seed(6)
    v_s, v_t = F.normalize(randn(g, 2, DIM), dim=1), F.normalize(randn(g, 2, DIM), dim=1)
    scores_s, _ = memory(v_s, v_t, torch.tensor([4, 1]), torch.tensor([[4, 0, 9, 2], [1, 4, 3, 3]]), update=False)
    assert scores_s.mean().item() == pytest.approx(1 / N, rel=1e-5)  # this batch's Z, not stored
    for k, v in memory.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_gradients_flow_as_in_crd():
    _, _, memory = setup()
    g = torch.Generator().manual_seed(7)
    v_s = F.normalize(randn(g, B, DIM), dim=1).requires_grad_(True)
    v_t = F.normalize(randn(g, B, DIM), dim=1).requires_grad_(True)
    _, _, index, contrast_index = batch(0)
    scores_s, scores_t = memory(v_s, v_t, index, contrast_index)
    # the teacher anchor's term reaches v_t only, the student anchor's v_s only
    nce_loss(scores_t, N).backward(retain_graph=True)
    assert v_s.grad is None and v_t.grad.abs().sum() > 0
    nce_loss(scores_s, N).backward()
    assert v_s.grad.abs().sum() > 0
    assert not memory.bank_s.requires_grad and not memory.bank_t.requires_grad
    assert not memory.z_s.requires_grad


def test_embed_unit_rows_and_flatten():
    embed = Embed(12, 5)
    out = embed(torch.randn(3, 3, 2, 2))
    assert out.shape == (3, 5)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-6)
    assert Embed(4).linear.out_features == 128


def test_uniform_bank_range():
    bank = uniform_bank(1000, 12, torch.Generator().manual_seed(0))
    bound = 1 / math.sqrt(12 / 3)  # 0.5
    assert bank.min().item() >= -bound and bank.max().item() < bound
    assert bank.min().item() < -0.49 and bank.max().item() > 0.49


def test_checks():
    memory = CRDMemory(DIM, N, K)
    v = F.normalize(torch.randn(2, DIM), dim=1)
    with pytest.raises(ValueError, match="contrast_index"):
        memory(v, v, torch.tensor([0, 1]), torch.tensor([[0, 1, 2], [1, 2, 3]]))
    with pytest.raises(ValueError, match=f"B, {DIM}"):
        memory(v, torch.randn(2, DIM + 1), torch.tensor([0, 1]), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]]))
    with pytest.raises(ValueError, match="K >= 1"):
        nce_loss(torch.ones(3, 1), 10)
    with pytest.raises(ValueError, match="n_data"):
        CRDMemory(DIM, 0, K)
