"""load_images: every PIL mode to the right 8-bit RGB values; bad files fail by name."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from trainables.data import load_images
from trainables.errors import DataError


def save(img: Image.Image, path: Path) -> str:
    img.save(path)
    return str(path)


def pixels(path: str, size: int) -> np.ndarray:
    """(size, size, 3) uint8 from load_images, as (H, W, C) for easy comparison."""
    out = load_images([path], size, workers=1)
    assert out.shape == (1, 3, size, size) and out.dtype == torch.uint8
    return out[0].permute(1, 2, 0).numpy()


def test_rgb_order_and_channels(tmp_path):
    a = save(Image.new("RGB", (4, 4), (10, 20, 30)), tmp_path / "a.png")
    b = save(Image.new("RGB", (4, 4), (200, 100, 0)), tmp_path / "b.png")
    out = load_images([b, a, b], 4)
    assert out.shape == (3, 3, 4, 4)
    assert out[:, :, 0, 0].tolist() == [[200, 100, 0], [10, 20, 30], [200, 100, 0]]


def test_grayscale_is_repeated(tmp_path):
    p = save(Image.new("L", (4, 4), 77), tmp_path / "g.png")
    assert (pixels(p, 4) == 77).all()


def test_rgba_and_la_drop_alpha(tmp_path):
    p = save(Image.new("RGBA", (4, 4), (10, 20, 30, 0)), tmp_path / "rgba.png")
    assert (pixels(p, 4) == [10, 20, 30]).all()
    p = save(Image.new("LA", (4, 4), (50, 128)), tmp_path / "la.png")
    assert (pixels(p, 4) == 50).all()


def test_palette_maps_to_its_colours(tmp_path):
    img = Image.new("P", (2, 2))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0, 1, 1, 0])
    p = save(img, tmp_path / "p.png")
    assert pixels(p, 2).tolist() == [[[255, 0, 0], [0, 0, 255]], [[0, 0, 255], [255, 0, 0]]]


def test_16_bit_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257], [1000, 65535]], dtype=np.uint16)
    p = save(Image.fromarray(v), tmp_path / "deep.png")
    assert Image.open(p).mode.startswith("I")
    # v / 257 rounded: 0, 1, 3.89 -> 4, 255 (clipping would give 0, 255, 255, 255)
    assert pixels(p, 2)[:, :, 0].tolist() == [[0, 1], [4, 255]]
    assert (pixels(p, 2) == pixels(p, 2)[:, :, :1]).all()


def test_resize_and_jpeg(tmp_path):
    p = save(Image.new("RGB", (20, 12), (90, 60, 30)), tmp_path / "wide.png")
    assert (pixels(p, 8) == [90, 60, 30]).all()  # bicubic of a flat image stays flat
    j = save(Image.new("RGB", (16, 16), (90, 60, 30)), tmp_path / "x.jpg")
    assert np.abs(pixels(j, 16).astype(int) - [90, 60, 30]).max() <= 3


def test_empty_list():
    assert load_images([], 8).shape == (0, 3, 8, 8)


def bad_files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    files = {"empty": tmp_path / "empty.png", "truncated": tmp_path / "truncated.png",
             "garbage": tmp_path / "garbage.jpg", "missing": tmp_path / "missing.png"}
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["garbage"].write_bytes(b"this is not an image" * 10)
    return files


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage", "missing"])
def test_bad_file_is_named(tmp_path, kind):
    bad = bad_files(tmp_path)[kind]
    good = str(tmp_path / "good.png")
    with pytest.raises(DataError, match=bad.name):
        load_images([good, good, str(bad), good], 16, workers=2)


def test_truncation_flag_must_stay_off(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_images([str(bad_files(tmp_path)["truncated"])], 8)
