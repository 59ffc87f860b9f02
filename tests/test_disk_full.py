"""The disk-full drill: a study whose workdir fills up mid-study stops within a minute with
exit 2, naming the full disk and what to do, with no traceback on the terminal; once space is
freed, `--resume` finishes it with nothing lost or duplicated. The workdir is a small tmpfs of
its own (mounted by the test where it may mount; skipped with the reason where it cannot)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SIZE_MB = 40
LEFT_KB = 1500  # what the filler leaves: room to start, not to finish


@pytest.fixture
def small_disk(tmp_path):
    """A SIZE_MB tmpfs at tmp_path/w, unmounted (by its path: only what this test mounted) after."""
    where = tmp_path / "w"
    where.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root and mount(8): the drill cannot run here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()[:200]}): the drill cannot run")
    try:
        yield where
    finally:
        _unmount(where)
        assert not os.path.ismount(where), f"{where} is still mounted"


def _unmount(where: Path) -> None:
    """Unmount what the fixture mounted: the study's processes may hold a file there a few
    seconds after its driver exits, so try for a while, then detach it lazily (the kernel frees
    it when the last file closes) rather than leave it mounted."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode == 0:
            return
        time.sleep(1)
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _run(config: Path, work: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "study.cli", "run", str(config), "--workdir", str(work), "--quiet",
                           *args], capture_output=True, text=True, timeout=600, cwd=work.parent)
    return done, time.monotonic() - t0


def test_a_full_disk_stops_the_study_with_exit_2_and_resume_finishes_it(small_disk, synthetic_root, tmp_path):
    config = tmp_path / "drill.yaml"
    config.write_text(yaml.safe_dump({
        "name": "drill",
        "data": {"kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32, "seed": 0,
                 "image_size": 32},
        "teachers": [{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 1}}],
        "students": {"pairs": ["r->test_resnet"], "methods": ["vt", "kd"], "volumes": [10], "seeds": [0, 1, 2],
                     "hparams": {"epochs": 2}},
        "grid": {"hparams": "paper"}, "resources": {"cpu": 1},
    }))
    done, _ = _run(config, small_disk, "--stage", "teachers")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    filler = small_disk / "filler"
    free_kb = shutil.disk_usage(small_disk).free // 1024
    with open(filler, "wb") as f:  # the disk fills up: LEFT_KB are left
        f.truncate(0)
        chunk = b"\0" * (1024 * 1024)
        for _ in range((free_kb - LEFT_KB) // 1024):
            f.write(chunk)
    done, seconds = _run(config, small_disk, "--resume")
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    assert "[grid]" in done.stdout  # it filled up mid-study, not before the first stage
    assert seconds < 90, f"the full disk took {seconds:.0f} s to stop the study"
    assert "no space left on the disk of" in done.stderr and "--resume" in done.stderr
    assert "Traceback" not in out and "Logging error" not in out
    assert "[sweep]" not in done.stdout  # nothing swept: no sweep stage (an empty one once broke its resume)

    filler.unlink()  # space freed: the study finishes, nothing run twice
    done, _ = _run(config, small_disk, "--resume")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    mlflow.set_tracking_uri(f"sqlite:///{small_disk / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(experiment_names=["drill"])
    finally:
        mlflow.set_tracking_uri(None)
    trials = runs[runs["tags.kind"] == "trial"]
    finished = trials[trials["status"] == "FINISHED"]
    assert (finished["tags.stage"] == "grid").sum() == 6  # VT and KD x 3 seeds
    assert not finished["tags.trial_id"].duplicated().any()
    assert set(trials["status"]) <= {"FINISHED", "FAILED", "KILLED"}  # nothing left RUNNING
