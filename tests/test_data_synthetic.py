"""The synthetic self-blended dataset: files, balance, video groups, marker, blending."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from trainables.data import generate, read_index, self_blend
from trainables.data.synthetic import MARKER, blend_mask
from trainables.errors import DataError


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("syn") / "a", num_images=80, size=32, seed=0)


def test_layout_balance_and_video_split(made):
    files = tree(made)
    assert len(files) == 80
    parts = [f.split("/") for f in files]  # split/class/video/frame.png
    assert Counter(p[1] for p in parts) == {"real": 40, "fake": 40}
    # 40 per class = 10 videos of 4; 15 % of 10 -> 2 videos each to val and test
    assert Counter((p[0], p[1]) for p in parts) == {
        (s, c): n for c in ("real", "fake") for s, n in (("train", 24), ("val", 8), ("test", 8))}
    videos = Counter(p[2] for p in parts)
    assert len(videos) == 20 and set(videos.values()) == {4}
    split_of = {}
    for split, _, video, _ in parts:
        assert split_of.setdefault(video, split) == split  # one split per video


def test_marker_records_parameters(made):
    marker = json.loads((made / MARKER).read_text())
    assert {k: marker[k] for k in ("num_images", "size", "seed", "frames_per_video")} == {
        "num_images": 80, "size": 32, "seed": 0, "frames_per_video": 4}


def test_same_seed_same_files_other_seed_other_files(made, tmp_path):
    assert tree(generate(tmp_path / "b", 80, size=32, seed=0, workers=1)) == tree(made)
    other = tree(generate(tmp_path / "c", 80, size=32, seed=1))
    assert other.keys() != tree(made).keys() or other != tree(made)


def test_frames_of_a_video_look_alike(made):
    from PIL import Image

    def load(p):
        return np.asarray(Image.open(p), dtype=np.float32)

    real = sorted((made / "train" / "real").iterdir())  # 6 videos
    same = np.mean([np.abs(load(v / "000.png") - load(v / "001.png")).mean() for v in real])
    other = np.mean([np.abs(load(v / "000.png") - load(w / "000.png")).mean() for v, w in zip(real, real[1:])])
    assert same < 0.5 * other


def test_read_index_generates_once_then_reads(tmp_path):
    spec = {"kind": "synthetic", "root": str(tmp_path / "s"), "num_images": 16, "size": 16, "seed": 2}
    df = read_index(spec)
    assert len(df) == 16 and set(df["source"]) == {"synthetic"}
    assert df.groupby("label").size().to_dict() == {0: 8, 1: 8}
    assert (df["label"] == df["path"].str.contains("/fake/").astype(int)).all()
    assert not list(tmp_path.glob(".s.tmp-*"))  # temporary folder gone
    mtime = (tmp_path / "s" / MARKER).stat().st_mtime_ns
    assert read_index(spec).equals(df)
    assert (tmp_path / "s" / MARKER).stat().st_mtime_ns == mtime  # not regenerated


def test_other_parameters_on_same_root_is_an_error(tmp_path):
    spec = {"kind": "synthetic", "root": str(tmp_path / "s"), "num_images": 16, "size": 16}
    read_index(spec)
    with pytest.raises(DataError, match=r"'size': 16.*'size': 32.*another data.root"):
        read_index({**spec, "size": 32})


def test_unfinished_root_is_not_overwritten(tmp_path):
    (tmp_path / "s" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=f"no {MARKER}"):
        read_index({"kind": "synthetic", "root": str(tmp_path / "s"), "num_images": 16, "size": 16})
    with pytest.raises(DataError, match="not empty"):
        generate(tmp_path / "s", 16, size=16)


@pytest.mark.parametrize("num_images", [0, 7, 2.5])
def test_bad_num_images(tmp_path, num_images):
    with pytest.raises(DataError, match="num_images"):
        generate(tmp_path / "s", num_images)


def test_self_blend_of_flat_image_stays_within_colour_shift():
    img = np.full((32, 32, 3), 128, np.uint8)
    for seed in range(20):
        out = self_blend(img, np.random.default_rng(seed))
        assert out.shape == img.shape and out.dtype == np.uint8
        # source = 128 * gain (0.94..1.06) + bias (-8..8): 112.3..143.7; blending stays between
        assert out.min() >= 112 and out.max() <= 144
        assert (out == 128).all(axis=2).any()  # outside the mask: untouched
        assert (out != 128).any()  # inside: colour-shifted


def test_self_blend_is_deterministic_for_a_generator():
    img = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    a = self_blend(img, np.random.default_rng(5))
    assert np.array_equal(a, self_blend(img, np.random.default_rng(5)))
    assert not np.array_equal(a, self_blend(img, np.random.default_rng(6)))
    with pytest.raises(ValueError):
        self_blend(img[:, :, 0], np.random.default_rng(0))


def test_blend_mask_area_and_range():
    rng = np.random.default_rng(0)
    means = []
    for _ in range(100):
        m = blend_mask(64, 64, rng)
        assert m.shape == (64, 64) and m.min() >= 0 and m.max() <= 1
        means.append(m.mean())
    # ellipse of 20-50 % of the image; the wobbly edge adds ~3 % on average, blur keeps area
    assert 0.15 < min(means) and max(means) < 0.6
    assert 0.3 < np.mean(means) < 0.4
