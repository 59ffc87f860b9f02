"""`study data sbi`: self-blended fakes of real crops as a readable, balanced folder dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner
from PIL import Image

from study.data_cli import sbi as sbi_cmd
from trainables.data import read_index
from trainables.data.sbi import MARKER, make_sbi
from trainables.errors import DataError

SIZE = 48


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reals(tmp_path_factory) -> Path:
    """8 clips of 3 crops of the astronaut (frames/<clip>/NNN.png, as extract writes) and one flat jpg."""
    root = tmp_path_factory.mktemp("reals") / "frames"
    photo = skimage.data.astronaut()
    for v in range(8):
        for i in range(3):
            y, x = 40 + 4 * v + i, 150 + 3 * v - i
            crop = Image.fromarray(photo[y:y + 150, x:x + 150]).resize((SIZE, SIZE), Image.BICUBIC)
            (root / f"{v:03d}").mkdir(parents=True, exist_ok=True)
            crop.save(root / f"{v:03d}" / f"{i:03d}.png")
    Image.fromarray(photo[50:200, 160:310]).convert("L").save(root / "loose.jpg")  # grayscale, at the top
    return root


@pytest.fixture(scope="module")
def made(reals, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sbi") / "a"
    make_sbi(reals, out, seed=0)
    return out


def test_balanced_folder_dataset_keeps_videos_together(made):
    df = read_index({"kind": "folder", "root": str(made)})
    assert df["label"].value_counts().to_dict() == {0: 25, 1: 25}
    assert (made / "real" / "003" / "002.png").is_file() and (made / "fake" / "003" / "002_sbi0.png").is_file()
    assert (made / "real" / "loose" / "loose.jpg").is_file()  # a loose image is its own video
    # a clip's reals and fakes share a video name, so they land in one split
    clip = df["video"].str.split("/", n=2).str[2]
    assert set(clip) == {f"{v:03d}" for v in range(8)} | {"loose"}
    assert df.groupby(clip)["split"].nunique().max() == 1
    assert set(df["split"]) == {"train", "val", "test"}
    marker = json.loads((made / MARKER).read_text())
    assert marker["real"] == marker["fake"] == 25 and marker["videos"] == 9


def test_fakes_are_blends_of_their_real(made, reals):
    real = np.asarray(Image.open(reals / "005" / "001.png"), dtype=np.int16)
    fake = np.asarray(Image.open(made / "fake" / "005" / "001_sbi0.png"), dtype=np.int16)
    assert fake.shape == real.shape
    diff = np.abs(fake - real).max(axis=2)
    assert 0 < (diff > 3).mean() < 0.7  # a blended region changed, not the whole image
    assert np.abs(fake - real).mean() < 20
    assert (made / "real" / "005" / "001.png").read_bytes() == (reals / "005" / "001.png").read_bytes()


def test_same_seed_same_files_other_seed_other_fakes(made, reals, tmp_path):
    make_sbi(reals, tmp_path / "b", seed=0, workers=1)
    make_sbi(reals, tmp_path / "c", seed=1)
    a, b, c = files(made), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    fakes = [k for k in a if k.startswith("fake/")]
    assert all(a[k] != c[k] for k in fakes)


def test_per_image_makes_several_fakes(reals, tmp_path):
    counts = make_sbi(reals, tmp_path / "d", seed=0, per_image=2)
    assert (counts["real"], counts["fake"]) == (25, 50)
    assert sorted(p.name for p in (tmp_path / "d" / "fake" / "000").iterdir()) == [
        f"{i:03d}_sbi{j}.png" for i in range(3) for j in range(2)]


def test_unreadable_image_is_named_and_nothing_is_left(tmp_path):
    (tmp_path / "in" / "v").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in" / "v" / "ok.png")
    (tmp_path / "in" / "v" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"v/bad\.png cannot be decoded"):
        make_sbi(tmp_path / "in", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_bad_arguments_are_refused(reals, made, tmp_path):
    with pytest.raises(DataError, match="not an empty folder"):
        make_sbi(reals, made)
    with pytest.raises(DataError, match="inside --real"):
        make_sbi(reals, reals / "sbi")
    with pytest.raises(DataError, match="no .png"):
        make_sbi(tmp_path, tmp_path.parent / f"{tmp_path.name}_out")
    (tmp_path / "v").mkdir()
    for name in ("a.png", "a.jpg"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "v" / name)
    with pytest.raises(DataError, match="v/a.jpg and v/a.png"):
        make_sbi(tmp_path, tmp_path.parent / f"{tmp_path.name}_out")


def test_cli(reals, tmp_path):
    runner = CliRunner()
    res = runner.invoke(sbi_cmd, ["--real", str(reals), "--out", str(tmp_path / "e"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "wrote 25 real and 25 self-blended images (9 videos)" in res.output
    res = runner.invoke(sbi_cmd, ["--real", str(tmp_path / "nowhere"), "--out", str(tmp_path / "f")])
    assert res.exit_code == 2 and res.output.startswith("error: real images folder")
