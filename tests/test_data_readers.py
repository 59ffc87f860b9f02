"""Dataset readers on tiny trees of the real layouts, built in tmp_path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainables.data import COLUMNS, READERS, read_index
from trainables.errors import DataError


def png(path: Path, value: int = 0, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def frames(folder: Path, n: int = 2) -> None:
    for i in range(n):
        png(folder / f"{i:03d}.png", value=i)


def check_table(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(COLUMNS)
    assert df["path"].tolist() == sorted(df["path"])
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["path"])
    assert isinstance(df.index, pd.RangeIndex) and df.index[0] == 0
    assert set(df["label"]) <= {0, 1}
    assert df.groupby("video")["split"].nunique().max() == 1


# ---- registry ----------------------------------------------------------------------------


def test_all_layouts_registered():
    assert set(READERS) == {"folder", "ffpp", "celebdf", "deepfakebench", "synthetic"}


@pytest.mark.parametrize("spec", [{}, {"root": "x"}, {"kind": "imagenet", "root": "x"}])
def test_missing_or_unknown_kind_lists_known_kinds(spec):
    with pytest.raises(DataError, match="known kinds: .*folder"):
        read_index(spec)


@pytest.mark.parametrize("kind", sorted(READERS))
def test_every_reader_names_a_missing_required_key(kind):
    with pytest.raises(DataError, match="needs key"):
        read_index({"kind": kind})


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(DataError, match="val_fracton"):
        read_index({"kind": "folder", "root": str(tmp_path), "val_fracton": 0.2})


@pytest.mark.parametrize("kind", ["folder", "ffpp", "celebdf"])
def test_missing_root_is_named(tmp_path, kind):
    with pytest.raises(DataError, match="nowhere"):
        read_index({"kind": kind, "root": str(tmp_path / "nowhere")})


# ---- folder --------------------------------------------------------------------------------


def test_folder_with_split_folders_and_flat_files(tmp_path):
    for split in ("train", "val", "test"):
        png(tmp_path / split / "real" / f"r_{split}.png")
        png(tmp_path / split / "fake" / f"f_{split}.jpg")
    df = read_index({"kind": "folder", "root": str(tmp_path)})
    check_table(df)
    assert len(df) == 6
    # "fake" sorts before "real": labels must still be real = 0, fake = 1
    assert (df["label"] == df["path"].str.contains("/fake/").astype(int)).all()
    assert df.loc[df["path"].str.endswith("r_val.png"), "split"].item() == "val"
    assert set(df["video"]) == {f"folder/{c}/{p}_{s}" for c, p in (("real", "r"), ("fake", "f"))
                                for s in ("train", "val", "test")}
    assert set(df["source"]) == {"folder"}


def test_folder_video_folders_seeded_split_by_video(tmp_path):
    for name in ("real", "fake"):
        for v in range(10):
            frames(tmp_path / name / f"vid{v}", n=3)
    spec = {"kind": "folder", "root": str(tmp_path), "seed": 3, "source": "mine"}
    df = read_index(spec)
    check_table(df)
    assert len(df) == 60 and set(df["source"]) == {"mine"}
    assert df["video"].nunique() == 20 and df.loc[0, "video"].startswith("mine/fake/vid")
    # 10 names, 15 % each of val/test -> round(1.5) = 2 names, 6 frames (3 real + 3 fake) a name
    assert df["split"].value_counts().to_dict() == {"train": 36, "val": 12, "test": 12}
    # real/vidN and fake/vidN stay together
    name = df["video"].str.split("/").str[2]
    assert df.groupby(name)["split"].nunique().max() == 1
    pd.testing.assert_frame_equal(df, read_index(spec))
    other = read_index({**spec, "seed": 4})
    assert not other["split"].equals(df["split"])


def test_folder_skips_hidden_files_and_folders(tmp_path):
    png(tmp_path / "real" / "v1" / "0.png")
    png(tmp_path / "real" / "v1" / ".ipynb_checkpoints" / "0.png")
    png(tmp_path / "fake" / "v2" / ".0.png")
    png(tmp_path / "fake" / "v2" / "1.PNG")
    df = read_index({"kind": "folder", "root": str(tmp_path)})
    assert [Path(p).relative_to(tmp_path).as_posix() for p in df["path"]] == ["fake/v2/1.PNG", "real/v1/0.png"]


def test_folder_layout_errors(tmp_path):
    png(tmp_path / "train" / "real" / "a.png")
    png(tmp_path / "real" / "b.png")
    with pytest.raises(DataError, match="both split folders"):
        read_index({"kind": "folder", "root": str(tmp_path)})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="neither real/ and fake/"):
        read_index({"kind": "folder", "root": str(empty)})
    with pytest.raises(DataError, match="test_fraction"):
        read_index({"kind": "folder", "root": str(tmp_path), "test_fraction": 1.5})


def test_folder_video_in_two_split_folders_is_a_leak(tmp_path):
    png(tmp_path / "train" / "real" / "v1" / "0.png")
    png(tmp_path / "test" / "real" / "v1" / "1.png")
    png(tmp_path / "train" / "fake" / "v2" / "0.png")
    with pytest.raises(DataError, match="folder/real/v1"):
        read_index({"kind": "folder", "root": str(tmp_path)})


# ---- FaceForensics++ ---------------------------------------------------------------------


@pytest.fixture
def ffpp(tmp_path) -> Path:
    pairs = {"train": [["000", "001"], ["002", "003"]], "val": [["004", "005"]], "test": [["006", "007"]]}
    (tmp_path / "splits").mkdir()
    for split, p in pairs.items():
        (tmp_path / "splits" / f"{split}.json").write_text(json.dumps(p))
    for i in range(8):
        frames(tmp_path / "original_sequences/youtube/c23/frames" / f"{i:03d}")
    for method in ("Deepfakes", "FaceSwap"):
        for a, b in sum(pairs.values(), []):
            for vid in (f"{a}_{b}", f"{b}_{a}"):
                if (method, vid) != ("Deepfakes", "003_002"):  # one video not extracted
                    frames(tmp_path / "manipulated_sequences" / method / "c23/frames" / vid)
    (tmp_path / "manipulated_sequences/Deepfakes/c40").mkdir()
    return tmp_path


def test_ffpp_pairs_give_reals_and_both_fakes(ffpp):
    df = read_index({"kind": "ffpp", "root": str(ffpp), "methods": ["Deepfakes", "FaceSwap"]})
    check_table(df)
    train = df[df["split"] == "train"]
    # 4 reals + 3 Deepfakes (003_002 missing) + 4 FaceSwap videos, 2 frames each
    assert train.groupby("source")["video"].nunique().to_dict() == {"youtube": 4, "Deepfakes": 3, "FaceSwap": 4}
    assert len(train) == 22
    assert df["split"].value_counts().to_dict() == {"train": 22, "val": 12, "test": 12}
    assert set(df.loc[df["source"] == "youtube", "label"]) == {0}
    assert set(df.loc[df["source"] != "youtube", "label"]) == {1}
    assert set(df.loc[df["split"] == "val", "video"]) == {
        "youtube/004", "youtube/005", "Deepfakes/004_005", "Deepfakes/005_004",
        "FaceSwap/004_005", "FaceSwap/005_004"}


def test_ffpp_methods_option(ffpp):
    df = read_index({"kind": "ffpp", "root": str(ffpp), "methods": ["FaceSwap"]})
    assert set(df["source"]) == {"youtube", "FaceSwap"}
    with pytest.raises(DataError, match="Face2Face"):  # default = all four; not extracted here
        read_index({"kind": "ffpp", "root": str(ffpp)})
    with pytest.raises(DataError, match="DeepFake2"):
        read_index({"kind": "ffpp", "root": str(ffpp), "methods": ["DeepFake2"]})
    with pytest.raises(DataError, match="non-empty list"):
        read_index({"kind": "ffpp", "root": str(ffpp), "methods": "FaceSwap"})


def test_ffpp_missing_compression_names_the_path(ffpp):
    with pytest.raises(DataError, match=r"youtube/c40 does not exist"):
        read_index({"kind": "ffpp", "root": str(ffpp), "compression": "c40", "methods": ["Deepfakes"]})


def test_ffpp_missing_split_file_names_it(ffpp):
    (ffpp / "splits" / "val.json").unlink()
    with pytest.raises(DataError, match=r"splits/val\.json"):
        read_index({"kind": "ffpp", "root": str(ffpp), "methods": ["FaceSwap"]})


def test_ffpp_split_with_no_frames_on_disk(ffpp, tmp_path_factory):
    other = tmp_path_factory.mktemp("splits")
    for split, p in {"train": [["000", "001"]], "val": [["004", "005"]], "test": [["098", "099"]]}.items():
        (other / f"{split}.json").write_text(json.dumps(p))
    with pytest.raises(DataError, match="split 'test'"):
        read_index({"kind": "ffpp", "root": str(ffpp), "methods": ["FaceSwap"], "split_dir": str(other)})


def test_ffpp_id_in_two_splits_is_a_leak(ffpp):
    (ffpp / "splits" / "test.json").write_text(json.dumps([["006", "007"], ["000", "005"]]))
    with pytest.raises(DataError, match="leak"):
        read_index({"kind": "ffpp", "root": str(ffpp), "methods": ["FaceSwap"]})


# ---- Celeb-DF v2 ---------------------------------------------------------------------------


@pytest.fixture
def celebdf(tmp_path) -> Path:
    for i in range(6):
        frames(tmp_path / "Celeb-real/frames" / f"id{i}_0000")
    for i in range(4):
        frames(tmp_path / "YouTube-real" / f"{i:05d}")  # no frames/ level: <folder>/<stem>/
    for i in range(10):
        frames(tmp_path / "Celeb-synthesis/frames" / f"id{i}_id9_0000")
    (tmp_path / "List_of_testing_videos.txt").write_text(
        "1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id0_id9_0000.mp4\n"
        "1 YouTube-real/00003.mp4\n0 Celeb-synthesis/id1_id9_0000.mp4\n"
        "0 Celeb-synthesis/id7_id7_9999.mp4\n\n"  # not extracted: skipped
    )
    return tmp_path


def test_celebdf_list_is_test_and_labels_inverted(celebdf):
    df = read_index({"kind": "celebdf", "root": str(celebdf), "val_fraction": 0.25})
    check_table(df)
    test = df[df["split"] == "test"]
    assert dict(test.groupby("video")["label"].first()) == {
        "Celeb-real/id0_0000": 0, "YouTube-real/00003": 0,
        "Celeb-synthesis/id0_id9_0000": 1, "Celeb-synthesis/id1_id9_0000": 1}
    assert dict(df.groupby("source")["label"].first()) == {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
    # rest: 8 real + 8 fake videos; 25 % -> 2 of each to val; 2 frames a video
    assert df["split"].value_counts().to_dict() == {"train": 24, "val": 8, "test": 8}
    assert df[df["split"] == "val"].groupby("label")["video"].nunique().to_dict() == {0: 2, 1: 2}


def test_celebdf_unknown_folder_names_the_line(celebdf):
    (celebdf / "List_of_testing_videos.txt").write_text("1 Celeb-real/id0_0000.mp4\n0 Celeb-fake/x.mp4\n")
    with pytest.raises(DataError, match="line 2.*Celeb-fake"):
        read_index({"kind": "celebdf", "root": str(celebdf)})


def test_celebdf_label_against_folder(celebdf):
    # a list already converted to 0 = real would put a real video under label 0 = fake
    (celebdf / "List_of_testing_videos.txt").write_text("0 Celeb-real/id0_0000.mp4\n")
    with pytest.raises(DataError, match="line 1.*1 = real"):
        read_index({"kind": "celebdf", "root": str(celebdf)})


def test_celebdf_missing_list(celebdf):
    (celebdf / "List_of_testing_videos.txt").unlink()
    with pytest.raises(DataError, match="List_of_testing_videos.txt"):
        read_index({"kind": "celebdf", "root": str(celebdf)})


# ---- DeepfakeBench JSON --------------------------------------------------------------------


def video(label: str, paths: list[str]) -> dict:
    return {"label": label, "frames": paths}


@pytest.fixture
def dfb_ff(tmp_path) -> tuple[Path, Path]:
    root = tmp_path / "bench"
    for rel in ("ff/real/000/0.png", "ff/real/000/1.png", "ff/real/001/0.png", "ff/df/000_001/0.png"):
        png(root / rel)
    doc = {"FaceForensics++": {
        "FF-real": {
            "train": {"c23": {"000": video("FF-real", ["ff/real/000/0.png", "ff/real/000/1.png"])},
                      "c40": {"000": video("FF-real", ["ff/real/c40/missing.png"])}},
            "test": {"c23": {"001": video("FF-real", ["ff/real/001/0.png"])},
                     "c40": {"001": video("FF-real", ["ff/real/001/0.png"])}}},
        "FF-DF": {"train": {"c23": {"000_001": video("FF-DF", ["ff/df/000_001/0.png"])},
                            "c40": {"000_001": video("FF-DF", ["ff/df/000_001/0.png"])}}},
    }}
    path = tmp_path / "FaceForensics++.json"
    path.write_text(json.dumps(doc))
    return path, root


LABELS = {"FF-real": 0, "FF-DF": 1}


def test_deepfakebench_with_compression_level(dfb_ff):
    path, root = dfb_ff
    df = read_index({"kind": "deepfakebench", "json": str(path), "root": str(root), "label_map": LABELS})
    check_table(df)
    expected = ("ff/df/000_001/0.png", "ff/real/000/0.png", "ff/real/000/1.png", "ff/real/001/0.png")
    assert df["path"].tolist() == [str(root / p) for p in expected]
    assert df["label"].tolist() == [1, 0, 0, 0]
    assert df["split"].tolist() == ["train", "train", "train", "test"]
    assert df["video"].tolist() == ["FF-DF/000_001", "FF-real/000", "FF-real/000", "FF-real/001"]
    assert df["source"].tolist() == ["FF-DF", "FF-real", "FF-real", "FF-real"]


def test_deepfakebench_errors(dfb_ff):
    path, root = dfb_ff
    spec = {"kind": "deepfakebench", "json": str(path), "root": str(root), "label_map": LABELS}
    with pytest.raises(DataError, match=r"FF-DF.*not in label_map.*FF-real"):
        read_index({**spec, "label_map": {"FF-real": 0}})
    with pytest.raises(DataError, match=r"1 frame file.*ff/real/c40/missing\.png"):
        read_index({**spec, "compression": "c40"})
    with pytest.raises(DataError, match=r"no compression 'raw'; found \['c23', 'c40'\]"):
        read_index({**spec, "compression": "raw"})
    with pytest.raises(DataError, match="nope.json"):
        read_index({**spec, "json": str(path.parent / "nope.json")})


def test_deepfakebench_without_compression_level(tmp_path):
    (tmp_path / "frames").mkdir()
    png(tmp_path / "frames/r/0.png")
    png(tmp_path / "frames/f/0.png")
    png(tmp_path / "frames/f/1.png")
    doc = {"Celeb-DF-v2": {
        "CelebDFv2_real": {"train": {"id0_0000": video("CelebDFv2_real", ["frames/r/0.png"])}},
        "CelebDFv2_fake": {"test": {"id0_id1_0000": video("CelebDFv2_fake", ["frames/f/0.png", "frames\\f\\1.png"])}},
    }}
    (tmp_path / "Celeb-DF-v2.json").write_text(json.dumps(doc))
    df = read_index({"kind": "deepfakebench", "json": str(tmp_path / "Celeb-DF-v2.json"),
                     "label_map": {"CelebDFv2_real": 0, "CelebDFv2_fake": 1}})  # paths relative to the JSON
    check_table(df)
    assert df[["label", "split", "video"]].values.tolist() == [
        [1, "test", "CelebDFv2_fake/id0_id1_0000"], [1, "test", "CelebDFv2_fake/id0_id1_0000"],
        [0, "train", "CelebDFv2_real/id0_0000"]]
