"""Small VT-only grid studies on the shared synthetic data, and their trial runs, for the
tests that start `study run` in a subprocess (cluster, reliability); and how such a test ends
the processes it started."""
import signal
from pathlib import Path

import mlflow
import psutil
import yaml


def grid_study(tmp_path: Path, root: Path, name: str, seeds, epochs: int, steps: int, *,
               volume: int, **top) -> Path:
    """Write `<name>.yaml`: test_resnet alone (VT) at `volume` images, one trial per seed,
    at least `steps` steps an epoch; `top` adds top-level keys (resources, storage_path, …)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name,
        "data": {"kind": "synthetic", "root": str(root), "num_images": 480, "size": 32, "seed": 0, "image_size": 32},
        "students": {"pairs": ["test_resnet"], "methods": ["vt"], "volumes": [volume], "seeds": list(seeds),
                     "hparams": {"epochs": epochs, "min_steps": steps * epochs}},
        "grid": {"hparams": "paper"},
        **top,
    }))
    return path


def trial_runs(work: Path, name: str):
    """The study's trial runs (an empty frame while there is no run yet)."""
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    frame = mlflow.search_runs(experiment_names=[name])
    if "tags.kind" not in frame.columns:  # no run yet (the frame has no tag columns then)
        return frame
    return frame[frame["tags.kind"] == "trial"]


def kill_tree(pid: int) -> None:
    """SIGKILL process `pid` and every process it started (a driver's local Ray: GCS, raylet,
    dashboard, workers), found by parent id, never by name. The tree is read before the kill,
    and the survivors' children again after it: an orphan's parent id becomes 1."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    _kill(tree)
    late = []  # started by a descendant between the read and its kill
    for proc in tree[1:]:
        try:
            late += proc.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    _kill(late)
    psutil.wait_procs(tree[1:] + late, timeout=30)  # not the root: its Popen reaps it (and its exit code)


def _kill(procs) -> None:
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
