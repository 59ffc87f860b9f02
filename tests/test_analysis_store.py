"""A small MLflow store written as `study run` writes one: the parent run through
`study.tracking.Tracking`, every trial through the real `MLflowTrialCallback` (driven
without Ray by stand-in trials) from a planned `study.plan.Cell`; shared by the analysis
tests, and the tests of reading it back (`analysis.runs`). So what the report reads is what
a study writes: the same tag schema, params and metrics.

Study `demo` (FF++ Deepfakes, pair xception->efficientnet, seeds 0-2):
    volume 100: VT [.80 .82 .78], KD [.81 .84 .80], CKD [.85 .86 .83]; volume 10: VT [.55], CKD [.60]
    test_auc = test_acc + 0.01; a teachers-stage efficientnet_b0 run (full VT) at 0.97;
    an older duplicate of CKD/100/seed 2 (0.10, must be dropped); a FAILED KD run; sweep runs
    without test metrics; ablations: efficiency (2 students x 3 volumes x 2 seeds), K (3 values x 2 seeds).
Study `ens` (Celeb-DF, CKD at 100, seeds 0-1): efficientnet->mobilenet [.77 .79],
    xception+efficientnet->mobilenet [.80 .80].
Study `quick` (synthetic source): resnet->test_efficientnet VT [.70 .74], CKD [.75 .80] at volume 100,
    and a teachers-stage test_resnet run (image_size 32) with a `model/model.pt` artifact.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from analysis.runs import cast_param, load_study, metric_history, runs_frame, tracking_uri
from study.plan import Cell
from study.tracking import MLflowTrialCallback, Tracking
from trainables.errors import UserError
from trainables.losses import needs_teachers
from trainables.models import create_model, save_checkpoint
from trainables.record import RunTags
from trainables.trial import TeacherRef, TrialSpec

T0 = 1_700_000_000_000
_CACHE: dict[str, dict] = {}

DEMO = {("vt", "100"): [0.80, 0.82, 0.78], ("kd", "100"): [0.81, 0.84, 0.80],
        ("ckd", "100"): [0.85, 0.86, 0.83], ("vt", "10"): [0.55], ("ckd", "10"): [0.60]}
ENS = {"efficientnet->mobilenet": [0.77, 0.79], "xception+efficientnet->mobilenet": [0.80, 0.80]}


class Writer:
    """One study, written through the real tracking code."""

    def __init__(self, uri: str, study: str):
        self.tracking = Tracking(uri, study)
        self.parent = self.tracking.start_parent("abc123", f"name: {study}\n# the demo config\n", "deadbee")
        self.tracking.end_parent(self.parent, "FINISHED")
        self.callback = MLflowTrialCallback(uri, self.tracking.experiment_id, self.parent, study,
                                            log_models=True, code_version="deadbee")
        self.trials = 0

    def trial(self, stage, source, pair, method, volume, seed, arch, metrics, *, status="FINISHED",
              trial_id=None, k=32, extra=None, history=(), checkpoint=None) -> str:
        """A planned cell, run through the callback's hooks as Ray would call them."""
        self.trials += 1
        teachers, student = pair.rsplit("->", 1)
        distils = needs_teachers(method)
        vol = None if volume == "full" else int(volume)
        spec = TrialSpec(role="teacher" if stage == "teachers" else "student", arch=arch,
                         data={"kind": "synthetic", "root": "/nowhere"}, image_size=32, volume=vol, subset_seed=seed,
                         teachers=tuple(TeacherRef("x", f"/nowhere/{t}.pt") for t in teachers.split("+"))
                         if distils else ())
        hp = {"method": method, "epochs": 3, "lr": 0.001, "lam": 0.1, "seed": seed,
              **({"tau": 0.05, "k": k, "symmetric": False} if method == "ckd" else {})}
        tags = RunTags(stage=stage, source=source, method=method, student=student, seed=seed, volume=vol,
                       cell=f"{source}/{pair}/{method}/{volume}/{seed}", teachers=teachers if distils else "",
                       pair=pair, **(extra or {}))
        trial = SimpleNamespace(trial_id=trial_id or f"t{self.trials:04d}",
                                config={"cell": Cell(stage, spec, hp, tags).config()}, checkpoint=checkpoint,
                                get_error=lambda: "Traceback (most recent call last):\nRuntimeError: boom")
        self.callback.on_trial_start(0, [], trial)
        for step, values in enumerate(history):
            self.callback.on_trial_result(0, [], trial, {**values, "epoch": step})
        self.callback.on_trial_result(0, [], trial, dict(metrics))
        run_id = self.callback.run_id(trial)
        if status == "FINISHED":
            self.callback.on_trial_complete(0, [], trial)
        else:
            self.callback.on_trial_error(0, [], trial)
        return run_id


def acc_auc(acc: float) -> dict:
    return {"test_acc": acc, "test_auc": acc + 0.01, "epoch": 2}


