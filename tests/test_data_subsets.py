"""balanced_subset / balanced_split on index tables built directly (no files)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainables.data import COLUMNS, balanced_split, balanced_subset, check_no_video_leak, read_index
from trainables.errors import DataError


def make_index(videos: dict[tuple[str, int], tuple[int, int]]) -> pd.DataFrame:
    """{(split, label): (number of videos, frames each)} -> index rows."""
    rows = []
    for (split, label), (n_videos, n_frames) in videos.items():
        for v in range(n_videos):
            video = f"{split}-{label}-v{v:02d}"
            rows += [(f"/d/{video}/{f:03d}.png", label, video, split, "test") for f in range(n_frames)]
    return pd.DataFrame(rows, columns=list(COLUMNS)).sort_values("path").reset_index(drop=True)


@pytest.fixture(scope="module")
def index() -> pd.DataFrame:
    return make_index({
        ("train", 0): (20, 10),  # 200 real
        ("train", 1): (15, 12),  # 180 fake
        ("val", 0): (3, 5),  # 15
        ("val", 1): (4, 5),  # 20
        ("test", 0): (2, 4),
        ("test", 1): (2, 4),
    })


def test_balance_alternation_and_range_index(index):
    sub = balanced_subset(index, 10, seed=0)
    assert sub["label"].tolist() == [0, 1] * 5
    assert (sub["split"] == "train").all()
    assert isinstance(sub.index, pd.RangeIndex) and sub.index.tolist() == list(range(10))
    assert sub["path"].is_unique


def test_nested_across_volumes(index):
    s10, s100, s360 = (balanced_subset(index, v, seed=3) for v in (10, 100, 360))
    assert set(s10["path"]) < set(s100["path"]) < set(s360["path"])
    pd.testing.assert_frame_equal(s100.iloc[:10], s10)  # same rows, same positions
    pd.testing.assert_frame_equal(s360.iloc[:100], s100)


def test_picks_spread_over_videos(index):
    s10 = balanced_subset(index, 10, seed=1)
    assert s10.groupby("label")["video"].nunique().to_dict() == {0: 5, 1: 5}
    s100 = balanced_subset(index, 100, seed=1)
    per_video = s100.groupby(["label", "video"]).size()
    # 50 real over 20 videos, dealt round-robin: 20 + 20 + 10 -> 2 or 3 each
    assert sorted(set(per_video[0])) == [2, 3] and len(per_video[0]) == 20
    # 50 fake over 15 videos: 15 + 15 + 15 + 5 -> 3 or 4 each
    assert sorted(set(per_video[1])) == [3, 4] and len(per_video[1]) == 15


def test_deterministic_and_independent_of_row_order(index):
    a = balanced_subset(index, 20, seed=7)
    shuffled = index.sample(frac=1, random_state=0).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, balanced_subset(shuffled, 20, seed=7))
    assert set(a["path"]) != set(balanced_subset(index, 20, seed=8)["path"])


@pytest.mark.parametrize("volume", [0, 1, 7, -2, 2.0, True])
def test_bad_volume(index, volume):
    with pytest.raises(DataError, match="volume"):
        balanced_subset(index, volume, seed=0)


def test_volume_too_large_names_class_and_count(index):
    with pytest.raises(DataError, match=r"volume=400 needs 200 fake train images but only 180 exist"):
        balanced_subset(index, 400, seed=0)


def test_empty_class(index):
    with pytest.raises(DataError, match="no fake images"):
        balanced_subset(index[index["label"] == 0], 2, seed=0)


def test_balanced_split(index):
    val = balanced_split(index, "val", seed=0)
    assert val["label"].value_counts().to_dict() == {0: 15, 1: 15}
    assert (val["split"] == "val").all() and val["path"].tolist() == sorted(val["path"])
    assert isinstance(val.index, pd.RangeIndex)
    capped = balanced_split(index, "val", seed=0, max_per_class=4)
    assert capped["label"].value_counts().to_dict() == {0: 4, 1: 4}
    # 4 fake picks over 4 videos: one each
    assert capped[capped["label"] == 1]["video"].nunique() == 4
    pd.testing.assert_frame_equal(val, balanced_split(index, "val", seed=0))


def test_balanced_split_errors(index):
    with pytest.raises(DataError, match="'dev'"):
        balanced_split(index, "dev", seed=0)
    with pytest.raises(DataError, match="needs both classes"):
        balanced_split(index[~((index["split"] == "test") & (index["label"] == 1))], "test", seed=0)
    with pytest.raises(DataError, match="max_per_class"):
        balanced_split(index, "val", seed=0, max_per_class=0)


def test_leak_is_refused(index):
    leaky = index.copy()
    leaky.loc[leaky["video"] == "val-0-v00", "video"] = "train-0-v00"
    with pytest.raises(DataError, match="train-0-v00"):
        check_no_video_leak(leaky)
    with pytest.raises(DataError, match="leak"):
        balanced_subset(leaky, 10, seed=0)


def test_student_subset_never_shares_a_video_with_val_or_test(tmp_path):
    from PIL import Image

    for name in ("real", "fake"):
        for v in range(12):
            for f in range(3):
                path = tmp_path / name / f"clip{v}" / f"{f}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    index = read_index({"kind": "folder", "root": str(tmp_path), "seed": 0})
    student = balanced_subset(index, 20, seed=0)
    held_out = pd.concat([balanced_split(index, s, seed=0) for s in ("val", "test")])
    assert not set(student["video"]) & set(held_out["video"])
