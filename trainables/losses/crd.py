"""Contrastive representation distillation (CRD): Tian, Krishnan & Isola, "Contrastive
Representation Distillation", ICLR 2020, its NCE objective (Eq. 18) with memory banks,
as the public RepDistiller project implements it (`CRDLoss`, `ContrastLoss`, `Embed`,
`ContrastMemory`).

Embeddings: v_s = g_s(f_s), v_t = g_t(f_t), each a linear layer then L2 normalisation
(`Embed`), on the pooled penultimate features of student and teacher.

Two memory banks of N = n_data rows, one per training image: bank_s holds student
embeddings, bank_t teacher embeddings (RepDistiller's memory_v1 and memory_v2), filled at
start uniformly in [-1/sqrt(dim/3), 1/sqrt(dim/3)) (not normalised). A batch comes with
`index` (B,), the images' dataset indices, and `contrast_index` (B, K+1), column 0 the
image's own index (the positive) and K negatives' indices (RepDistiller's training data
draws them from images of other classes).

Scores (`CRDMemory.forward`), both anchors against the OTHER model's bank, rows read
from the bank (detached) for the positive as well as the negatives:

    scores_s[b, k] = exp(bank_t[contrast_index[b, k]] . v_s[b] / tau) / Z_s   (B, K+1)
    scores_t[b, k] = exp(bank_s[contrast_index[b, k]] . v_t[b] / tau) / Z_t   (B, K+1)

Z_s, Z_t: fixed at the first call as mean(exp(...)) * N over that call's scores (so the
first batch's normalised scores average 1/N), then kept (buffers, checkpointed with the
banks). After the scores, the banks' rows of `index` move towards the batch:

    bank_s[i] <- normalise(momentum * bank_s[i] + (1 - momentum) * v_s)   (same for t)

Loss (`nce_loss`, RepDistiller's `ContrastLoss`, Eq. 18 with noise P_n = 1/N, m = K):

    h(x) = x / (x + m P_n + eps),  eps = 1e-7
    L(x) = -( sum_b log h(x[b, 0]) + sum_{b, k>=1} log(1 - h'(x[b, k])) ) / B,
           1 - h'(x) = m P_n / (x + m P_n + eps)
    L_crd = L(scores_s) + L(scores_t)                                      (`crd_loss`)

Gradients, as in RepDistiller: bank rows are detached copies, Z is a constant and the bank
update runs without gradient, so v_s gets gradient only through scores_s and v_t (the
teacher's embedding head; the teacher's features are detached by the caller) only through
scores_t. The student's positive is the teacher-bank row of its own index, written by
earlier visits of that image (at the first visit, the random initial row). Everything is
computed in float32.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NCE_EPS = 1e-7  # RepDistiller's eps in ContrastLoss


class Embed(nn.Module):
    """CRD's projection head: flatten, Linear(dim_in, dim_out), L2-normalise each row."""

    def __init__(self, dim_in: int, dim_out: int = 128):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.float().flatten(1)), dim=1)


