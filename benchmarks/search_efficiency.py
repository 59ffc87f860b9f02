"""Does Optuna TPE + ASHA find better hyperparameters for fewer epochs than random or grid search?

    python benchmarks/search_efficiency.py [--method ckd] [--trials 12] [--volume 100] [--epochs 12]
        [--grid-axes tau lam k] [--metric val_auc]
    python benchmarks/search_efficiency.py --smoke      # tiny sizes, about a minute

On the synthetic dataset (2400 images, 64 px, CPU) a `test_resnet` teacher is trained
once on the full train split (`run_trial`, role teacher) and saved; then one method
(default CKD, student `test_resnet` on a balanced subset of --volume images) is tuned
three ways with Ray Tune, each given --trials trials, through the study's own trainable
(`trainables.tune.train_trial` through `study.tuner.make_tuner`, configs built as a sweep cell: `study.plan.Cell`):
- tpe_asha: the study's sweep: `OptunaSearch` (TPE) over `search_spaces.get_space` with
  ASHA (grace --grace-period epochs, reduction factor 2) stopping weak trials early;
- random:   the same space sampled by Optuna's `RandomSampler`, every trial to the end;
- grid:     a grid over the space's main axes (default its first three parameters, for
            CKD tau x lam x k), levels at the centres of equal bins of each range (log
            ranges in log space), as many points as --trials; the other parameters keep
            their defaults (the paper's); every trial to the end.
Prints, for each, the best validation metric (--metric; among trials that ran every epoch,
which is what the study picks) and that trial's val_acc, the best of any trial, the
trial-epochs spent (sum of `training_iteration`) and the wall time. Ray runs locally with
2 CPUs (`--cpus`), one trial per CPU; everything is written to a temporary folder.
Each search runs once per searcher seed (--seeds, default 3: --seed, --seed + 1, …); the grid
does not depend on it (the students' own seed is fixed), so it runs once and counts for each. Ends with `RESULT
tpe_asha_best=… random_best=… grid_best=… tpe_asha_best_std=… random_best_std=… grid_best_std=…
tpe_asha_epochs=… random_epochs=… grid_epochs=… seeds=N` (means and sample standard deviations
over the seeds).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import optuna  # noqa: E402
import ray  # noqa: E402
from optuna.distributions import CategoricalDistribution, IntDistribution  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from search_spaces import get_space  # noqa: E402
from study.plan import Cell  # noqa: E402
from study.tuner import make_tuner  # noqa: E402
from trainables.data import read_index  # noqa: E402
from trainables.hparams import HParams  # noqa: E402
from trainables.losses import baseline_method  # noqa: E402
from trainables.models import save_checkpoint  # noqa: E402
from trainables.record import RunTags  # noqa: E402
from trainables.trial import TeacherRef, TrialSpec, run_trial  # noqa: E402

VT = baseline_method()  # vanilla training: what every ratio is taken against

SEARCHES = ("tpe_asha", "random", "grid")
# without the auto loggers (off above) Tune warns that result.json is missing: metrics come from memory
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


# --- the grid: levels over the space's own ranges -------------------------------------
def space_distributions(space) -> tuple[dict[str, Any], dict[str, Any]]:
    """The distributions a define-by-run space declares (in order) and the constants it returns."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study().ask()
    constants = space(trial) or {}
    return dict(trial.distributions), constants


def levels(dist, n: int) -> list:
    """n values spread over a distribution: centres of n equal bins (log bins for log ranges)."""
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        return [choices[min(len(choices) - 1, round((i + 0.5) * len(choices) / n - 0.5))] for i in range(n)]
    lo, hi = (math.log(dist.low), math.log(dist.high)) if dist.log else (dist.low, dist.high)
    pts = [lo + (i + 0.5) * (hi - lo) / n for i in range(n)]
    pts = [math.exp(p) for p in pts] if dist.log else pts
    if isinstance(dist, IntDistribution):
        return sorted({int(round(p)) for p in pts})
    return [float(f"{p:.4g}") for p in pts]


def capacity(dist) -> float:
    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices)
    if isinstance(dist, IntDistribution):
        return dist.high - dist.low + 1
    return math.inf


def prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def grid_points(dists: dict[str, Any], axes: list[str], trials: int) -> dict[str, list]:
    """Levels per axis whose product is `trials`: each prime factor, largest first, goes to
    the axis with the fewest levels that can still hold it."""
    missing = [a for a in axes if a not in dists]
    if missing:
        raise SystemExit(f"--grid-axes {missing} are not parameters of the space ({list(dists)})")
    counts = {a: 1 for a in axes}
    for f in sorted(prime_factors(trials), reverse=True):
        fits = [a for a in axes if counts[a] * f <= capacity(dists[a])]
        if not fits:
            raise SystemExit(f"cannot split {trials} trials over the grid axes {axes}: choose another --trials")
        axis = min(fits, key=lambda a: counts[a])
        counts[axis] *= f
    return {a: levels(dists[a], counts[a]) for a in axes}


