"""A trained detector as an MLflow model (trainables/serving.py, study/logged_model.py) and what
uses it: the Model Registry (`study report --register`), `study predict`, `mlflow models serve`.

Fast tests: the wrapper against the engine, a pt2 save/load round trip, the metadata, the
driver's logging of a model folder and dataset records into a SQLite store (replayed safely).
Slow tests share one tiny study run by `study run` in a subprocess (a teacher and a 2-seed
VT/KD grid, 32 px): pyfunc against the engine, the registry, `study predict`, `mlflow models serve`.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from analysis.store import downloaded
from study.logged_model import log_flavour_model, logged_model_of
from trainables.data.subsets import rows_digest
from trainables.device import to_input
from trainables.engine import ImageSet, predict as engine_predict
from trainables.errors import UserError
from trainables import serving
from trainables.models import create_model
from trainables.serving import (
    DATASETS_FILE, KIND, MODEL_DIR, FakeProbability, face_crop_settings, load_mlflow_model, model_metadata,
    save_mlflow_model, trial_datasets,
)
from trainables.trial import TrialSpec, dataset_index, eval_frame

from test_analysis_store import store  # noqa: F401,E402  (fixture)

SIZE = 32


def images(n: int, seed: int = 1, size: int = SIZE) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return create_model("test_resnet").eval()


@pytest.fixture(scope="module")
def saved(detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "m"
    return save_mlflow_model(detector, path, SIZE, model_metadata("test_resnet", SIZE, {"margin": 1.2, "size": 48}))


# --- fast ----------------------------------------------------------------------------------------
def test_wrapper_is_softmax_of_the_detector_on_normalised_input(detector):
    x = images(6)
    with torch.no_grad():
        _, logits = detector(to_input(x, torch.device("cpu")))
        want = torch.softmax(logits, dim=1)[:, 1]
        got = FakeProbability(detector).eval()(x)
    assert got.shape == (6,) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    engine = engine_predict(detector, ImageSet(x, torch.zeros(6, dtype=torch.long)), device="cpu")
    np.testing.assert_allclose(got.numpy(), engine, rtol=0, atol=1e-6)


def test_pt2_round_trip_of_test_resnet(saved, detector):
    mlmodel = yaml.safe_load((saved / "MLmodel").read_text())
    assert (saved / "data" / "model.pt2").is_file() and not (saved / "data" / "model.pth").exists()
    assert mlmodel["metadata"]["kind"] == KIND and mlmodel["metadata"]["image_size"] == SIZE
    assert mlmodel["metadata"]["face_crop"] == {"margin": 1.2, "size": 48}
    assert mlmodel["metadata"]["normalisation"]["mean"] == [0.485, 0.456, 0.406]
    assert mlmodel["flavors"]["python_function"]["config"] == {"device": "cpu"}
    inputs = json.loads(mlmodel["signature"]["inputs"])[0]["tensor-spec"]
    assert inputs == {"dtype": "uint8", "shape": [-1, 3, SIZE, SIZE]}
    assert json.loads(mlmodel["signature"]["outputs"])[0]["tensor-spec"]["dtype"] == "float32"
    assert (saved / "input_example.json").is_file()
    assert "\n" not in (saved / "serving_input_example.json").read_text()  # written compact
    want = FakeProbability(detector).eval()
    pyfunc = mlflow.pyfunc.load_model(str(saved))
    for n in (1, 5):  # the batch dimension is dynamic
        x = images(n, seed=n)
        with torch.no_grad():
            np.testing.assert_allclose(pyfunc.predict(x.numpy()), want(x).numpy(), rtol=0, atol=1e-5)
    loaded = load_mlflow_model(saved)
    assert loaded.image_size == SIZE
    np.testing.assert_allclose(loaded.predict(images(3)), want(images(3)).detach().numpy(), rtol=0, atol=1e-5)


class _Scaled(torch.nn.Module):
    """A detector whose logits are multiplied by a plain attribute: not in its repr, not in its
    state, baked into a traced graph as a constant."""

    def __init__(self, scale: float):
        super().__init__()
        self.head, self.scale = torch.nn.Conv2d(3, 2, 1), scale

    def forward(self, x):
        return x, self.head(x).mean((2, 3)) * self.scale


def _saves(monkeypatch) -> list[Path]:
    """Folders that were traced afresh (not made from a template), in order; no template kept."""
    traced: list[Path] = []
    full = serving._export_and_save
    monkeypatch.setattr(serving, "_TEMPLATES", {})
    monkeypatch.setattr(serving, "_export_and_save", lambda w, e, path, *a: (traced.append(path), full(w, e, path, *a)))
    return traced


def test_later_exports_of_a_structure_reuse_its_traced_graph_with_their_own_weights(monkeypatch, tmp_path):
    traced = _saves(monkeypatch)
    meta = model_metadata("test_resnet", SIZE)
    folders, models = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(create_model("test_resnet").eval())
        folders.append(save_mlflow_model(models[-1], tmp_path / f"m{seed}", SIZE, {**meta, "cell": f"c{seed}"}))
    assert traced == [folders[0]]  # traced once; the two others from its template
    (template,) = serving._TEMPLATES.values()  # it holds the graph, no model's weights
    assert all(t.device.type == "meta" for t in template.program.state_dict.values())
    x = images(4, seed=7)
    outputs = []
    for seed, (folder, model) in enumerate(zip(folders, models)):
        loaded = load_mlflow_model(folder)
        assert loaded.metadata["cell"] == f"c{seed}"
        with torch.no_grad():
            want = FakeProbability(model).eval()(x).numpy()
        np.testing.assert_allclose(loaded.predict(x), want, rtol=0, atol=1e-5)
        np.testing.assert_allclose(mlflow.pyfunc.load_model(str(folder)).predict(x.numpy()), want, rtol=0, atol=1e-5)
        outputs.append(want)
    assert not np.allclose(outputs[1], outputs[2], atol=1e-4)  # the weights did differ
    files = [sorted(str(f.relative_to(folder)) for f in folder.rglob("*")) for folder in folders]
    assert files[0] == files[1] == files[2]
    uuids = {yaml.safe_load((f / "MLmodel").read_text())["model_uuid"] for f in folders}
    assert len(uuids) == 3
    # another image size or architecture is another graph: traced again; of the structures
    # seen, the two most recently used keep their templates
    save_mlflow_model(models[0], tmp_path / "size", 2 * SIZE, meta)
    save_mlflow_model(models[1], tmp_path / "again", SIZE, meta)  # from its template: now the most recent
    save_mlflow_model(create_model("mobilenetv3_small_050").eval(), tmp_path / "arch", SIZE, meta)
    save_mlflow_model(models[2], tmp_path / "again2", SIZE, meta)  # still kept ("size" was dropped)
    assert traced[1:] == [tmp_path / "size", tmp_path / "arch"]


def test_a_template_whose_graph_does_not_give_the_models_output_is_traced_again(monkeypatch, tmp_path):
    traced = _saves(monkeypatch)
    meta = model_metadata("scaled", SIZE)
    torch.manual_seed(0)
    one, three = _Scaled(1.0).eval(), _Scaled(3.0).eval()
    three.load_state_dict(one.state_dict())
    assert serving._structure_key(FakeProbability(one), SIZE) == serving._structure_key(FakeProbability(three), SIZE)
    save_mlflow_model(one, tmp_path / "one", SIZE, meta)
    save_mlflow_model(three, tmp_path / "three", SIZE, meta)
    assert traced == [tmp_path / "one", tmp_path / "three"]  # the check refused the template
    x = images(3)
    with torch.no_grad():
        want = FakeProbability(three).eval()(x).numpy()
    np.testing.assert_allclose(load_mlflow_model(tmp_path / "three").predict(x), want, rtol=0, atol=1e-6)


def test_only_detectors_saved_by_the_project_load(tmp_path):
    with pytest.raises(UserError, match="not an MLflow model"):
        load_mlflow_model(tmp_path)
    other = tmp_path / "linear"
    mlflow.pytorch.save_model(torch.nn.Linear(4, 1), str(other), serialization_format="pt2",
                              input_example=np.zeros((2, 4), dtype=np.float32), pip_requirements=["torch"])
    with pytest.raises(UserError, match="not a detector saved by ckd-study"):
        load_mlflow_model(other)


def test_face_crop_settings_from_extract_summaries(tmp_path):
    def summary(folder: Path, margin: float, size: int = 299) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "extract_summary.json").write_text(json.dumps({"settings": {"margin": margin, "size": size}}))

    assert face_crop_settings({"kind": "synthetic", "root": str(tmp_path / "none")}) is None
    for root in ("ffpp", "mixed"):
        summary(tmp_path / root / "original_sequences" / "youtube" / "c23", 1.3)
        summary(tmp_path / root / "manipulated_sequences" / "Deepfakes" / "c23", 1.3)
        summary(tmp_path / root / "original_sequences" / "youtube" / "c23" / "frames" / "000", 9.0)  # never read
    summary(tmp_path / "mixed" / "manipulated_sequences" / "Face2Face" / "c23", 1.5)  # two settings: none recorded
    assert face_crop_settings({"kind": "ffpp", "root": str(tmp_path / "ffpp")}) == {"margin": 1.3, "size": 299}
    assert face_crop_settings({"kind": "ffpp", "root": str(tmp_path / "mixed")}) is None
    summary(tmp_path / "dfb", 1.25, 256)
    assert face_crop_settings({"kind": "deepfakebench", "json": str(tmp_path / "dfb" / "x.json")}) == \
        {"margin": 1.25, "size": 256}


def test_driver_logs_the_model_folder_and_datasets(saved, synthetic_root, tmp_path):
    spec = TrialSpec(role="student", arch="test_resnet", image_size=SIZE, volume=10, subset_seed=1,
                     data={"kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32,
                           "seed": 0}, max_eval_per_class=20)
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / DATASETS_FILE).write_text(json.dumps(trial_datasets(spec, "synthetic")))
    import shutil
    shutil.copytree(saved, checkpoint / MODEL_DIR)
    torch.save({"w": torch.zeros(1)}, checkpoint / "model.pt")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("s")
    run = client.create_run(exp, run_name="kd · 10 img · seed 1").info.run_id
    client.log_artifact(run, str(checkpoint / "model.pt"), "model")  # what the callback logs first
    client.log_metric(run, "test_acc", 0.75, step=5)
    client.log_metric(run, "val_auc", 0.8, step=5)
    client.log_metric(run, "train_loss", 0.3, step=5)  # not the model's: training
    for key, value in {"cell": "synthetic/r->test_resnet/kd/10/1", "method": "kd", "stage": "grid",
                       "study": "s"}.items():
        client.set_tag(run, key, value)
    for _ in range(2):  # a replayed write makes nothing twice
        log_flavour_model(client, run, checkpoint)
    models = client.search_logged_models([exp])
    # named after the study and the run (MLflow refuses `.`, `/`, `:` in a model's name)
    assert len(models) == 1 and models[0].name == "s-kd-10-img-seed-1" and models[0].source_run_id == run
    # the model page tells it apart (its run's cell) and shows the run's final metrics
    model = client.get_logged_model(models[0].model_id)
    assert model.tags["cell"] == "synthetic/r->test_resnet/kd/10/1" and model.tags["method"] == "kd"
    assert {m.key: m.value for m in model.metrics} == {"test_acc": 0.75, "val_auc": 0.8}
    assert str(models[0].status).endswith("READY")
    assert logged_model_of(client, run, exp).model_id == models[0].model_id
    got = client.get_run(run)
    assert [o.model_id for o in got.outputs.model_outputs] == [models[0].model_id]
    inputs = {i.tags[0].value: i.dataset for i in got.inputs.dataset_inputs}
    assert set(inputs) == {"training", "validation", "test"}
    index = dataset_index(spec.data)
    assert inputs["test"].digest == rows_digest(eval_frame(spec, index, "test"))
    assert inputs["validation"].digest == rows_digest(eval_frame(spec, index, "val"))
    assert json.loads(inputs["training"].profile)["num_rows"] == 10
    mlflow.set_tracking_uri(uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(f"runs:/{run}/s-kd-10-img-seed-1")
        assert pyfunc.metadata.metadata["kind"] == KIND
        np.testing.assert_allclose(pyfunc.predict(images(2).numpy()),
                                   load_mlflow_model(saved).predict(images(2)), rtol=0, atol=1e-6)
    finally:
        mlflow.set_tracking_uri(None)
    with downloaded(client, run, "model/model.pt") as path:  # study explain's artifact is still there
        assert set(torch.load(path, weights_only=True)) == {"w"}


def test_registry_candidates_and_runs_without_a_model(store):
    from analysis.registry import candidates, register
    from analysis.runs import load_study
    from analysis.tables import build_cells

    demo = load_study(store["uri"], "demo")
    chosen = {c.name: c for c in candidates("demo", build_cells(demo.runs), demo.runs)}
    assert set(chosen) == {f"demo-Deepfakes-efficientnet-{m}-{v}" for m, v in
                           (("vt", "100"), ("kd", "100"), ("ckd", "100"), ("vt", "10"), ("ckd", "10"))}
    ckd = chosen["demo-Deepfakes-efficientnet-ckd-100"]  # seed 0 alone has a val_acc (0.7): chosen by it
    assert (ckd.run_id, ckd.seed, ckd.selected) == (store[("ckd", "100", 0)], 0, pytest.approx(0.7))
    kd = chosen["demo-Deepfakes-efficientnet-kd-100"]  # no validation metric: the lowest seed; FAILED left out
    assert kd.seed == 0 and kd.tags["n_seeds"] == "3" and kd.tags["seeds"] == "0,1,2"
    assert float(kd.tags["test_acc_mean"]) == pytest.approx(np.mean([0.81, 0.84, 0.80]), abs=1e-6)
    assert float(kd.tags["test_acc_std"]) == pytest.approx(np.std([0.81, 0.84, 0.80], ddof=1), abs=1e-5)
    assert chosen["demo-Deepfakes-efficientnet-vt-100"].tags["teachers"] == ""
    ens = load_study(store["uri"], "ens")  # two teachers' CKD cells of one student: the teachers in the name
    names = {c.name for c in candidates("ens", build_cells(ens.runs), ens.runs)}
    assert names == {"ens-Celeb-DF-mobilenet-efficientnet-ckd-100",
                     "ens-Celeb-DF-mobilenet-xception+efficientnet-ckd-100"}
    table = register(store["uri"], demo.experiment_id, list(chosen.values()))
    assert set(table["status"]) == {"skipped"} and table["note"].str.contains("no MLflow model").all()


# --- slow: one tiny study --------------------------------------------------------------------------
STUDY = "serve"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CROSS_VIDEOS = {"real": 2, "fake": 3}  # test videos of the evaluation dataset: imbalanced on purpose
CROSS_FRAMES = 3  # frames a video (2 of them scored at video level)


def cross_dataset(root: Path, synthetic_root: str) -> Path:
    """A folder dataset of test images only (2 real and 3 fake videos of 3 frames), cut from the
    synthetic set's test split: an evaluation dataset with known, imbalanced classes."""
    import shutil

    for cls, videos in CROSS_VIDEOS.items():
        frames = sorted((Path(synthetic_root) / "test" / cls).rglob("*.png"))
        for v in range(videos):
            (root / "test" / cls / f"v{v}").mkdir(parents=True)
            for f in range(CROSS_FRAMES):
                shutil.copyfile(frames[v * CROSS_FRAMES + f], root / "test" / cls / f"v{v}" / f"{f}.png")
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory, synthetic_root):
    """`study run` of a teacher and a VT/KD grid at 10 images x 2 seeds (5 trials, 32 px)."""
    from studies import kill_tree

    tmp = tmp_path_factory.mktemp("serve")
    cross = cross_dataset(tmp / "cross", synthetic_root)
    cfg = tmp / f"{STUDY}.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": STUDY,
        "evaluate": {"video_rule": "max", "frames_per_video": 2,
                     "datasets": [{"name": "other", "kind": "folder", "root": str(cross)}]},
        "data": {"kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32, "seed": 0,
                 "image_size": SIZE},
        "teachers": [{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 1, "batch_size": 64}}],
        "students": {"pairs": ["r->test_resnet"], "methods": ["vt", "kd"], "volumes": [10], "seeds": [0, 1],
                     "hparams": {"epochs": 1, "min_steps": 4}},
        "grid": {"hparams": "paper"},
        "resources": {"cpu": 1},
    }))
    work = tmp / "w"
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", "run", str(cfg), "--workdir", str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # default verbosity
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        kill_tree(proc.pid)  # only if it is still there (a timeout): the driver and its local Ray
    assert proc.returncode == 0, out[-4000:]
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(STUDY).experiment_id
    runs = [r for r in client.search_runs([exp], "tags.kind = 'trial'")]
    return {"work": work, "uri": uri, "client": client, "exp": exp, "runs": runs, "tmp": tmp, "out": out,
            "test": eval_frame(TrialSpec(role="student", arch="test_resnet", data={
                "kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32, "seed": 0}),
                dataset_index({"kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32,
                               "seed": 0}), "test")}


def engine_probs(uri: str, run_id: str, batch: torch.Tensor) -> np.ndarray:
    """What the engine says of `batch` with the run's model/model.pt (read as `study explain` reads it)."""
    from analysis.explain import load_run_model

    model, _arch, _size, _label = load_run_model(uri, run_id, torch.device("cpu"))
    return engine_predict(model, ImageSet(batch, torch.zeros(len(batch), dtype=torch.long)), device="cpu")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_trials_log_models_and_datasets_and_pyfunc_equals_the_engine(study):
    from trainables.data.images import load_images

    from click.testing import CliRunner

    from study.cli import main

    runs, client = study["runs"], study["client"]
    assert {r.data.tags["stage"] for r in runs} == {"teachers", "grid"} and len(runs) == 5
    batch = load_images(list(study["test"]["path"][:24]), SIZE)
    grid = sorted((r for r in runs if r.data.tags["stage"] == "grid"), key=lambda r: r.data.tags["cell"])
    for run in grid:  # a grid trial exports no MLflow model: it is made when first needed
        assert logged_model_of(client, run.info.run_id, study["exp"]) is None, run.data.tags["cell"]
        assert "sys_export_s" not in run.data.metrics
    exported = grid[0].info.run_id  # made by `study export`; `study report --register` makes the others
    result = CliRunner().invoke(main, ["export", "--workdir", str(study["work"]), "--run", exported],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    exported_name = logged_model_of(client, exported, study["exp"]).name
    assert f"runs:/{exported}/{exported_name}" in result.output
    mlflow.set_tracking_uri(study["uri"])
    try:
        for run in runs:
            if run.data.tags["stage"] == "grid" and run.info.run_id != exported:
                continue
            model = logged_model_of(client, run.info.run_id, study["exp"])
            assert model is not None and str(model.status).endswith("READY"), run.data.tags["cell"]
            assert f"models:/{model.model_id}" in result.output or run.data.tags["stage"] == "teachers"
            if run.data.tags["stage"] == "teachers":
                assert run.data.metrics["sys_export_s"] > 0  # the export's seconds, recorded
            inputs = {i.tags[0].value: i.dataset for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
            assert set(inputs) == {"training", "validation", "test"}
            assert inputs["test"].digest == run.data.tags["test_rows"]
            assert inputs["validation"].digest == run.data.tags["val_rows"]
            what = "teacher" if run.data.tags["stage"] == "teachers" else run.data.tags["method"]
            assert model.name.startswith(f"{run.data.tags['study']}-{what}-"), model.name
            pyfunc = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/{model.name}")
            assert pyfunc.metadata.metadata["image_size"] == SIZE
            want = engine_probs(study["uri"], run.info.run_id, batch)
            np.testing.assert_allclose(pyfunc.predict(batch.numpy()), want, rtol=0, atol=1e-5)
    finally:
        mlflow.set_tracking_uri(None)
    teacher = next(r for r in runs if r.data.tags["stage"] == "teachers")
    assert Path(teacher.data.tags["checkpoint_path"]).is_file()  # teacher reuse still reads model.pt
    again = CliRunner().invoke(main, ["export", "--workdir", str(study["work"]), "--run", exported])
    assert again.exit_code == 0 and again.output == result.output  # made once, then found
    assert len([m for m in client.search_logged_models([study["exp"]]) if m.source_run_id == exported]) == 1
    unknown = CliRunner().invoke(main, ["export", "--workdir", str(study["work"]), "--run", "0" * 32])
    assert unknown.exit_code == 2 and "no run with this id" in unknown.output


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_report_registers_the_best_seed_of_each_cell(study, tmp_path):
    from click.testing import CliRunner

    from study.cli import main

    args = ["report", "--workdir", str(study["work"]), "--study", STUDY, "--out", str(tmp_path / "r"), "--register",
            "--format", "md,csv"]
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    client = study["client"]
    grid = [r for r in study["runs"] if r.data.tags["stage"] == "grid"]
    for method in ("vt", "kd"):
        name = f"{STUDY}-synthetic-test_resnet-{method}-10"
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == 1, name
        mine = [r for r in grid if r.data.tags["method"] == method]
        best = max(mine, key=lambda r: (r.data.metrics["val_acc"], -int(r.data.tags["seed"])))
        v = versions[0]
        assert v.run_id == best.info.run_id and v.tags["seed"] == best.data.tags["seed"]
        accs = [r.data.metrics["test_acc"] for r in mine]
        assert float(v.tags["test_acc_mean"]) == pytest.approx(np.mean(accs), abs=1e-6)
        assert float(v.tags["test_acc_std"]) == pytest.approx(np.std(accs, ddof=1), abs=1e-6)
        assert v.tags["n_seeds"] == "2" and "val_acc" in v.tags["selected_by"] and "test_auc_mean" in v.tags
        assert v.source == f"models:/{logged_model_of(client, best.info.run_id, study['exp']).model_id}"
    assert "## Model Registry" in (tmp_path / "r" / "report.md").read_text()
    assert len(pd.read_csv(tmp_path / "r" / "registered.csv")) == 2
    names = [m.name for m in client.search_logged_models([study["exp"]])]  # per cell: told apart by name
    assert len(names) >= 3 and len(set(names)) == len(names), names
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0 and again.output.count("updated:") == 2, again.output
    assert len(client.search_model_versions(f"name = '{STUDY}-synthetic-test_resnet-kd-10'")) == 1


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_study_predict_on_a_run_and_a_registered_model(study, tmp_path):
    import shutil

    from click.testing import CliRunner
    from test_extract import photo_frames, write_video

    from study.cli import main
    from trainables.data.images import load_images

    run = next(r for r in study["runs"] if r.data.tags["stage"] == "grid").info.run_id
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = list(study["test"]["path"][:5])
    for i, p in enumerate(paths):
        shutil.copyfile(p, folder / f"{i}.png")
    (folder / "unreadable.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(main, ["predict", "--workdir", str(study["work"]), "--model", run, "--images",
                                       str(folder), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    table = pd.read_csv(out, keep_default_na=False)
    assert "cannot be decoded" in table[table["path"].str.endswith("unreadable.png")]["reason"].iloc[0]
    ok = table[table["reason"] == ""].sort_values("path")
    want = engine_probs(study["uri"], run, load_images(paths, SIZE))
    np.testing.assert_allclose(ok["fake_prob"].astype(float).to_numpy(), want, rtol=0, atol=1e-5)

    registered = CliRunner().invoke(main, ["report", "--workdir", str(study["work"]), "--study", STUDY, "--out",
                                           str(tmp_path / "r"), "--register", "--format", "csv"])
    assert registered.exit_code == 0, registered.output
    videos = tmp_path / "videos"
    write_video(videos / "face.mp4", photo_frames("astronaut"))
    write_video(videos / "noface.mp4", photo_frames("coffee"))
    out = tmp_path / "v.csv"
    result = CliRunner().invoke(main, ["predict", "--workdir", str(study["work"]), "--model",
                                       f"models:/{STUDY}-synthetic-test_resnet-vt-10/1", "--videos", str(videos),
                                       "--frames-per-video", "2", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    table = pd.read_csv(out, keep_default_na=False).set_index("path")
    assert table.loc[str(videos / "face.mp4"), "frames_scored"] == 2
    assert 0 <= float(table.loc[str(videos / "face.mp4"), "fake_prob"]) <= 1
    assert "no face found" in table.loc[str(videos / "noface.mp4"), "reason"]
    assert (tmp_path / "v_frames.csv").is_file()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mlflow_models_serve(study):
    from studies import kill_tree

    from trainables.data.images import load_images

    run = next(r for r in study["runs"] if r.data.tags["stage"] == "teachers").info.run_id
    name = logged_model_of(MlflowClient(study["uri"]), run, study["exp"]).name
    port = free_port()
    # the server runs `uvicorn` by name: the virtualenv's bin folder must be on PATH (as when it is activated)
    env = {**os.environ, "MLFLOW_TRACKING_URI": study["uri"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{run}/{name}",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()[-3000:]
                assert time.monotonic() < deadline, "mlflow models serve did not answer in 180 s"
                time.sleep(1)
        batch = load_images(list(study["test"]["path"][:4]), SIZE)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"inputs": batch.numpy().tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            got = np.asarray(json.loads(answer.read())["predictions"], dtype=np.float64)
        np.testing.assert_allclose(got, engine_probs(study["uri"], run, batch), rtol=0, atol=1e-5)
    finally:
        kill_tree(proc.pid)
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_teacher_and_grid_runs_are_scored_on_the_evaluation_dataset(study):
    """Every teacher and grid run records cross_other_* on all 15 frames (6 real, 9 fake) and on
    the 5 videos, with the rule and the frame cap on the run; the frame and video metrics differ
    from the in-domain ones (another split)."""
    n = sum(CROSS_VIDEOS.values()) * CROSS_FRAMES
    for run in study["runs"]:
        m, params = run.data.metrics, run.data.params
        assert m["cross_other_n"] == n, run.data.tags["cell"]
        for key in ("acc", "bacc", "auc", "eer", "ap", "video_auc", "video_acc", "video_bacc"):
            assert 0 <= m[f"cross_other_{key}"] <= 1, key
        assert params["evaluate"] == "other" and params["video_rule"] == "max" and params["frames_per_video"] == "2"
        assert len(run.data.tags["cross_other_rows"]) >= 16


LIBRARY_LINE = re.compile(r"^\d{4}-\d\d-\d\d[ ,T][\d:,.]+\s+(INFO|WARNING|DEBUG)|^\[[IWD] \d{4}-|pid=\d+\)|\x1b\[")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_terminal_shows_progress_not_the_libraries_log_lines(study):
    """Without --verbose no Ray, MLflow or Optuna log line (nor a worker's output) reaches the
    terminal; they are in the study's log file, named once at the start."""
    out = study["out"]
    noisy = [line for line in out.splitlines() if LIBRARY_LINE.search(line)]
    assert not noisy, noisy[:5]
    log = study["work"] / "logs" / f"{STUDY}.log"
    assert out.count(str(log)) == 1 and "[teachers] starting" in out and "test accuracy" in out
    text = log.read_text()
    for line in ("Started a local Ray instance", "Token authentication is enabled"):  # Ray's own lines
        assert line not in out and (line in text or "Token" in line), line  # (token auth: Ray >= 2.59 says so)
    assert "Wrote the latest version of all result files" in text and "Creating initial MLflow database" in text
