"""`study predict` with a detector saved to a local folder (no Ray, no tracking store): images and
videos scored as training saw them, bad inputs as rows with a reason, exit codes 0 / 1 / 2.
(`study predict` on a study's logged and registered models: tests/test_serving.py, slow.)"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_extract import photo_frames, write_video

from study.cli import main
from trainables.data.extract import extract
from trainables.data.images import decode
from trainables.models import create_model
from trainables.predict import find_files
from trainables.serving import load_mlflow_model, model_metadata, save_mlflow_model

SIZE = 32
CROP = 48  # the training crops' size (study data extract --size): faces cut at 48 px, then resized to 32
K = 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "detector"
    return save_mlflow_model(create_model("test_resnet"), path, SIZE,
                             model_metadata("test_resnet", SIZE, {"margin": 1.3, "size": CROP}))


def run(*args: str):
    return CliRunner().invoke(main, ["predict", *args], catch_exceptions=False)


def write_images(folder, n: int, size: int = 40) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_images_scored_as_training_decodes_them_and_bad_files_are_rows(model_dir, tmp_path):
    good = write_images(tmp_path / "imgs" / "sub", 3)
    (tmp_path / "imgs" / "broken.png").write_text("not a png")
    (tmp_path / "imgs" / "notes.txt").write_text("passed over")
    out = tmp_path / "out" / "pred.csv"
    result = run("--model", str(model_dir), "--images", str(tmp_path / "imgs"), "--out", str(out))
    assert result.exit_code == 1, result.output
    assert "3 of 4 input(s) scored" in result.output and "1 file(s)" in result.output
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["path", "fake_prob", "predicted", "reason"]
    bad = table[table["path"].str.endswith("broken.png")].iloc[0]
    assert bad["fake_prob"] == "" and "cannot be decoded" in bad["reason"]
    ok = table[table["reason"] == ""]
    assert sorted(ok["path"]) == sorted(str(p) for p in good)
    model = load_mlflow_model(model_dir)
    want = model.predict(torch.from_numpy(np.stack([decode(str(p), SIZE) for p in sorted(good)])).permute(0, 3, 1, 2))
    got = ok.sort_values("path")["fake_prob"].astype(float).to_numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert set(ok["predicted"]) <= {"fake", "real"}


def test_all_scored_exits_0(model_dir, tmp_path):
    write_images(tmp_path / "imgs", 2)
    result = run("--model", str(model_dir), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "p.csv"))
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 2


def test_usage_errors_exit_2(model_dir, tmp_path):
    write_images(tmp_path / "imgs", 1)
    (tmp_path / "vids").mkdir()
    out = str(tmp_path / "p.csv")
    both = run("--model", str(model_dir), "--images", str(tmp_path / "imgs"), "--videos", str(tmp_path / "vids"),
               "--out", out)
    neither = run("--model", str(model_dir), "--out", out)
    no_store = run("--workdir", str(tmp_path / "none"), "--model", "0" * 32, "--images", str(tmp_path / "imgs"),
                   "--out", out)
    no_videos = run("--model", str(model_dir), "--videos", str(tmp_path / "vids"), "--out", out)
    bad_ref = run("--model", "not-a-model", "--images", str(tmp_path / "imgs"), "--out", out)
    for result in (both, neither, no_store, no_videos, bad_ref):
        assert result.exit_code == 2, result.output
    assert "exactly one of" in both.output and "no videos found" in no_videos.output
    assert "no MLflow store at" in no_store.output and not (tmp_path / "none").exists()
    assert "give a run id" in bad_ref.output


def test_a_model_of_another_kind_is_refused(tmp_path):
    import mlflow.pytorch

    other = tmp_path / "linear"
    mlflow.pytorch.save_model(torch.nn.Linear(4, 1), str(other), serialization_format="pt2",
                              input_example=np.zeros((2, 4), dtype=np.float32), pip_requirements=["torch"])
    write_images(tmp_path / "imgs", 1)
    result = run("--model", str(other), "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "p.csv"))
    assert result.exit_code == 2 and "not a detector saved by ckd-study" in result.output


def test_videos_cut_faces_as_extract_does(model_dir, tmp_path):
    videos = tmp_path / "videos"
    write_video(videos / "face.mp4", photo_frames("astronaut"))
    write_video(videos / "noface.avi", photo_frames("coffee"))
    (videos / "broken.mp4").write_text("not a video")
    out = tmp_path / "pred.csv"
    result = run("--model", str(model_dir), "--videos", str(videos), "--out", str(out), "--frames-per-video", str(K))
    assert result.exit_code == 1, result.output
    table = pd.read_csv(out, keep_default_na=False).set_index("path")
    frames = pd.read_csv(tmp_path / "pred_frames.csv", keep_default_na=False)
    face, noface, broken = (table.loc[str(videos / n)] for n in ("face.mp4", "noface.avi", "broken.mp4"))
    assert face["reason"] == "" and face["frames_scored"] == K and face["frames_sampled"] == K
    assert "no face found in any of the 3" in noface["reason"] and noface["fake_prob"] == ""
    assert "cannot read the video" in broken["reason"]
    mine = frames[frames["path"] == str(videos / "face.mp4")]
    assert len(mine) == K and (mine["reason"] == "").all()
    assert float(face["fake_prob"]) == pytest.approx(mine["fake_prob"].astype(float).mean(), abs=1e-9)
    assert (frames[frames["path"] == str(videos / "noface.avi")]["reason"] == "no face found").all()

    # the same faces `study data extract` writes (at the training crops' size), decoded as training decodes them
    (tmp_path / "only").mkdir()
    write_video(tmp_path / "only" / "face.mp4", photo_frames("astronaut"))
    extract(tmp_path / "only", tmp_path / "crops", frames_per_video=K, size=CROP, margin=1.3, progress=False)
    pngs, _ = find_files(tmp_path / "crops" / "frames" / "face", (".png",))
    assert [int(p.stem) for p in pngs] == mine["frame"].tolist()
    model = load_mlflow_model(model_dir)
    want = model.predict(torch.from_numpy(np.stack([decode(str(p), SIZE) for p in pngs])).permute(0, 3, 1, 2))
    np.testing.assert_allclose(mine["fake_prob"].astype(float).to_numpy(), want, rtol=0, atol=1e-6)


def test_predict_exports_a_runs_model_only_for_run_references():
    from trainables.inputs import run_of_ref

    rid = "0123456789abcdef0123456789abcdef"
    # a run id, its logged model by name (per cell, or `model` in older studies)
    for ref in (rid, f"runs:/{rid}/model", f"runs:/{rid}/model/", f"runs:/{rid}/quickstart-kd-100-img-seed-1"):
        assert run_of_ref(ref) == rid, ref
    for ref in ("models:/name/1", f"models:/{rid}", f"runs:/{rid}/model/MLmodel", "0123"):
        assert run_of_ref(ref) is None, ref