# --- one search ---------------------------------------------------------------------------
def run_search(kind: str, cell: dict, space, args, storage: Path) -> dict[str, Any]:
    epochs = HParams.from_dict(cell["hparams"]).epochs
    search_alg, scheduler, num_samples = None, FIFOScheduler(), args.trials
    param_space: dict[str, Any] = {"cell": cell}
    if kind == "tpe_asha":
        search_alg = OptunaSearch(space=space, metric=args.metric, mode="max", seed=args.seed)
        scheduler = ASHAScheduler(metric=args.metric, mode="max", max_t=epochs,
                                  grace_period=min(args.grace_period, epochs), reduction_factor=2)
    elif kind == "random":
        search_alg = OptunaSearch(space=space, metric=args.metric, mode="max",
                                  sampler=optuna.samplers.RandomSampler(seed=args.seed))
    else:
        dists, constants = space_distributions(space)
        axes = args.grid_axes or list(dists)[:3]
        points = grid_points(dists, axes, args.trials)
        print(f"[grid] {' x '.join(f'{a} {v}' for a, v in points.items())}; other parameters at their defaults")
        param_space.update(constants)
        param_space.update({a: tune.grid_search(v) for a, v in points.items()})
        num_samples = 1
    tuner = make_tuner(kind, str(storage), param_space, {"cpu": args.cpus_per_trial}, search_alg=search_alg,
                       scheduler=scheduler, num_samples=num_samples)
    t0 = time.perf_counter()
    results = tuner.fit()
    seconds = time.perf_counter() - t0
    rows = [r.metrics or {} for r in results]
    finished = [m for m in rows if args.metric in m]
    complete = [m for m in finished if m.get("training_iteration", 0) >= epochs]
    best = max(complete, key=lambda m: m[args.metric], default=None)
    return {
        "trials": len(rows), "errors": results.num_errors, "seconds": seconds,
        "epochs": int(sum(m.get("training_iteration", 0) for m in rows)),
        "complete": len(complete),
        "best": best[args.metric] if best else math.nan,
        "best_acc": best.get("val_acc", math.nan) if best else math.nan,
        "best_any": max((m[args.metric] for m in finished), default=math.nan),
        "best_config": {k: v for k, v in (best or {}).get("config", {}).items() if k != "cell"},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="ckd")
    ap.add_argument("--space", default=None, help="search space name (default: the method's)")
    ap.add_argument("--trials", type=int, default=12, help="trials per search")
    ap.add_argument("--volume", type=int, default=100, help="balanced training images of the student")
    ap.add_argument("--epochs", type=int, default=12, help="epochs of a complete student trial")
    ap.add_argument("--min-steps", type=int, default=60)
    ap.add_argument("--grace-period", type=int, default=3, help="ASHA's minimum epochs")
    ap.add_argument("--metric", default="val_auc", help="validation metric to maximise")
    ap.add_argument("--max-eval-per-class", type=int, default=120, help="cap of the balanced validation set")
    ap.add_argument("--grid-axes", nargs="+", default=None, help="grid parameters (default: the space's first 3)")
    ap.add_argument("--arch", default="test_resnet", help="student")
    ap.add_argument("--teacher", default="test_resnet")
    ap.add_argument("--teacher-epochs", type=int, default=12)
    ap.add_argument("--num-images", type=int, default=2400)
    ap.add_argument("--size", type=int, default=64, help="image size (px)")
    ap.add_argument("--root", default=None, help="dataset folder (default: a temporary one)")
    ap.add_argument("--device", default="cpu", help="where trials train (the Ray trials ask for CPUs only)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    ap.add_argument("--cpus-per-trial", type=float, default=1)
    ap.add_argument("--seed", type=int, default=0, help="the first searcher seed")
    ap.add_argument("--seeds", type=int, default=3, help="searcher seeds (--seed, --seed + 1, ...): each search "
                                                         "runs once per seed; the RESULT gives mean and std over them")
    ap.add_argument("--searches", nargs="+", default=list(SEARCHES), choices=SEARCHES)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, about a minute")
    args = ap.parse_args(argv)
    if args.smoke:
        args.num_images, args.size, args.volume, args.epochs, args.min_steps = 480, 32, 20, 2, 0
        args.trials, args.grace_period, args.teacher_epochs, args.max_eval_per_class = 2, 1, 1, 20
        args.seeds = 1
    root = args.root or str(Path(tempfile.gettempdir()) / f"ckd-synthetic-{args.num_images}-{args.size}")
    data = {"kind": "synthetic", "root": root, "num_images": args.num_images, "size": args.size, "seed": 0}
    read_index(data)  # generate the images once, before any trial
    work = Path(tempfile.mkdtemp(prefix="ckd-search-efficiency-"))
    try:
        t0 = time.perf_counter()
        teacher = run_trial(
            TrialSpec(role="teacher", arch=args.teacher, data=data, image_size=args.size, eval_splits=("val",),
                      device=args.device),
            HParams(method=VT, epochs=args.teacher_epochs, batch_size=64, lr=3e-3, schedule="cosine"))
        checkpoint = str(work / "teacher.pt")
        save_checkpoint(teacher.result.model, checkpoint)
        print(f"teacher {args.teacher}: val_acc {teacher.metrics.get('val_acc', math.nan):.3f}, val_auc "
              f"{teacher.metrics.get('val_auc', math.nan):.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)

        spec = TrialSpec(role="student", arch=args.arch, data=data, image_size=args.size, volume=args.volume,
                         eval_splits=("val",), max_eval_per_class=args.max_eval_per_class, device=args.device,
                         teachers=(TeacherRef(args.teacher, checkpoint),) if args.method != VT else (),
                         cache_dir=str(work / "teacher-cache"))  # every trial reads the teacher's outputs
        hparams = {"method": args.method, "epochs": args.epochs, "min_steps": args.min_steps, "seed": 0}
        space_name = args.space or args.method
        tags = RunTags(stage="sweep", source="synthetic", method=args.method, student=args.arch, seed=0,
                       volume=args.volume, cell=f"search_efficiency/{args.method}/{args.volume}", space=space_name)
        cell = Cell("sweep", spec, hparams, tags).config()
        space = get_space(space_name, args.method, args.volume)

        out: dict[str, list[dict[str, Any]]] = {}
        seeds = [args.seed + i for i in range(args.seeds)]
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            for seed in seeds:  # every search once per searcher seed, the seeds in turn
                for kind in args.searches:
                    if kind == "grid" and kind in out:  # the grid and its trials' seed do not change with it
                        out[kind].append(out[kind][0])
                        continue
                    print(f"[{kind} seed {seed}] {args.trials} trials of {args.method} (volume {args.volume}, "
                          f"{args.epochs} epochs)", flush=True)
                    r = run_search(kind, cell, space, argparse.Namespace(**{**vars(args), "seed": seed}),
                                   work / f"ray-{seed}")
                    out.setdefault(kind, []).append(r)
                    print(f"[{kind} seed {seed}] best {args.metric} {r['best']:.4f} (val_acc {r['best_acc']:.4f}; "
                          f"best of any trial {r['best_any']:.4f}), {r['epochs']} trial-epochs, "
                          f"{r['complete']}/{r['trials']} trials complete, {r['errors']} errors, {r['seconds']:.0f} s; "
                          f"best config {r['best_config']}", flush=True)
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmean ± std over {len(seeds)} searcher seed(s) {seeds}")
    print(f"{'search':<10}{'best ' + args.metric:>20}{'val_acc':>16}{'trial-epochs':>14}{'seconds':>10}{'errors':>8}")
    for kind, rs in out.items():
        best, acc = mean_std([r["best"] for r in rs]), mean_std([r["best_acc"] for r in rs])
        print(f"{kind:<10}{best[0]:>12.4f} ± {best[1]:.4f}{acc[0]:>8.4f} ± {acc[1]:.3f}"
              f"{mean_std([r['epochs'] for r in rs])[0]:>14.0f}{sum(r['seconds'] for r in rs):>10.0f}"
              f"{sum(r['errors'] for r in rs):>8}")
    parts = [f"{kind}_best={mean_std([r['best'] for r in rs])[0]:.4f}" for kind, rs in out.items()]
    parts += [f"{kind}_best_std={mean_std([r['best'] for r in rs])[1]:.4f}" for kind, rs in out.items()]
    parts += [f"{kind}_epochs={mean_std([r['epochs'] for r in rs])[0]:.0f}" for kind, rs in out.items()]
    print("RESULT " + " ".join(parts) + f" seeds={len(seeds)}")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for one value; nan values left out)."""
    xs = [float(v) for v in values if not math.isnan(float(v))]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


if __name__ == "__main__":
    main()