def uniform_bank(n_data: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """(n_data, dim) uniform in [-1/sqrt(dim/3), 1/sqrt(dim/3)), CRD's initial bank."""
    stdv = 1.0 / math.sqrt(dim / 3)
    return torch.rand(n_data, dim, generator=generator).mul_(2 * stdv).add_(-stdv)


def bank_scores(bank: Tensor, anchor: Tensor, contrast_index: Tensor, tau: float) -> Tensor:
    """exp(bank[contrast_index[b, k]] . anchor[b] / tau): (B, K+1), bank rows detached."""
    rows = bank[contrast_index].detach()  # (B, K+1, dim), a copy
    return torch.exp(torch.bmm(rows, anchor.unsqueeze(2)).squeeze(2) / tau)


@torch.no_grad()
def momentum_update(bank: Tensor, index: Tensor, v: Tensor, momentum: float) -> None:
    """bank[i] <- normalise(momentum * bank[i] + (1 - momentum) * v) for the rows of `index`."""
    mixed = bank[index].mul_(momentum).add_(v.detach() * (1 - momentum))
    bank.index_copy_(0, index, mixed / mixed.pow(2).sum(1, keepdim=True).sqrt())


class CRDMemory(nn.Module):
    """CRD's two memory banks (bank_s: student embeddings, bank_t: teacher embeddings) and
    their normalisers Z_s, Z_t; `forward` scores both anchors and updates the banks.

    dim: embedding size; n_data: N, the bank rows (one per training image); k: negatives per
    anchor; tau: temperature; momentum: of the bank update; generator: seeds the banks' init.
    """

    def __init__(
        self,
        dim: int,
        n_data: int,
        k: int,
        tau: float = 0.07,
        momentum: float = 0.5,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if dim < 1 or n_data < 1 or k < 1:
            raise ValueError(f"CRDMemory needs dim, n_data, k >= 1, got dim={dim}, n_data={n_data}, k={k}")
        self.dim, self.n_data, self.k = dim, n_data, k
        self.tau, self.momentum = tau, momentum
        self.register_buffer("bank_s", uniform_bank(n_data, dim, generator))  # RepDistiller memory_v1
        self.register_buffer("bank_t", uniform_bank(n_data, dim, generator))  # RepDistiller memory_v2
        self.register_buffer("z_s", torch.tensor(-1.0))  # < 0: not set yet
        self.register_buffer("z_t", torch.tensor(-1.0))

    def _check(self, v_s: Tensor, v_t: Tensor, index: Tensor, contrast_index: Tensor) -> None:
        b = v_s.shape[0]
        if v_s.shape != (b, self.dim) or v_t.shape != (b, self.dim):
            raise ValueError(
                f"CRDMemory: v_s and v_t must be (B, {self.dim}), got {tuple(v_s.shape)} and {tuple(v_t.shape)}"
            )
        if index.shape != (b,) or contrast_index.shape != (b, self.k + 1):
            raise ValueError(
                f"CRDMemory: index must be ({b},) and contrast_index ({b}, {self.k + 1}) (column 0 the "
                f"positive's own index), got {tuple(index.shape)} and {tuple(contrast_index.shape)}"
            )

    @torch.no_grad()
    def _normaliser(self, z: Tensor, scores: Tensor, update: bool) -> Tensor:
        """The stored Z, or (before the first call) mean(scores) * N, stored if `update`."""
        value = torch.where(z < 0, scores.mean() * self.n_data, z)
        if update:
            z.copy_(value)
        return value

    def forward(
        self, v_s: Tensor, v_t: Tensor, index: Tensor, contrast_index: Tensor, update: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Scores (scores_s, scores_t), each (B, K+1) with the positive in column 0, of the
        student anchor v_s against bank_t and the teacher anchor v_t against bank_s (v_s, v_t:
        (B, dim), L2-normalised). With `update` (training), fixes Z at the first call and
        then moves the banks' rows of `index` towards v_s and v_t."""
        self._check(v_s, v_t, index, contrast_index)
        v_s, v_t = v_s.float(), v_t.float()
        raw_s = bank_scores(self.bank_t, v_s, contrast_index, self.tau)
        raw_t = bank_scores(self.bank_s, v_t, contrast_index, self.tau)
        scores_s = raw_s / self._normaliser(self.z_s, raw_s, update)
        scores_t = raw_t / self._normaliser(self.z_t, raw_t, update)
        if update:
            momentum_update(self.bank_s, index, v_s, self.momentum)
            momentum_update(self.bank_t, index, v_t, self.momentum)
        return scores_s, scores_t


def nce_loss(x: Tensor, n_data: int) -> Tensor:
    """CRD's NCE loss (Eq. 18) of scores x (B, K+1), positive in column 0: noise P_n = 1/n_data,
    m = K; -(sum_b log h(pos) + sum_{b,k} log(1 - h(neg_k))) / B. Scalar, float32."""
    if x.dim() != 2 or x.shape[1] < 2:
        raise ValueError(f"nce_loss takes (B, K+1) scores with K >= 1, got {tuple(x.shape)}")
    x = x.float()
    m = x.shape[1] - 1
    c = m / float(n_data)  # m * P_n
    pos, neg = x[:, 0], x[:, 1:]
    log_d1 = torch.log(pos / (pos + (c + NCE_EPS)))  # (B,)
    log_d0 = torch.log(torch.full_like(neg, c) / (neg + (c + NCE_EPS)))  # (B, K)
    return -(log_d1.sum() + log_d0.sum()) / x.shape[0]


def crd_loss(
    memory: CRDMemory, v_s: Tensor, v_t: Tensor, index: Tensor, contrast_index: Tensor, update: bool = True
) -> Tensor:
    """CRD's loss for embedded v_s, v_t (B, dim): the NCE loss of the student anchor's scores
    plus that of the teacher anchor's, from `memory` (whose banks and Z it updates if `update`)."""
    scores_s, scores_t = memory(v_s, v_t, index, contrast_index, update=update)
    return nce_loss(scores_s, memory.n_data) + nce_loss(scores_t, memory.n_data)


from trainables.losses.base import DistillTerm, LossContext, Outputs  # noqa: E402
from trainables.losses.registry import register_loss  # noqa: E402


@register_loss("crd")
class CRD(DistillTerm):
    """CRD for one teacher: student and teacher embeddings (`Embed`, 128-d, L2-normalised),
    `CRDMemory`'s banks (one row per training image, initialised from the run's seed), and K
    negatives per anchor drawn uniformly, with replacement, from the images of the other class
    (RepDistiller's CIFAR sampler draws them from other classes; with two classes, the other
    one). The common lambda weights it (RepDistiller's beta = 0.8 is CRD's paper value)."""

    def __init__(self, hp, student_dim: int, teacher_dim: int, ctx: LossContext):
        super().__init__(hp, student_dim, teacher_dim, ctx)
        self.embed_s = Embed(student_dim, self.opt.embed_dim)
        self.embed_t = Embed(teacher_dim, self.opt.embed_dim)
        init = torch.Generator().manual_seed(int(hp.seed))
        self.memory = CRDMemory(self.opt.embed_dim, ctx.num_data, self.opt.k, self.opt.tau, self.opt.momentum, init)
        labels = ctx.train_labels.long()
        self._pools: dict[int, str] = {}
        for y in sorted(set(labels.tolist())):
            other = torch.nonzero(labels != y).squeeze(1)
            if other.numel() == 0:
                raise ValueError(f"CRD draws negatives from the other class, but all {len(labels)} training "
                                 f"images have label {y}: train on a subset with both classes")
            self.register_buffer(f"pool_{y}", other, persistent=False)
            self._pools[y] = f"pool_{y}"

    def negatives(self, labels: Tensor, index: Tensor) -> Tensor:
        """(B, K+1) bank rows: each anchor's own index, then K of the other class's."""
        out = torch.empty(index.shape[0], self.opt.k + 1, dtype=torch.long, device=index.device)
        out[:, 0] = index
        for y, name in self._pools.items():
            rows = torch.nonzero(labels == y).squeeze(1)
            if rows.numel():
                pool = getattr(self, name)
                out[rows, 1:] = pool[torch.randint(0, pool.numel(), (rows.numel(), self.opt.k), device=pool.device)]
        known = torch.zeros_like(labels, dtype=torch.bool)
        for y in self._pools:
            known |= labels == y
        if not bool(known.all()):
            raise ValueError(f"batch labels {sorted(set(labels.tolist()))} include one absent from the training "
                             f"labels {sorted(self._pools)}")
        return out

    def forward(self, student: Outputs, teacher: Outputs, labels: Tensor, index: Tensor) -> Tensor:
        with torch.autocast(device_type=student.features.device.type, enabled=False):
            v_s = self.embed_s(student.features.float())
            v_t = self.embed_t(teacher.features.detach().float())
            return crd_loss(self.memory, v_s, v_t, index, self.negatives(labels, index), update=self.training)
