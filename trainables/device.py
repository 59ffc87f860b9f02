"""Where and how a model runs: the device, the GPU-only speed settings (cudnn autotuning,
TF32, bf16 autocast, channels_last), and uint8 images to the model's normalised input.
Each falls back to plain CPU behaviour, and the CPU fallbacks are tested."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from trainables.hparams import HParams

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def configure_device(device: torch.device, backends=torch.backends) -> None:
    """GPU-only speed settings (cudnn autotuning, TF32 matmuls and convolutions); nothing
    happens on the CPU. torch >= 2.9 has `fp32_precision` settings and raises when they are
    mixed with the older `allow_tf32` flags, which are all that older versions of the
    supported range have: use one interface, the newest there is."""
    if device.type != "cuda":
        return
    backends.cudnn.benchmark = True
    if hasattr(backends, "fp32_precision"):
        backends.cuda.matmul.fp32_precision = "tf32"
        backends.cudnn.conv.fp32_precision = "tf32"
    else:
        backends.cuda.matmul.allow_tf32 = True
        backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, hp: HParams):
    """bf16 autocast on CUDA when `hp.amp`; a no-op context elsewhere."""
    if device.type == "cuda" and hp.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device, hp: HParams) -> torch.memory_format:
    if device.type == "cuda" and hp.channels_last:
        return torch.channels_last
    return torch.contiguous_format


def to_input(images: Tensor, device: torch.device, fmt: torch.memory_format = torch.contiguous_format) -> Tensor:
    """uint8 (B, 3, S, S) -> normalised float on `device`; also an augmented float batch on
    [0, 255] (trainables/augment.py), which is divided in place when already on `device`."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=fmt)


# images per scoring batch: on CUDA `largest`; on the CPU as many as hold `largest` images of
# 64 px (at 299 px: 8, the floor), so that host memory at paper scale is not the activations of
# a batch (128 images of 299 px through even a tiny model take gigabytes, at no gain in images/s
# on a CPU). The engine scores with largest=EVAL_BATCH; `study predict` with its own.
EVAL_BATCH = 128


def eval_batch_size(device: torch.device, image_size: int, largest: int = EVAL_BATCH) -> int:
    if device.type == "cuda":
        return largest
    return max(8, min(largest, largest * 64 * 64 // image_size ** 2))
