"""Contrastive KD (CKD): Li, Zhuo, Wang & Dong, "Contrastive Knowledge Transfer for
Deepfake Detection with Limited Data", Eq. 7-9, after CRD (Tian, Krishnan & Isola,
"Contrastive Representation Distillation", ICLR 2020).

    g^T, g^S: Linear(dim, embed_dim) then L2 norm, on pooled penultimate features.
    h(t, s) = P / (P + K/M),  P = exp(g^T(z_t) . g^S(z_s) / tau) / Z          (Eq. 7)
    L = -( sum_b log h(t_b, s_b) + sum_{b,k} log(1 - h(t_b, s_bk)) ) / B       (Eq. 8)

Positive pair: teacher and student on the same image, both embeddings live
(computed on this batch, with gradient), as Eq. 7 reads. Negatives: K student
embeddings read (detached) from a memory bank indexed by dataset position; the
bank is refreshed with momentum after the loss is computed. The K indices
(`sample_negatives`) are drawn on the device of the batch indices (the CUDA RNG
on a GPU), without replacement when the pool holds at least K, else with:
  negatives = "opposite_class": uniformly from the images whose label differs
    from the anchor's (the paper's reading);
  negatives = "instance": uniformly from all M - 1 other images, any label
    (the anchor's own index excluded).
On a mixup or cutmix batch the index and label of each row are those of the image that
makes up most of it (`Mix.dominant`, passed by StudentLoss): its index is the bank row
written (and the one "instance" excludes), its class the one negatives are drawn against.

Unlabeled transfer rows (a study's students.transfer; label UNLABELED, dataset index
M + j): the banks hold M + N rows, one per labelled and per transfer image, and M in
K/M and Z is that M + N. A transfer anchor's label is unknown, so it draws its negatives
as "instance" does (uniform over every other row, labelled or not) whatever `negatives`
says; labelled anchors under "opposite_class" keep drawing from the labelled images of
the other class only (a transfer image's class is unknown). No label of a transfer image
is read.

How this differs from CRD's code (RepDistiller):
  - Positive. CRD scores the anchor against the memory-bank row of the anchor's
    own index (column 0 of the bank lookup, detached, written by earlier steps),
    so the teacher-anchor term gives the student no gradient at all; here the
    positive is the live student embedding g^S(z_s), so the student gets
    gradient from the positive pair (the negatives stay detached).
  - Negatives. CRD's training script draws them from images of the other
    classes (`cls_negative`, np.random.choice, with replacement only when K
    exceeds the pool), which with two classes is our "opposite_class";
    "instance" is not what CRD trains with. CRD's uniform draw over all M bank
    rows (which may hit the anchor's own row) runs only when no negative
    indices are given.

log h and log(1 - h) are computed in log space (logaddexp): with
x = a.b/tau - log Z and c = log(K/M), log h = x - logaddexp(x, c) and
log(1 - h) = c - logaddexp(x, c), finite for any tau in [0.01, 1].

Z (z_mode): "none" -> Z = 1 (Eq. 7 read literally); "first_batch" -> fixed on
the first training batch at mean(exp(x)) * M, CRD's choice; "running" -> the
running mean of that estimate (momentum 0.9), kept in log space. Z lives in a
buffer, so it is checkpointed with the banks.

symmetric adds CRD's second term: student anchor g^S(z_s) against a bank of
teacher embeddings g^T(z_t), with the same negative indices and its own Z, so
the student also gets gradient from negatives. Its positive is again live, the
teacher embedding g^T(z_t) of the batch (CRD: the teacher bank's row, detached).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainables.errors import ConfigError
from trainables.hparams import HParams
from trainables.losses.base import UNLABELED, DistillTerm, LossContext, Outputs
from trainables.losses.registry import register_loss

RUNNING_Z_MOMENTUM = 0.9


def nce_scores(anchor: Tensor, positive: Tensor, negatives: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """Similarities over tau: (B,) for the positive pairs, (B, K) for the negatives."""
    x_pos = (anchor * positive).sum(-1) / tau  # (B,)
    x_neg = torch.einsum("bd,bkd->bk", anchor, negatives) / tau  # (B, K)
    return x_pos, x_neg


def contrastive_nce_loss(
    t: Tensor, s_pos: Tensor, s_neg: Tensor, tau: float, num_data: int, log_z: float | Tensor = 0.0
) -> Tensor:
    """Eq. 7-8 in log space: -(1/B) sum_b [log h(t_b, s_pos_b) + sum_k log(1 - h(t_b, s_neg_bk))].

    `t`, `s_pos`: (B, d) L2-normalised embeddings; `s_neg`: (B, K, d); `num_data` = M.
    """
    t, s_pos, s_neg = t.float(), s_pos.float(), s_neg.float()
    x_pos, x_neg = nce_scores(t, s_pos, s_neg, tau)
    x_pos, x_neg = x_pos - log_z, x_neg - log_z
    c = x_pos.new_tensor(math.log(s_neg.shape[1] / num_data))  # log(K/M)
    log_h_pos = x_pos - torch.logaddexp(x_pos, c)  # (B,)
    log_not_h_neg = c - torch.logaddexp(x_neg, c)  # (B, K)
    return -(log_h_pos.sum() + log_not_h_neg.sum()) / t.shape[0]


def log_z_estimate(x_pos: Tensor, x_neg: Tensor, num_data: int) -> Tensor:
    """log(mean(exp(x)) * M) over every positive and negative score of the batch (CRD's Z)."""
    x = torch.cat([x_pos.reshape(-1), x_neg.reshape(-1)])
    return torch.logsumexp(x, dim=0) - math.log(x.numel()) + math.log(num_data)


class MemoryBank(nn.Module):
    """Embeddings by dataset index (random unit rows at start) and the Z of the term
    that draws its negatives from this bank."""

    def __init__(self, num_data: int, dim: int):
        super().__init__()
        # random init: an all-zero bank makes every negative score 0 and breaks the loss
        self.register_buffer("bank", F.normalize(torch.randn(num_data, dim), dim=1))  # (M, d)
        self.register_buffer("log_z", torch.zeros(()))
        self.register_buffer("z_set", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def push(self, index: Tensor, v: Tensor, momentum: float) -> None:
        """mem[i] = normalize(m * mem[i] + (1 - m) * v) for the batch's rows."""
        mixed = momentum * self.bank[index] + (1.0 - momentum) * v.detach().to(self.bank.dtype)
        self.bank.index_copy_(0, index, F.normalize(mixed, dim=1))

    @torch.no_grad()
    def normaliser(
        self, x_pos: Tensor, x_neg: Tensor, num_data: int, z_mode: str, update: bool
    ) -> Tensor | float:
        """log Z for this batch; in training mode, fixes or updates the stored value."""
        if z_mode == "none":
            return 0.0
        estimate = log_z_estimate(x_pos, x_neg, num_data)
        if not update:  # eval: the stored Z, or this batch's estimate before the first step
            return torch.where(self.z_set, self.log_z, estimate)
        if z_mode == "first_batch":
            new = torch.where(self.z_set, self.log_z, estimate)
        elif z_mode == "running":
            m = RUNNING_Z_MOMENTUM  # running mean of Z, in log space
            ema = torch.logaddexp(self.log_z + math.log(m), estimate + math.log(1.0 - m))
            new = torch.where(self.z_set, ema, estimate)
        else:
            raise ConfigError(f"z_mode={z_mode!r} is not one of ['first_batch', 'none', 'running']")
        self.log_z.copy_(new)
        self.z_set.fill_(True)
        return new


# options: CKDOptions (tau, k, embed_dim, z_mode, negatives, symmetric, momentum), declared
# torch-free with their defaults and reasons in trainables.methods
@register_loss("ckd")
class CKD(DistillTerm):
    """Contrastive KD for one teacher: its projection heads, student bank (and teacher bank if symmetric)."""

    def __init__(self, hp: HParams, student_dim: int, teacher_dim: int, ctx: LossContext):
        super().__init__(hp, student_dim, teacher_dim, ctx)
        self.num_data = ctx.num_indexed  # M (+ N transfer images): the banks' rows
        self.embed_t = nn.Linear(teacher_dim, self.opt.embed_dim)  # g^T
        self.embed_s = nn.Linear(student_dim, self.opt.embed_dim)  # g^S
        self.student_bank = MemoryBank(self.num_data, self.opt.embed_dim)
        self.teacher_bank = MemoryBank(self.num_data, self.opt.embed_dim) if self.opt.symmetric else None
        self._pool_names: dict[int, str] = {}
        if self.opt.negatives == "opposite_class":
            self._build_pools(ctx.train_labels)
        elif self.num_data < 2:
            raise ConfigError(f"negatives='instance' needs at least 2 training images, got {self.num_data}")

    def _build_pools(self, train_labels: Tensor) -> None:
        """One index tensor per class: the dataset indices an anchor of that class may draw."""
        train_labels = train_labels.long().cpu()
        present = sorted(int(y) for y in torch.unique(train_labels))
        for y in present:
            pool = torch.nonzero(train_labels != y).squeeze(1)
            if pool.numel() == 0:
                raise ConfigError(
                    f"negatives='opposite_class': all {self.num_data} training images have label {y} "
                    f"(class {y}), so anchors of class {y} have no opposite-class image to draw "
                    "negatives from; train on a subset with both classes or set negatives='instance'"
                )
            name = f"pool_{y}"
            self.register_buffer(name, pool, persistent=False)
            self._pool_names[y] = name

    def sample_negatives(self, labels: Tensor, index: Tensor) -> Tensor:
        """(B, K) dataset indices of negatives, drawn on `index`'s device: without replacement
        when enough exist, else with. "instance": uniform over every index but the anchor's;
        "opposite_class": uniform over the indices whose label differs from the anchor's (an
        UNLABELED anchor, of the transfer set, draws as "instance" does)."""
        k = self.opt.k
        if self.opt.negatives == "instance":
            return self._any_other(index)
        out = torch.empty(index.shape[0], k, dtype=torch.long, device=index.device)
        filled = 0
        unknown = torch.nonzero(labels == UNLABELED).squeeze(1)
        if unknown.numel():  # transfer rows: no label to draw against
            out[unknown] = self._any_other(index[unknown])
            filled += unknown.numel()
        for y, name in self._pool_names.items():
            rows = torch.nonzero(labels == y).squeeze(1)
            if rows.numel() == 0:
                continue
            pool = getattr(self, name)
            out[rows] = pool[_draw(pool.numel(), rows.numel(), k, pool.device)]
            filled += rows.numel()
        if filled != index.shape[0]:
            raise ValueError(
                f"batch labels {sorted(set(labels.tolist()))} include a class absent from the "
                f"training labels {sorted(self._pool_names)}"
            )
        return out

    def _any_other(self, index: Tensor) -> Tensor:
        """(B, K) indices drawn uniformly from every bank row but each anchor's own."""
        j = _draw(self.num_data - 1, index.shape[0], self.opt.k, index.device)  # (B, K) in [0, M-1)
        return j + (j >= index.unsqueeze(1)).long()  # skip the anchor's index

    def forward(self, student: Outputs, teacher: Outputs, labels: Tensor, index: Tensor) -> Tensor:
        with torch.autocast(device_type=student.features.device.type, enabled=False):
            v_t = F.normalize(self.embed_t(teacher.features.detach().float()), dim=1)  # (B, E)
            v_s = F.normalize(self.embed_s(student.features.float()), dim=1)  # (B, E)
            neg_idx = self.sample_negatives(labels, index)  # (B, K)
            loss = self._contrast(self.student_bank, v_t, v_s, neg_idx)
            if self.teacher_bank is not None:
                loss = loss + self._contrast(self.teacher_bank, v_s, v_t, neg_idx)
            if self.training:  # refresh the banks after scoring
                self.student_bank.push(index, v_s, self.opt.momentum)
                if self.teacher_bank is not None:
                    self.teacher_bank.push(index, v_t, self.opt.momentum)
        return loss

    def _contrast(self, bank: MemoryBank, anchor: Tensor, positive: Tensor, neg_idx: Tensor) -> Tensor:
        # `positive` is the live embedding of the other model (Eq. 7); CRD reads it from the bank
        negatives = bank.bank[neg_idx]  # (B, K, E), a detached copy
        with torch.no_grad():
            x_pos, x_neg = nce_scores(anchor, positive, negatives, self.opt.tau)
        log_z = bank.normaliser(x_pos, x_neg, self.num_data, self.opt.z_mode, update=self.training)
        return contrastive_nce_loss(anchor, positive, negatives, self.opt.tau, self.num_data, log_z)


def _draw(population: int, rows: int, k: int, device: torch.device) -> Tensor:
    """(rows, k) positions in range(population): distinct within a row when population >= k."""
    if population >= k:
        return torch.rand(rows, population, device=device).topk(k, dim=1).indices
    return torch.randint(0, population, (rows, k), device=device)
