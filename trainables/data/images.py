"""Decode image files into one uint8 tensor (N, 3, size, size), failing on any bad file.

Every mode becomes 8-bit RGB: grayscale and palette expanded, alpha dropped (as
torchvision's `pil_loader` does, so pixels match common training code), 16-bit
grayscale ("I;16*", and "I", which PIL may use for 16-bit PNGs) scaled by 1/257
(65535 -> 255, not clipped); float images are refused.
Images not size x size are resized with bicubic filtering (aspect not kept).
A missing, empty, truncated or undecodable file raises DataError naming it:
nothing is ever replaced silently.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageFile

from trainables.errors import DataError

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_images(paths: Sequence[str | os.PathLike], size: int, workers: int = 4) -> torch.Tensor:
    """uint8 tensor (N, 3, size, size) of the images at `paths`, in order."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"image size={size!r} must be a positive integer")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code): truncated images would be "
            "padded silently; set it back to False"
        )
    paths = [os.fspath(p) for p in paths]
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)  # (N, H, W, 3)

    def fill(i: int) -> None:
        out[i] = decode(paths[i], size)

    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(min(workers, len(paths))) as pool:
            list(pool.map(fill, range(len(paths))))  # re-raises the first error
    else:
        for i in range(len(paths)):
            fill(i)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (N, 3, size, size)


def decode(path: str, size: int) -> np.ndarray:
    """One image as uint8 (size, size, 3)."""
    try:
        with Image.open(path) as img:
            img.load()  # inside the try: truncation shows up here, not at open
            rgb = to_rgb(img, path)
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.BICUBIC)
            return np.array(rgb, dtype=np.uint8)  # a writable copy (torch.from_numpy warns otherwise)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist: was the dataset moved? re-index it") from None
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        size_note = " (empty file)" if os.path.isfile(path) and os.path.getsize(path) == 0 else ""
        raise DataError(
            f"image file {path}{size_note} cannot be decoded ({exc.__class__.__name__}: {exc}): "
            f"replace or remove it"
        ) from None


def to_rgb(img: Image.Image, path: str = "<image>") -> Image.Image:
    """8-bit RGB version of `img` (see module docstring for each mode)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in SIXTEEN_BIT:
        v = np.asarray(img).astype(np.float64)
        v8 = np.clip(np.rint(v / 257.0), 0, 255).astype(np.uint8)  # 16-bit range -> 8-bit
        return Image.fromarray(np.repeat(v8[:, :, None], 3, axis=2), "RGB")
    if mode == "F":
        raise DataError(f"image file {path} is floating point (mode F): convert it to 8-bit first")
    return img.convert("RGB")  # L, 1, P, PA, LA, RGBA, CMYK, YCbCr, ... (alpha dropped)
