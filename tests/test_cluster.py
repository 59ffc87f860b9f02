"""A real multi-node Ray cluster on this machine (a head and two worker nodes, each its own
raylet), `study run --address`, and a worker node removed while a trial runs on it.

Each worker node has one CPU and each trial asks for one, so two trials that run at the same
time must run on two nodes. Ray does not run short trials at the same time by itself (a reused
actor may take every trial in turn), so the trials wait for each other before training
(`trainables.tune.BARRIER_ENV`): two of them provably run at once.
"""
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from studies import grid_study, trial_runs

from trainables.tune import BARRIER_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    # set before the nodes start: their raylets, and so the trials' workers, inherit it
    monkeypatch.setenv(BARRIER_ENV, f"2:{tmp_path / 'barrier'}")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # trials only on workers
    try:
        workers = [c.add_node(num_cpus=1) for _ in range(2)]
        c.wait_for_nodes()
        yield c, workers
    finally:
        c.shutdown()  # every raylet and worker this test started


def config(tmp_path: Path, root: Path, name: str, seeds, epochs: int, steps: int = 2) -> Path:
    return grid_study(tmp_path, root, name, seeds, epochs, steps, volume=20,
                      storage_path=str(tmp_path / "shared"),  # the folder every node sees
                      max_failures=2)


def study_cmd(cfg: Path, work: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "study.cli", "run", str(cfg), "--workdir", str(work), "--quiet",
            "--address", address]


def test_trials_land_on_several_nodes(cluster, tmp_path, synthetic_root):
    c, nodes = cluster
    work = tmp_path / "w"
    done = subprocess.run(study_cmd(config(tmp_path, synthetic_root, "spread", range(4), 2), work, c.address),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    runs = trial_runs(work, "spread")
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    # two trials ran at once (the barrier), each needing a node's only CPU: both nodes, never the head
    workers = {n.node_id for n in nodes}
    assert set(runs["tags.node_id"]) == workers


def test_worker_node_dies_mid_trial(cluster, tmp_path, synthetic_root):
    c, workers = cluster
    work = tmp_path / "w"
    undisturbed = subprocess.run(study_cmd(config(tmp_path, synthetic_root, "plain", (0, 1), 6, steps=30), work, c.address),
                                 capture_output=True, text=True, timeout=600)
    assert undisturbed.returncode == 0, undisturbed.stderr[-3000:]

    cfg = config(tmp_path, synthetic_root, "killed", (0, 1), 6, steps=30)
    proc = subprocess.Popen(study_cmd(cfg, work, c.address), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    grid = tmp_path / "shared" / "killed" / "grid"
    deadline = time.time() + 300
    # both trials past their first epoch (older checkpoints are deleted: look for any later one)
    while time.time() < deadline and len({p.parent for p in grid.glob("*/checkpoint_00000[1-4]")}) < 2:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    c.remove_node(workers[0])  # the node and the trial on it are gone mid-training
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:] + err[-3000:]

    a, b = (trial_runs(work, name).sort_values("tags.seed") for name in ("plain", "killed"))
    assert len(b) == 2 and set(b["status"]) == {"FINISHED"} and b["tags.trial_id"].is_unique
    moved = b[b["tags.node_ids"].str.contains(",")]
    assert len(moved) == 1  # one trial finished on the surviving node after its own died
    for metric in ("metrics.test_acc", "metrics.test_auc", "metrics.val_auc", "metrics.train_loss"):
        assert list(a[metric]) == pytest.approx(list(b[metric]), abs=1e-6), metric
    history = mlflow.MlflowClient().get_metric_history(moved["run_id"].iloc[0], "train_loss")
    assert sorted({m.step for m in history}) == list(range(6))
