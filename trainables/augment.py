"""Augmentations of a training batch, drawn from an explicit `torch.Generator` (the run's,
so a resumed run draws what an undisturbed one would), one small function each.

A step draws its batch's augmentations once, applies them once, and gives the one resulting
tensor to the student and to every teacher: teacher and student see the same view
("consistent teaching", Beyer et al., "Knowledge distillation: A good teacher is patient and
consistent", CVPR 2022), and the distillation term matches the two models' functions on it,
mixed images included ("function matching"). Flips are the only augmentation with few
enough views (two per image) to cache the teachers' outputs on (`engine.TeacherCache`);
with any other, the teachers run live on every step's views.

    flip    half the images mirrored left-right, drawn per image (uint8 or float)
    crop    random resized crop, per image: area share U[crop_scale, 1], aspect ratio
            log-uniform in [3/4, 4/3] (torchvision's RandomResizedCrop; a side longer than
            the image is cut to it), resized back to S x S (bilinear)
    color   brightness, contrast, saturation, per image: factors U[1 - s, 1 + s] each, in
            that order, clamped to [0, 255] after each (torchvision's ColorJitter in a
            fixed order; gray = 0.299 R + 0.587 G + 0.114 B)
    mixup   lam ~ Beta(a, a) per batch: row b = lam * image b + (1 - lam) * image partner[b]
    cutmix  per batch, lam ~ Beta(a, a) and a box of area share 1 - lam (clipped at the
            border) pasted from image partner[b]; lam is then the share of pixels kept
            (Yun et al., "CutMix", ICCV 2019)
With mixup and cutmix both listed, a batch is mixed by one of them, each with probability
1/2 (timm's switch). The partners are a random permutation of the batch.

crop and color take float batches on [0, 255]: the engine converts the flipped uint8 batch
once and normalises the result as it does a plain batch (`device.to_input`); mixup and
cutmix are convex combinations, so they commute with that normalisation.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from trainables.hparams import HParams
from trainables.losses.base import Mix

CROP_RATIO = (3 / 4, 4 / 3)  # aspect ratios of a crop (torchvision's RandomResizedCrop)
GRAY = (0.299, 0.587, 0.114)  # luma weights (torchvision's rgb_to_grayscale)
CUTMIX_SHARE = 0.5  # with mixup and cutmix both listed: the probability a batch is cut-mixed


def draw_flips(n: int, gen: torch.Generator) -> Tensor:
    """(n,) bool: which images to flip, each with probability 1/2."""
    return torch.rand(n, generator=gen) < 0.5


def flip_batch(images: Tensor, flips: Tensor) -> Tensor:
    """Horizontally flip the rows where `flips` is True."""
    if not bool(flips.any()):
        return images
    out = images.clone()
    out[flips] = images[flips].flip(-1)
    return out


def random_resized_crop(x: Tensor, min_scale: float, gen: torch.Generator) -> Tensor:
    """Each image of a float batch (B, 3, S, S) cropped at random and resized back to S x S."""
    b, c, h, w = x.shape
    u = torch.rand(b, 4, generator=gen, dtype=torch.float64)  # (B, 4): area, aspect, x, y
    area = min_scale + (1.0 - min_scale) * u[:, 0]
    lo, hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(lo + (hi - lo) * u[:, 1])
    cw = torch.sqrt(area * ratio).clamp(max=1.0)  # (B,) width, a share of the image's
    ch = torch.sqrt(area / ratio).clamp(max=1.0)  # (B,) height
    cx = cw / 2 + (1.0 - cw) * u[:, 2]  # (B,) centre, the crop inside the image
    cy = ch / 2 + (1.0 - ch) * u[:, 3]
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)  # output coords [-1, 1] -> input coords
    theta[:, 0, 0], theta[:, 0, 2] = cw, 2 * cx - 1
    theta[:, 1, 1], theta[:, 1, 2] = ch, 2 * cy - 1
    grid = F.affine_grid(theta.to(x.device, x.dtype), [b, c, h, w], align_corners=False)  # (B, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _gray(x: Tensor) -> Tensor:
    """(B, 3, S, S) -> (B, 1, S, S) luma."""
    weights = torch.tensor(GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def color_jitter(x: Tensor, strength: float, gen: torch.Generator) -> Tensor:
    """Brightness, contrast and saturation of each image of a float batch on [0, 255]
    (B, 3, S, S) scaled by factors drawn in [1 - strength, 1 + strength]."""
    b = x.shape[0]
    factors = 1.0 + strength * (2.0 * torch.rand(b, 3, generator=gen) - 1.0)  # (B, 3)
    bright, contrast, saturation = factors.to(x.device, x.dtype).view(b, 3, 1, 1).unbind(1)  # (B, 1, 1) each
    x = (x * bright.unsqueeze(1)).clamp(0.0, 255.0)
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = (mean + contrast.unsqueeze(1) * (x - mean)).clamp(0.0, 255.0)
    gray = _gray(x)  # (B, 1, S, S)
    return (gray + saturation.unsqueeze(1) * (x - gray)).clamp(0.0, 255.0)


def beta(alpha: float, gen: torch.Generator) -> float:
    """lam ~ Beta(alpha, alpha): one draw from `gen` seeds the numpy sampler (torch's Beta
    takes no generator)."""
    seed = int(torch.randint(2**62, (1,), generator=gen))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(x: Tensor, alpha: float, gen: torch.Generator) -> tuple[Tensor, Mix]:
    """Each row of a float batch (B, 3, S, S) blended with a partner's, lam ~ Beta(alpha, alpha)."""
    lam = beta(alpha, gen)
    partner = torch.randperm(x.shape[0], generator=gen).to(x.device)  # (B,)
    return lam * x + (1.0 - lam) * x[partner], Mix(partner, lam)


