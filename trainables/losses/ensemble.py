"""The student's loss: task cross-entropy plus lambda times the distillation terms,
one per teacher, summed (paper Eq. 9; Eq. 10 for an ensemble of p teachers:
L = L_task + lambda * sum_i L_distill^i). Summing per-teacher losses is also
what CRD's author recommends for several teachers (answered on CRD's issue tracker).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor, nn

from trainables.errors import ConfigError
from trainables.hparams import HParams
from trainables.losses.base import UNLABELED, DistillTerm, LossContext, Mix, Outputs, TransferRows
from trainables.losses.ce import cross_entropy


class StudentLoss(nn.Module):
    """CE(student) + hp.lam * sum_i term_i(student, teachers[i]); each teacher has its own term
    module (own projection heads, own memory bank), all in `parameters()`."""

    def __init__(self, hp: HParams, ctx: LossContext, term_cls: type[DistillTerm]):
        super().__init__()
        self.hp = hp
        self.method = term_cls.name
        self.needs_teachers = bool(term_cls.needs_teachers)
        self.num_teachers = len(ctx.teacher_dims) if self.needs_teachers else 0
        if self.needs_teachers and self.num_teachers == 0:
            raise ConfigError(
                f"method={self.method!r} distils from teachers but the loss context has none "
                "(teacher_dims is empty): give at least one teacher, or use method='vt'"
            )
        self.terms = nn.ModuleList(
            term_cls(hp, ctx.student_dim, dim, replace(ctx, teacher=i))
            for i, dim in enumerate(ctx.teacher_dims[: self.num_teachers])
        )

    def forward(
        self, student: Outputs, teachers: Sequence[Outputs], labels: Tensor, index: Tensor,
        mix: Mix | None = None, transfer: TransferRows | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss (scalar, float32) and floats to log: `ce`, `distill` (unweighted sum
        over teachers) and `distill_<i>` per teacher when there are several. On a mixed batch
        (`mix`) the task term takes both images' labels and every distillation term the
        dominant image's label and index (`Mix.dominant`), its outputs those of the mixed rows.
        `transfer`: rows of the unlabeled transfer set, appended after the labelled rows for the
        distillation terms only (label UNLABELED); the task term sees the labelled rows alone."""
        if self.needs_teachers and len(teachers) != self.num_teachers:
            raise ConfigError(
                f"method={self.method!r} was built for {self.num_teachers} teacher(s) "
                f"but got outputs of {len(teachers)}"
            )
        if transfer is not None and self.terms and not type(self.terms[0]).unlabeled_rows:
            raise ConfigError(f"method={self.method!r} does not declare unlabeled_rows (trainables.methods): "
                              "its term may read labels, so it cannot take an unlabeled transfer set")
        # Losses in float32 even when the engine runs the models under bf16 autocast.
        with torch.autocast(device_type=student.logits.device.type, enabled=False):
            ce = cross_entropy(student.logits, labels, mix)
            if mix is not None:
                labels, index = mix.dominant(labels), mix.dominant(index)
            if transfer is not None and self.terms:  # [labelled; transfer] rows, (B + Bt, ...)
                student, teachers = _rows(student, transfer.student), [
                    _rows(t, u) for t, u in zip(teachers, transfer.teachers)]
                labels = torch.cat([labels, labels.new_full(transfer.index.shape, UNLABELED)])
                index = torch.cat([index, transfer.index.to(index.device)])
            parts = [term(student, teacher, labels, index) for term, teacher in zip(self.terms, teachers)]
            distill = torch.stack(parts).sum() if parts else ce.new_zeros(())
            total = ce + self.hp.lam * distill
        values = torch.stack([ce.detach(), distill.detach(), *(p.detach() for p in parts)]).tolist()
        logs = {"ce": values[0], "distill": values[1]}
        if len(parts) > 1:
            logs.update({f"distill_{i}": v for i, v in enumerate(values[2:])})
        return total, logs


def _rows(a: Outputs, b: Outputs) -> Outputs:
    """The rows of `a` then those of `b`."""
    return Outputs(logits=torch.cat([a.logits, b.logits]), features=torch.cat([a.features, b.features]),
                   maps=tuple(torch.cat([x, y]) for x, y in zip(a.maps, b.maps)))
