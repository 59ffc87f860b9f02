"""A quick CLI: `study --help`, `study run --help` and a config error answer in a fraction of a
second, because they import none of torch, timm, Ray, MLflow, Optuna, pandas or matplotlib
(those are imported where used: by the runner, once the config is valid, and by the reports)."""
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

HEAVY = ("torch", "timm", "ray", "mlflow", "optuna", "pandas", "matplotlib")

# Measured on 2 shared cores (load 1 to 10): `study run <bad config>` takes 4-6x `python -c pass`
# (0.09-0.23 s against 0.02-0.04 s); it was ~300x (6.4 s) when validation imported torch, timm and
# MLflow. Importing pandas alone would make it about 20x, MLflow 65x, torch 80x: the sys.modules
# test below names any of those; this bound only catches a gross regression, robust to load.
MAX_RATIO = 20


def bad_config(tmp_path, **students) -> str:
    raw = {
        "name": "speed",
        "data": {"kind": "synthetic", "root": str(tmp_path / "d"), "num_images": 40, "size": 32},
        "teachers": [{"name": "r", "arch": "test_resnet"}],
        "students": {"pairs": ["r->test_resnet"], "methods": ["vt", "ckd"], "volumes": [10], **students},
        "grid": {"hparams": "paper"},
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def imported_after(argv: list[str]) -> tuple[int, list[str], str]:
    """Run `study <argv>` in a fresh interpreter; its exit code, the heavy packages it imported, its stderr."""
    code = textwrap.dedent(f"""
        import json, sys
        from study.cli import main
        try:
            main({argv!r})
            rc = 0
        except SystemExit as exc:
            rc = exc.code
        print(json.dumps([rc, sorted(m for m in {HEAVY!r} if m in sys.modules)]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    rc, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    return rc, heavy, done.stderr


@pytest.mark.parametrize("argv,students,message", [
    (["--help"], None, ""),
    (["run", "--help"], None, ""),
    (["run"], {"methods": ["vt", "dkd"]}, "students.methods[1]='dkd'"),
    (["run"], {"hparams": {"ckd": {"tau": -1.0}}}, "tau=-1.0 must be > 0"),
    (["run", "--set", "students.seeds=[-1]"], {}, "--set students.seeds=[-1]"),
    (["run", "--set", "studnets.seeds=[0]"], {}, "'studnets' is not a section"),
], ids=["help", "run-help", "bad-method", "bad-hparam", "bad-override-value", "bad-override-key"])
def test_help_and_config_errors_import_no_heavy_package(argv, students, message, tmp_path):
    if students is not None:  # `study run <bad config> ...`
        argv = ["run", bad_config(tmp_path, **students), *argv[1:], "--workdir", str(tmp_path / "w")]
    rc, heavy, stderr = imported_after(argv)
    assert heavy == []
    assert rc == (0 if students is None else 2), stderr
    assert message in stderr
    assert not (tmp_path / "w").exists()


def test_a_valid_config_loads_timm_once_for_its_model_list_then_nothing_heavy(tmp_path):
    """Validating a whole config looks its model names up in timm's list of models, which the
    first call makes (importing timm, and so torch) and caches per timm version; every later
    validation, and `study plan`, imports none of torch, timm, Ray, MLflow, Optuna."""
    code = textwrap.dedent(f"""
        import json, sys
        from study.config import load_config
        load_config({bad_config(tmp_path)!r}, {str(tmp_path / "w")!r})
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
    """)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    seen = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        seen.append(set(json.loads(done.stdout.strip().splitlines()[-1])))
    assert "timm" in seen[0] and not seen[0] & {"ray", "mlflow", "optuna", "matplotlib"}
    assert seen[1] == set() and list((tmp_path / "cache" / "ckd-study").glob("timm-*-models.txt"))


def best_times(commands: list[list[str]], rounds: int = 5) -> list[float]:
    """The fastest of `rounds` wall times of each command, measured in turn (a load that comes
    and goes slows them alike)."""
    best = [float("inf")] * len(commands)
    for _ in range(rounds):
        for i, cmd in enumerate(commands):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, timeout=120)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def test_a_config_error_costs_a_few_interpreter_starts(tmp_path):
    config = bad_config(tmp_path, methods=["vt", "dkd"])
    python, error = best_times([
        [sys.executable, "-c", "pass"],
        [sys.executable, "-m", "study.cli", "run", config, "--workdir", str(tmp_path / "w")],
    ])
    ratio = error / python
    print(f"python -c pass {python:.3f} s; study run <bad config> {error:.3f} s; ratio {ratio:.1f}")
    assert ratio < MAX_RATIO, (
        f"`study run <bad config>` took {error:.2f} s, {ratio:.0f}x `python -c pass` ({python:.3f} s): "
        f"something on the config path imports a heavy package again (python -X importtime shows which)")


@pytest.mark.parametrize("case", ["bad-reference", "empty-folder"])
def test_predict_refuses_a_bad_reference_or_an_empty_folder_before_importing_anything_heavy(case, tmp_path):
    """`study predict` names a malformed --model or a folder without images without importing
    torch, MLflow or the model: exit 2, as fast as a config error."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    if case == "bad-reference":
        (folder / "face.png").write_bytes(b"")
    ref = "nosuch" if case == "bad-reference" else "0" * 32
    rc, heavy, stderr = imported_after(["predict", "--model", ref, "--images", str(folder),
                                        "--out", str(tmp_path / "p.csv"), "--workdir", str(tmp_path / "w")])
    assert rc == 2 and heavy == [], (rc, heavy, stderr)
    assert ("give a run id" if case == "bad-reference" else "no images found") in stderr
    assert not (tmp_path / "w").exists() and not (tmp_path / "p.csv").exists()


def test_a_predict_refusal_costs_a_few_interpreter_starts(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    python, refusal = best_times([
        [sys.executable, "-c", "pass"],
        [sys.executable, "-m", "study.cli", "predict", "--model", "nosuch", "--images", str(folder),
         "--out", str(tmp_path / "p.csv")],
    ])
    ratio = refusal / python
    print(f"python -c pass {python:.3f} s; study predict <bad model> {refusal:.3f} s; ratio {ratio:.1f}")
    assert ratio < MAX_RATIO, f"`study predict --model nosuch` took {refusal:.2f} s, {ratio:.0f}x `python -c pass`"


def test_study_plan_of_every_shipped_config_imports_nothing_heavy_and_costs_a_few_interpreter_starts(tmp_path):
    """`study plan` reads, checks and plans a config with neither torch nor Ray: every shipped
    config (real datasets' roots pointed at an empty folder) plans, exit 0, importing none of
    the heavy packages; its time is a few interpreter starts (a ratio, not an absolute time)."""
    from test_study_config import SHIPPED, shipped_raw

    from trainables.model_names import timm_models
    timm_models()  # timm's model list, cached as any first validation caches it
    paths = []
    for shipped in SHIPPED:
        path = tmp_path / shipped.name
        path.write_text(yaml.safe_dump(shipped_raw(shipped, tmp_path), sort_keys=False))
        paths.append(path)
        rc, heavy, stderr = imported_after(["plan", str(path), "--workdir", str(tmp_path / "w")])
        assert rc == 0 and heavy == [], (shipped.name, rc, heavy, stderr)
    assert not (tmp_path / "w").exists()  # nothing written
    python, plan = best_times([[sys.executable, "-c", "pass"],
                               [sys.executable, "-m", "study.cli", "plan", str(paths[0]), "--workdir",
                                str(tmp_path / "w")]], rounds=3)
    print(f"python -c pass {python:.3f} s; study plan {paths[0].name} {plan:.3f} s; ratio {plan / python:.1f}")
    assert plan / python < MAX_RATIO
