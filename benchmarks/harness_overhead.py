"""What does the harness (Ray Tune + MLflow callback + checkpoints) cost over plain PyTorch?

    python benchmarks/harness_overhead.py [--threads 1] [--repeats 3] [--smoke]

1. Throughput: the same VT training (test_resnet, 64 px, synthetic data) as a bare PyTorch
   loop in this process, and as a one-trial `study run` grid stage; prints the trial's
   training images/s (measured inside the trial) divided by the bare loop's.
2. Scheduling: 16 short trials of 1 CPU, 2 at a time, through a `study run` grid stage;
   the stage's wall time against the same 16 trials run back to back without Ray
   (`run_trial`, 1 torch thread as Ray gives a 1-CPU trial), halved for the two slots: the
   rest, per trial, is the harness's overhead. It is split into the stage's start (Tuner
   and worker processes, before the first MLflow run opens; paid once per stage) and the
   steady per-trial part, of which the grid trial's MLflow model export is shown apart.
Ends with `RESULT throughput_ratio=… overhead_s_per_trial=… stage_start_s=… steady_overhead_s_per_trial=…
export_s_per_trial=… lazy_export_s=…`.
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from study.config import parse_config
from study.runner import RunOptions, StudyRunner
from study.tracking import Tracking
from trainables.engine import batches, flip_batch, set_seed, steps_per_epoch, to_input
from trainables.hparams import HParams
from trainables.losses import baseline_method
from trainables.models import create_model
from trainables.trial import TrialSpec, dataset_index, image_set, run_trial, training_frame

VT = baseline_method()  # vanilla training: what every ratio is taken against


def bare_loop(spec: TrialSpec, hp: HParams) -> float:
    """Images/s of a plain PyTorch loop doing what a VT trial does (no eval, no callbacks)."""
    train = image_set(training_frame(spec, dataset_index(spec.data)), spec.image_size)
    set_seed(hp.seed)
    model = create_model(spec.arch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    gen = torch.Generator().manual_seed(hp.seed)
    steps = steps_per_epoch(len(train), hp) * hp.epochs
    seen, t0 = 0, time.perf_counter()
    for idx in batches(len(train), hp.batch_size, steps, gen):
        flips = torch.rand(len(idx), generator=gen) < 0.5
        _, logits = model(to_input(flip_batch(train.images[idx], flips), torch.device("cpu")))
        loss = F.cross_entropy(logits, train.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(idx)
    return seen / (time.perf_counter() - t0)


def study_config(root: str, name: str, volume: int, epochs: int, seeds: int, cpus: float = 1) -> dict:
    return {
        "name": name,
        "data": {"kind": "synthetic", "root": root, "num_images": 2400, "size": 64, "seed": 0, "image_size": 64},
        "students": {"pairs": ["test_resnet"], "methods": [VT], "volumes": [volume],
                     "seeds": list(range(seeds)), "hparams": {"epochs": epochs, "batch_size": 32}},
        "grid": {"hparams": "paper"},
        "resources": {"cpu": cpus},  # Ray gives a trial as many torch threads as CPUs it asks for
    }


def run_study(raw: dict, work: Path, max_concurrent: int) -> tuple[float, list, object]:
    """The grid stage's seconds, its finished runs and an MLflow client of the study's store."""
    cfg = parse_config(raw, f"<{raw['name']}>", work)
    runner = StudyRunner(cfg, RunOptions(workdir=work, max_concurrent=max_concurrent, verbose=0),
                         echo=lambda _: None)
    summary = runner.run()
    grid = next(s for s in summary.stages if s.name == "grid")
    tracking = Tracking(cfg.tracking_uri, cfg.name)
    return grid.seconds, tracking.children("grid", status="FINISHED"), tracking.client


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volume", type=int, default=1000, help="training images of the throughput trial")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="bare loop / one-trial study alternations")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the bare loop = CPUs of the trial (default 1: the machine's other "
                         "cores keep Ray's own processes off the measured threads)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        args.volume, args.epochs, args.trials, args.repeats = 40, 1, 4, 1
    tmp = Path(tempfile.mkdtemp(prefix="ckd-harness-"))
    root = str(Path(tempfile.gettempdir()) / "ckd-synthetic-2400-64")

    # 1. throughput of one trial against the bare loop, alternated --repeats times (medians)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    raw = study_config(root, "throughput", args.volume, args.epochs, 1, cpus=args.threads)
    data = {k: v for k, v in raw["data"].items() if k != "image_size"}
    spec = TrialSpec(role="student", arch="test_resnet", data=data, image_size=64, volume=args.volume)
    hp = HParams(method=VT, epochs=args.epochs, batch_size=32, seed=0)
    bare_loop(spec, hp.replace(epochs=1))  # warm-up
    bare, trial = [], []
    for r in range(args.repeats):
        bare.append(bare_loop(spec, hp))
        _, runs, _ = run_study({**raw, "name": f"throughput{r}"}, tmp / f"one{r}", 1)
        trial.append(runs[0].data.metrics["train_images_per_s"])
    torch.set_num_threads(threads)
    bare_ips, trial_ips = statistics.median(bare), statistics.median(trial)
    print(f"{args.threads} thread(s), {args.repeats} alternations, medians: bare PyTorch loop {bare_ips:.0f} images/s "
          f"{[round(b) for b in bare]}; one-trial study {trial_ips:.0f} images/s {[round(t) for t in trial]} "
          f"(ratio {trial_ips / bare_ips:.3f})")

    # 2. scheduling overhead of N short trials, 2 at a time, each asking for 1 CPU (1 torch thread)
    short = study_config(root, "overhead", 20, 1, args.trials)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what Ray gives a trial of `cpu: 1`
    work_s = 0.0
    try:
        for seed in range(-1, args.trials):  # seed -1: warm-up (decoding the data once, as each worker does)
            t0 = time.perf_counter()
            run_trial(TrialSpec(role="student", arch="test_resnet", data=data, image_size=64, volume=20,
                                subset_seed=max(seed, 0)), hp.replace(epochs=1, seed=max(seed, 0)))
            work_s += (time.perf_counter() - t0) if seed >= 0 else 0.0
    finally:
        torch.set_num_threads(threads)
    stage_s, runs, client = run_study(short, tmp / "many", 2)
    assert len(runs) == args.trials
    # MLflow runs open when a trial starts and close when it ends: before the first one opens,
    # the stage starts its Tuner and the trials' worker processes (imports of torch, timm, ...)
    span_s = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
    overhead = (stage_s - work_s / 2) / args.trials
    steady = (span_s - work_s / 2) / args.trials
    print(f"{args.trials} trials of 1 CPU: stage {stage_s:.1f} s with 2 slots; the same trials without Ray "
          f"{work_s:.1f} s in a row at 1 thread ({work_s / args.trials:.2f} s each), {work_s / 2:.1f} s on 2 slots")
    print(f"  stage start (Tuner, worker processes and their imports) {stage_s - span_s:.1f} s; then "
          f"{steady:.2f} s per trial beyond its own work")
    print(f"  overhead {overhead:.2f} s per trial, the stage start shared by the {args.trials} trials")
    # a grid trial exports no MLflow model (0 here; a version that did records its seconds): it is
    # made on first use (study.logged_model.ensure_logged_model), timed here once, in this process
    export = sorted(r.data.metrics.get("sys_export_s", 0.0) for r in runs)
    print(f"  of which the MLflow model export in the trial: {statistics.mean(export):.2f} s per trial "
          f"(median {statistics.median(export):.2f} s, slowest {export[-1]:.2f} s)")
    from study.logged_model import ensure_logged_model

    t0 = time.perf_counter()
    ensure_logged_model(client, runs[0].info.run_id)
    lazy_s = time.perf_counter() - t0
    print(f"  a grid model exported on first use (`study export`, predict, register): {lazy_s:.2f} s, once per "
          "model used")
    assert not math.isnan(overhead)
    print(f"RESULT throughput_ratio={trial_ips / bare_ips:.3f} overhead_s_per_trial={overhead:.3f} "
          f"stage_start_s={stage_s - span_s:.2f} steady_overhead_s_per_trial={steady:.3f} "
          f"export_s_per_trial={statistics.mean(export):.3f} lazy_export_s={lazy_s:.3f}")


if __name__ == "__main__":
    main()
