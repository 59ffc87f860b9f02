"""The shared inputs of every loss: one model's outputs, the training context, and
the base class of a distillation term (one term per teacher).

Every loss takes the same inputs (the house rule: one signature for all losses), so the training loop never
asks which method it runs: `StudentLoss` (ensemble.py) adds the task loss and
sums one `DistillTerm` per teacher.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from trainables.hparams import HParams


@dataclass(frozen=True)
class Outputs:
    """One model's outputs on a batch."""

    logits: Tensor  # (B, C), C = 2
    features: Tensor  # (B, D) pooled penultimate features (timm forward_head(pre_logits=True))
    # (B, C_i, H_i, W_i) feature maps at the stages the method declares it reads (its options'
    # `map_stages()`, in that order); () for a method that reads none, which pays nothing for them
    maps: tuple[Tensor, ...] = ()

    def rows(self, sel: slice) -> "Outputs":
        """The outputs of rows `sel` of the batch."""
        return Outputs(self.logits[sel], self.features[sel], tuple(m[sel] for m in self.maps))


@dataclass(frozen=True)
class Mix:
    """How a batch was mixed (mixup or cutmix, trainables/augment.py): row b holds `lam` of
    image b and 1 - `lam` of image `partner[b]` of the same batch (cutmix: shares of pixels).

    The task term takes both labels, lam * CE(y_b) + (1 - lam) * CE(y_partner[b]). The
    distillation terms take the mixed rows as they are, student and teachers having seen the
    same mixed image (function matching), with the label and dataset index of the image that
    makes up most of each row (`dominant`): image b when lam >= 0.5, else its partner. That
    is what CKD's memory bank row and opposite-class negatives are read and written with.
    """

    partner: Tensor  # (B,) long: batch positions, on the batch's device
    lam: float  # share of each row's own image, in [0, 1]

    def dominant(self, values: Tensor) -> Tensor:
        """(B, ...) per-row values (labels, indices) of the image that dominates each row."""
        return values if self.lam >= 0.5 else values[self.partner]


# the label of a row of the unlabeled transfer set (a study's students.transfer): its true label
# is never read, and a term that reads labels must treat this value as "unknown"
UNLABELED = -1


@dataclass(frozen=True)
class LossContext:
    """What a loss needs to know about the run before the first batch."""

    student_dim: int
    teacher_dims: tuple[int, ...]  # one per teacher; empty for vt
    train_labels: Tensor  # (M,) long: label of every training image, by dataset index 0..M-1
    num_transfer: int = 0  # N unlabeled transfer images, dataset indices M..M+N-1 (label UNLABELED)
    # (C, H, W) of the student's maps and of each teacher's, at the method's stages (map_stages)
    student_maps: tuple[tuple[int, int, int], ...] = ()
    teacher_maps: tuple[tuple[tuple[int, int, int], ...], ...] = ()
    teacher: int = 0  # which teacher a term distils from (StudentLoss gives each term its own)

    @property
    def own_teacher_maps(self) -> tuple[tuple[int, int, int], ...]:
        """(C, H, W) of this term's teacher's maps."""
        return self.teacher_maps[self.teacher] if self.teacher_maps else ()

    @property
    def num_data(self) -> int:
        """M, the number of images in the student's training subset."""
        return int(self.train_labels.shape[0])

    @property
    def num_indexed(self) -> int:
        """M + N: every dataset index a distillation term may be given."""
        return self.num_data + int(self.num_transfer)


@dataclass(frozen=True)
class TransferRows:
    """One step's rows of the unlabeled transfer set, beside the labelled batch: the student's
    and each teacher's outputs on the same views, and their dataset indices (M + j; under mixup
    or cutmix those of each row's dominant image). They carry no labels: the distillation
    terms get UNLABELED for them, the task term never sees them."""

    student: Outputs  # (Bt, ...)
    teachers: tuple[Outputs, ...]  # one per teacher
    index: Tensor  # (Bt,) long, >= M


class DistillTerm(nn.Module):
    """The distillation term for ONE teacher; subclasses register with `@register_loss`.

    Projection heads and memory banks live in the term, so each teacher of an
    ensemble gets its own and the optimiser finds them in `parameters()`.
    """

    name: ClassVar[str] = ""  # set by register_loss
    options: ClassVar[type] = type(None)  # the method's own hyperparameters (set by register_loss)
    baseline: ClassVar[bool] = False  # set by register_loss: the method the others are compared against
    needs_teachers: ClassVar[bool] = True  # False: no distillation term (the baseline)
    unlabeled_rows: ClassVar[bool] = False  # set by register_loss: takes transfer rows (label UNLABELED)

    def __init__(self, hp: HParams, student_dim: int, teacher_dim: int, ctx: LossContext):
        super().__init__()
        self.hp = hp
        self.opt = hp.options  # this method's options: an instance of `options`
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim

    def forward(self, student: Outputs, teacher: Outputs, labels: Tensor, index: Tensor) -> Tensor:
        """Scalar distillation loss of `student` against this term's teacher. `labels` (B,) and
        `index` (B,): a row of the transfer set has label UNLABELED and an index >= M."""
        raise NotImplementedError