def build_store(root: Path) -> dict:
    uri = tracking_uri(root)
    ids: dict = {"uri": uri, "root": root}

    w = Writer(uri, "demo")
    src, pair = "Deepfakes", "xception->efficientnet"
    curve = [{"train_loss": 1.0 + 0.1 * step, "train_ce": 0.6 + 0.1 * step, "val_acc": 0.5 + 0.1 * step,
              "val_auc": 0.55 + 0.1 * step} for step in range(3)]
    for (method, volume), values in DEMO.items():
        for seed, acc in enumerate(values):
            tid = f"{method}-{volume}-{seed}"
            ids[(method, volume, seed)] = w.trial("grid", src, pair, method, volume, seed, "efficientnet_b0",
                                                  acc_auc(acc), trial_id=tid,
                                                  history=curve if (method, volume, seed) == ("ckd", "100", 0) else ())
            if (method, volume, seed) == ("ckd", "100", 2):  # a resume left an older run of this trial
                client = w.tracking.client
                old = client.get_run(ids[(method, volume, seed)])
                stale = client.create_run(w.tracking.experiment_id, start_time=T0, tags=old.data.tags)
                client.log_batch(stale.info.run_id, metrics=[Metric("test_acc", 0.10, T0, 2)])
                client.set_terminated(stale.info.run_id, "FINISHED")
                ids["stale"] = stale.info.run_id
    ids["failed"] = w.trial("grid", src, pair, "kd", "100", 3, "efficientnet_b0", {"epoch": 0}, status="FAILED")
    for name, arch, acc in (("xception", "legacy_xception", 0.99), ("efficientnet", "efficientnet_b0", 0.97)):
        w.trial("teachers", src, f"->{name}", "vt", "full", 0, arch, acc_auc(acc), extra={"teacher_name": name})
    for i in range(2):
        w.trial("sweep", src, pair, "ckd", "100", 0, "efficientnet_b0", {"val_auc": 0.7 + i / 10, "epoch": 2},
                extra={"space": "ckd"})
    for student, arch, base in (("efficientnet", "efficientnet_b0", 0.6), ("mobilenet", "mobilenetv3_large_100", 0.5)):
        for v_i, volume in enumerate((10, 100, 400)):
            for seed in (0, 1):
                w.trial("ablations", src, f"->{student}", "vt", volume, seed, arch,
                        acc_auc(base + 0.1 * v_i + 0.02 * seed), extra={"ablation": "efficiency"})
    for k_i, k in enumerate((4, 16, 64)):
        for seed in (0, 1):
            w.trial("ablations", src, pair, "ckd", 100, seed, "efficientnet_b0", acc_auc(0.80 + 0.01 * k_i + 0.01 * seed),
                    k=k, extra={"ablation": "k", "k": k})
    ids["curve"] = ids[("ckd", "100", 0)]

    e = Writer(uri, "ens")
    for pair, values in ENS.items():
        for seed, acc in enumerate(values):
            ids[("ens", pair, seed)] = e.trial("grid", "Celeb-DF", pair, "ckd", "100", seed,
                                               "mobilenetv3_large_100", acc_auc(acc))

    q = Writer(uri, "quick")
    for method, values in (("vt", [0.70, 0.74]), ("ckd", [0.75, 0.80])):
        for seed, acc in enumerate(values):
            q.trial("grid", "synthetic", "resnet->test_efficientnet", method, "100", seed, "test_efficientnet",
                    acc_auc(acc))
    # a teacher with its checkpoint (Fig. 3): a tiny test_resnet at 32 px, logged by the callback
    from ray import tune

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(create_model("test_resnet"), Path(d) / "model.pt")
        ids["teacher"] = q.trial("teachers", "synthetic", "->resnet", "vt", "full", 0, "test_resnet", acc_auc(0.9),
                                 extra={"teacher_name": "resnet"}, checkpoint=tune.Checkpoint.from_directory(d))
    MlflowClient(tracking_uri=uri).create_experiment("empty")
    return ids