def cutmix(x: Tensor, alpha: float, gen: torch.Generator) -> tuple[Tensor, Mix]:
    """A box of each row of a float batch (B, 3, S, S) replaced by its partner's, the box of
    area share 1 - lam, lam ~ Beta(alpha, alpha); the Mix's lam is the share really kept."""
    lam = beta(alpha, gen)
    h, w = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    half_h, half_w = int(h * cut) // 2, int(w * cut) // 2
    cy, cx = (torch.rand(2, generator=gen) * torch.tensor([h, w])).long().tolist()  # the box's centre
    y0, y1 = max(cy - half_h, 0), min(cy + half_h, h)
    x0, x1 = max(cx - half_w, 0), min(cx + half_w, w)
    partner = torch.randperm(x.shape[0], generator=gen).to(x.device)  # (B,)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[partner, :, y0:y1, x0:x1]
    return out, Mix(partner, 1.0 - (y1 - y0) * (x1 - x0) / (h * w))


def views(images: Tensor, flips: Tensor, hp: HParams, gen: torch.Generator) -> tuple[Tensor, Mix | None]:
    """A uint8 batch (B, 3, S, S) flipped as `flips` says, then cropped, colour-jittered and
    mixed as `hp.augmentations` lists: a float batch on [0, 255], and how it was mixed."""
    names = hp.augmentations
    x = flip_batch(images, flips).float()  # (B, 3, S, S) on [0, 255]
    if "crop" in names:
        x = random_resized_crop(x, hp.crop_scale, gen)
    if "color" in names:
        x = color_jitter(x, hp.color_strength, gen)
    mixes = [m for m in ("mixup", "cutmix") if m in names]
    if len(mixes) == 2:
        mixes = ["cutmix" if float(torch.rand(1, generator=gen)) < CUTMIX_SHARE else "mixup"]
    if not mixes:
        return x, None
    if mixes[0] == "mixup":
        return mixup(x, hp.mixup_alpha, gen)
    return cutmix(x, hp.cutmix_alpha, gen)
