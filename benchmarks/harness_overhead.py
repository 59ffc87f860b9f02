"""What does the harness (Ray Tune + MLflow callback + checkpoints) cost over plain PyTorch?

    python benchmarks/harness_overhead.py [--smoke]

1. Throughput: the same VT training (test_resnet, 64 px, synthetic data) as a bare PyTorch
   loop in this process, and as a one-trial `study run` grid stage; prints the trial's
   training images/s (measured inside the trial) divided by the bare loop's.
2. Scheduling: 16 short trials, 2 at a time, through a `study run` grid stage; the stage's
   wall time against the same 16 trials run back to back without Ray (`run_trial`),
   halved for the two slots: the rest, per trial, is the harness's overhead.
Ends with `RESULT throughput_ratio=… overhead_s_per_trial=…`.
"""
from __future__ import annotations

import argparse
import math
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
from trainables.models import create_model
from trainables.trial import TrialSpec, dataset_index, image_set, run_trial, training_frame


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
        "students": {"pairs": ["test_resnet"], "methods": ["vt"], "volumes": [volume],
                     "seeds": list(range(seeds)), "hparams": {"epochs": epochs, "batch_size": 32}},
        "grid": {"hparams": "paper"},
        "resources": {"cpu": cpus},  # Ray gives a trial as many torch threads as CPUs it asks for
    }


def run_study(raw: dict, work: Path, max_concurrent: int) -> tuple[float, list]:
    cfg = parse_config(raw, f"<{raw['name']}>", work)
    runner = StudyRunner(cfg, RunOptions(workdir=work, max_concurrent=max_concurrent, verbose=0),
                         echo=lambda _: None)
    summary = runner.run()
    grid = next(s for s in summary.stages if s.name == "grid")
    return grid.seconds, Tracking(cfg.tracking_uri, cfg.name).children("grid", status="FINISHED")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--volume", type=int, default=1000, help="training images of the throughput trial")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        args.volume, args.epochs, args.trials = 40, 1, 4
    tmp = Path(tempfile.mkdtemp(prefix="ckd-harness-"))
    root = str(Path(tempfile.gettempdir()) / "ckd-synthetic-2400-64")

    # 1. throughput of one trial against the bare loop (the bare loop runs twice: warm-up)
    raw = study_config(root, "throughput", args.volume, args.epochs, 1, cpus=torch.get_num_threads())
    data = {k: v for k, v in raw["data"].items() if k != "image_size"}
    spec = TrialSpec(role="student", arch="test_resnet", data=data, image_size=64, volume=args.volume)
    hp = HParams(method="vt", epochs=args.epochs, batch_size=32, seed=0)
    bare_loop(spec, hp.replace(epochs=1))
    bare_ips = bare_loop(spec, hp)
    _, runs = run_study(raw, tmp / "one", 1)
    trial_ips = runs[0].data.metrics["train_images_per_s"]
    print(f"bare PyTorch loop: {bare_ips:.0f} images/s; one-trial study: {trial_ips:.0f} images/s "
          f"(ratio {trial_ips / bare_ips:.3f})")

    # 2. scheduling overhead of N short trials, 2 at a time
    short = study_config(root, "overhead", 20, 1, args.trials)
    work_s = 0.0
    for seed in range(args.trials):
        t0 = time.perf_counter()
        run_trial(TrialSpec(role="student", arch="test_resnet", data=data, image_size=64, volume=20,
                            subset_seed=seed), hp.replace(epochs=1, seed=seed))
        work_s += time.perf_counter() - t0
    stage_s, runs = run_study(short, tmp / "many", 2)
    overhead = (stage_s - work_s / 2) / args.trials
    print(f"{args.trials} trials: stage {stage_s:.1f} s with 2 slots; the same trials without Ray "
          f"{work_s:.1f} s in a row ({work_s / args.trials:.2f} s each); overhead {overhead:.2f} s per trial "
          f"(includes starting the stage's Tuner once)")
    assert len(runs) == args.trials and not math.isnan(overhead)
    print(f"RESULT throughput_ratio={trial_ips / bare_ips:.3f} overhead_s_per_trial={overhead:.3f}")


if __name__ == "__main__":
    main()