def _fast_dir(tmp_path_factory) -> Path:
    """SQLite syncs every MLflow write to disk (~20 ms each, 10 s for this store): in RAM where we can."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="ckd-analysis-", dir=shm))
        atexit.register(shutil.rmtree, path, True)
        return path
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def store(tmp_path_factory) -> dict:
    """Built once per session, whichever test module asks first."""
    if "store" not in _CACHE:
        _CACHE["store"] = build_store(_fast_dir(tmp_path_factory))
    return _CACHE["store"]


# --- analysis.runs ------------------------------------------------------------------------

def test_params_are_cast():
    assert cast_param("10") == 10 and isinstance(cast_param("10"), int)
    assert cast_param("0.05") == 0.05 and cast_param("1e-3") == 0.001
    assert cast_param("True") is True and cast_param("False") is False
    assert cast_param("None") is None and cast_param("xception") == "xception"


def test_runs_frame_one_row_per_trial_latest_kept(store):
    runs = load_study(store["uri"], "demo").runs
    grid = runs[runs["stage"] == "grid"]
    assert len(grid) == 3 + 3 + 3 + 1 + 1 + 1  # 11 trials + the FAILED one; the stale duplicate dropped
    assert store["stale"] not in set(runs["run_id"])
    row = runs[runs["run_id"] == store[("ckd", "100", 2)]].iloc[0]
    assert row["test_acc"] == pytest.approx(0.83)
    assert row["p_k"] == 32 and row["k"] == 32 and row["p_tau"] == 0.05 and not row["p_symmetric"]
    assert row["seed"] == 2 and row["volume"] == "100" and row["volume_n"] == 100
    assert row["arch"] == "efficientnet_b0" and row["image_size"] == 32
    failed = runs[runs["status"] == "FAILED"].iloc[0]
    assert failed["error"] == "RuntimeError: boom"


def test_parent_config_and_code_version(store):
    parent = load_study(store["uri"], "demo").parent
    assert parent.tags["code_version"] == "deadbee"
    assert parent.config_text.startswith("name: demo")


def test_metric_history_per_epoch(store):
    hist = metric_history(store["uri"], store["curve"])
    val = hist[hist["key"] == "val_acc"]
    assert val["step"].tolist() == [0, 1, 2]
    assert val["value"].tolist() == pytest.approx([0.5, 0.6, 0.7])


def test_unknown_empty_and_ambiguous_studies_are_clear_errors(store, tmp_path):
    uri = store["uri"]
    with pytest.raises(UserError, match=r"study 'nope' not found at tracking URI sqlite:///.*mlflow.db"):
        load_study(uri, "nope")
    with pytest.raises(UserError, match="study 'empty' at tracking URI .* has no trial runs"):
        load_study(uri, "empty")
    with pytest.raises(UserError, match=r"holds studies \['demo', 'empty', 'ens', 'quick'\]: choose one"):
        load_study(uri, None)
    missing = tracking_uri(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no MLflow store at"):
        load_study(missing, "demo")
    assert not (tmp_path / "nowhere").exists()  # reading never creates a DB


def test_runs_frame_of_nothing_is_empty():
    assert runs_frame([]).empty


def _sqlite_db(path, rows=2000):
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(str(path))) as conn:
        conn.execute("create table runs (id integer primary key, name text)")
        conn.executemany("insert into runs (name) values (?)", [(f"run {i} " + "x" * 200,) for i in range(rows)])
        conn.commit()
    return path


def _damage(path):
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 4096):  # every page after the first: its header scribbled over
        data[offset:offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


def test_snapshots_of_a_sqlite_store_are_consistent_and_the_newest_kept(tmp_path, monkeypatch):
    import sqlite3
    import time as _time
    from contextlib import closing

    from analysis.store import snapshot_sqlite, snapshots_of

    db = _sqlite_db(tmp_path / "mlflow.db")
    made = []
    for i in range(5):
        monkeypatch.setattr(_time, "strftime", lambda fmt, i=i: f"2026120{i}-000000")
        made.append(snapshot_sqlite(f"sqlite:///{db}", f"stage{i}", keep=3))
    kept = snapshots_of(db)
    assert [p.name for p in kept] == [p.name for p in made[2:]]
    with closing(sqlite3.connect(str(kept[-1]))) as conn:
        assert conn.execute("select count(*) from runs").fetchone()[0] == 2000
    assert snapshot_sqlite("http://127.0.0.1:5000", "grid") is None  # only SQLite stores


def test_a_damaged_store_is_exit_2_naming_the_file_and_its_latest_snapshot(tmp_path):
    from click.testing import CliRunner

    from analysis.store import snapshot_sqlite
    from study.cli import main

    db = _sqlite_db(tmp_path / "mlflow.db")
    snap = snapshot_sqlite(f"sqlite:///{db}", "grid")
    _damage(db)
    for argv in (["status", "--workdir", str(tmp_path)], ["report", "--workdir", str(tmp_path), "--out",
                                                            str(tmp_path / "r")]):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2, result.output
        assert f"the MLflow store {db} is damaged" in result.output and f"cp {snap} {db}" in result.output


@pytest.mark.parametrize("before", [None, "true"])
def test_downloads_show_no_progress_bar_and_the_setting_is_put_back(monkeypatch, before):
    from trainables.env import PROGRESS_BAR_ENV, no_download_bars

    if before is None:
        monkeypatch.delenv(PROGRESS_BAR_ENV, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_BAR_ENV, before)
    with pytest.raises(RuntimeError):
        with no_download_bars():
            assert os.environ[PROGRESS_BAR_ENV] == "false"
            raise RuntimeError("a failed download")
    assert os.environ.get(PROGRESS_BAR_ENV) == before
