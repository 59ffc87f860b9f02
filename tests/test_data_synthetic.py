"""The synthetic dataset: files, balance, video groups, marker, blending, face swaps."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from trainables.data import generate, read_index, self_blend
from trainables.data.synthetic import MARKER, DonorCamera, blend_mask, face_swap, swap_video
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


# --- manipulation="swap" ----------------------------------------------------------------------
def test_blend_is_the_default_and_its_marker_has_no_manipulation(made, tmp_path):
    assert tree(generate(tmp_path / "b", 80, size=32, seed=0, manipulation="blend")) == tree(made)
    assert "manipulation" not in json.loads((made / MARKER).read_text())  # old markers stay valid


def test_swap_changes_only_the_fakes(made, tmp_path):
    swap = generate(tmp_path / "w", 80, size=32, seed=0, manipulation="swap")
    blend_files, swap_files = tree(made), tree(swap)
    assert blend_files.keys() == swap_files.keys()  # same videos, splits and frames
    real = [f for f in blend_files if "/real/" in f]
    fake = [f for f in blend_files if "/fake/" in f]
    assert len(real) == len(fake) == 40
    assert all(blend_files[f] == swap_files[f] for f in real)
    assert all(blend_files[f] != swap_files[f] for f in fake)
    assert json.loads((swap / MARKER).read_text())["manipulation"] == "swap"


def test_face_swap_pastes_the_captured_donor_through_a_soft_mask():
    img, donor = np.full((32, 32, 3), 200, np.uint8), np.full((32, 32, 3), 40, np.uint8)
    clean = DonorCamera(np.ones(3, np.float32), np.zeros(3, np.float32), blur=0.5, noise=0.0, quality=95)
    out = face_swap(img, donor, np.random.default_rng(0), clean)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out == 200).all(axis=2).any()  # outside the mask: untouched
    assert out.min() <= 42  # inside: the donor (flat 40, JPEG at 95 keeps it within 2)
    noisy = DonorCamera(np.ones(3, np.float32), np.zeros(3, np.float32), blur=0.5, noise=6.0, quality=95)
    inside = face_swap(img, donor, np.random.default_rng(0), noisy)[out <= 42]  # same rng: same mask
    assert inside.std() > 2  # sensor noise only inside; outside stays flat 200
    with pytest.raises(ValueError, match="one shape"):
        face_swap(img, donor[:16], np.random.default_rng(0))


def test_swap_video_takes_its_donor_from_another_photo():
    photos = [np.zeros((200, 200, 3), np.uint8), np.full((200, 200, 3), 255, np.uint8)]
    for seed in range(10):
        for frame in swap_video(photos, 2, 64, np.random.default_rng(seed)):  # 64 px: the mask reaches 0 and 1
            # target: 0 or 255 shifted by brightness (<= 20.4); donor: the other, through the
            # camera (gain 0.85..1.15, bias +-16): a frame holds both, never one photo only
            assert (frame < 60).any() and (frame > 150).any()


def test_a_root_is_never_reused_for_another_manipulation(tmp_path):
    spec = {"kind": "synthetic", "num_images": 16, "size": 16}
    blend, swap = str(tmp_path / "b"), str(tmp_path / "s")
    read_index({**spec, "root": blend})
    assert len(read_index({**spec, "root": blend, "manipulation": "blend"})) == 16  # reused
    with pytest.raises(DataError, match=r"'manipulation': 'blend'.*'manipulation': 'swap'"):
        read_index({**spec, "root": blend, "manipulation": "swap"})
    read_index({**spec, "root": swap, "manipulation": "swap"})
    for blend_spec in ({**spec, "root": swap}, {**spec, "root": swap, "manipulation": "blend"}):
        with pytest.raises(DataError, match=r"'manipulation': 'swap'.*'manipulation': 'blend'"):
            read_index(blend_spec)


def test_unknown_manipulation_names_the_key_and_the_choices(tmp_path):
    from study.config import parse_config
    from trainables.errors import ConfigError

    allowed = r"\['blend', 'swap'\]"
    with pytest.raises(DataError, match=f"manipulation='faceswap'.*{allowed}"):
        generate(tmp_path / "g", 16, size=16, manipulation="faceswap")
    with pytest.raises(DataError, match=f"manipulation='faceswap'.*{allowed}"):
        read_index({"kind": "synthetic", "root": str(tmp_path / "r"), "num_images": 16, "manipulation": "faceswap"})
    assert not (tmp_path / "g").exists() and not (tmp_path / "r").exists()
    raw = {"name": "m", "data": {"kind": "synthetic", "root": str(tmp_path / "d"), "manipulation": "faceswap"},
           "teachers": [{"name": "r", "arch": "test_resnet"}],
           "students": {"pairs": ["r->test_resnet"], "methods": ["vt"], "volumes": [10], "seeds": [0]}}
    with pytest.raises(ConfigError, match=f"data.manipulation='faceswap'.*{allowed}"):
        parse_config(raw, "m.yaml", tmp_path)
    raw["data"]["manipulation"] = "swap"
    assert parse_config(raw, "m.yaml", tmp_path).data["manipulation"] == "swap"


def test_synth_command_takes_manipulation(tmp_path):
    from click.testing import CliRunner

    from study.cli import main

    args = ["data", "synth", "--out", str(tmp_path / "s"), "--num-images", "16", "--size", "16"]
    result = CliRunner().invoke(main, [*args, "--manipulation", "swap"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / MARKER).read_text())["manipulation"] == "swap"
    bad = CliRunner().invoke(main, [*args[:3], str(tmp_path / "t"), *args[4:], "--manipulation", "faceswap"])
    assert bad.exit_code == 2 and "blend" in bad.output and not (tmp_path / "t").exists()
