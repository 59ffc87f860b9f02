"""What does running a sweep's cells in one Tuner save over one Tuner per cell?

    python benchmarks/sweep_stage.py [--cells 4] [--trials 4] [--repeats 2] [--smoke]

A sweep of VT at `--cells` training-set sizes (test_resnet, 64 px, synthetic data), `--trials`
one-epoch trials per cell, 2 at a time, each of 1 CPU, run through `study run --stage sweep` in one
Ray session two ways, alternated `--repeats` times:
- one Tuner for every cell (study/per_cell.py, what `study run` does);
- one Tuner per cell, each with its own Optuna searcher and ASHA ladder (the runner before it):
  every Tuner starts its own worker processes, which import torch, timm and Ray Tune.
Both run the same trials (same cells, same seeded searchers, same budget). Prints the sweep's
wall time each way (medians) and ends with
`RESULT one_tuner_s=… per_cell_tuners_s=… saved_s_per_cell=… ratio=…`.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import ray
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from study.config import parse_config
from study.plan import sweep_cells
from study.progress import record_planned
from study.runner import RunOptions, StageSummary, StudyRunner
from trainables.hparams import HParams


class PerCellTuners(StudyRunner):
    """The sweep as it ran before study/per_cell.py: one Tuner per (method, volume)."""

    def sweep(self, teachers, budgets=None) -> None:
        sw = self.cfg.sweep
        cells = sweep_cells(self.cfg, teachers, budgets)
        record_planned(self.tracking.client, self._parent, "sweep", len(cells) * sw.trials)
        for cell, space in cells:
            epochs = HParams.from_dict(cell.hparams).epochs
            searcher = OptunaSearch(space=space, metric=sw.metric, mode="max", seed=sw.seed)
            scheduler = ASHAScheduler(metric=sw.metric, mode="max", max_t=epochs,
                                      grace_period=min(sw.grace_period, epochs), reduction_factor=2)
            stage = StageSummary(f"sweep-{cell.tags.method}-v{cell.tags.volume}")
            self._fit(stage.name, {"cell": cell.config()}, stage, sw.trials, search_alg=searcher,
                      scheduler=scheduler, num_samples=sw.trials)
            self.summary.stages.append(stage)


def study_config(root: str, name: str, volumes: list[int], trials: int) -> dict:
    return {
        "name": name,
        "data": {"kind": "synthetic", "root": root, "num_images": 2400, "size": 64, "seed": 0, "image_size": 64},
        "teachers": [],
        "students": {"pairs": ["test_resnet"], "methods": ["vt"], "volumes": volumes, "seeds": [0],
                     "hparams": {"epochs": 1}},
        "sweep": {"spaces": {"vt": "vt"}, "trials": trials, "volumes": volumes, "grace_period": 1,
                  "max_eval_per_class": 60},
        "resources": {"cpu": 1},
    }


def sweep_seconds(runner_cls: type[StudyRunner], raw: dict, work: Path) -> tuple[float, int]:
    cfg = parse_config(raw, f"<{raw['name']}>", work)
    runner = runner_cls(cfg, RunOptions(workdir=work, stage="sweep", max_concurrent=2, verbose=0),
                        echo=lambda _: None)
    summary = runner.run()
    stages = [s for s in summary.stages if s.name.startswith("sweep")]
    return sum(s.seconds for s in stages), sum(s.trials for s in stages)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=4, help="training-set sizes swept (cells)")
    ap.add_argument("--trials", type=int, default=4, help="trials per cell")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="2 cells of 2 trials, once")
    args = ap.parse_args(argv)
    if args.smoke:
        args.cells, args.trials, args.repeats = 2, 2, 1
    volumes = [20 * (i + 1) for i in range(args.cells)]
    root = str(Path(tempfile.gettempdir()) / "ckd-synthetic-2400-64")
    tmp = Path(tempfile.mkdtemp(prefix="ckd-sweep-stage-"))
    times: dict[str, list[float]] = {"one": [], "per_cell": []}
    ray.init(include_dashboard=False, log_to_driver=False)  # one session for both: no ray.init in the figures
    try:
        for r in range(args.repeats):
            ways = [("one", StudyRunner), ("per_cell", PerCellTuners)]
            for way, cls in (ways if r % 2 == 0 else ways[::-1]):
                raw = study_config(root, f"{way}{r}", volumes, args.trials)
                seconds, trials = sweep_seconds(cls, raw, tmp / f"{way}{r}")
                assert trials == args.cells * args.trials, (way, trials)
                times[way].append(seconds)
    finally:
        ray.shutdown()
    one, per_cell = statistics.median(times["one"]), statistics.median(times["per_cell"])
    print(f"sweep of {args.cells} cells x {args.trials} one-epoch trials, 2 at a time, medians of {args.repeats}: "
          f"one Tuner {one:.1f} s {[round(t, 1) for t in times['one']]}; one Tuner per cell {per_cell:.1f} s "
          f"{[round(t, 1) for t in times['per_cell']]}")
    saved = (per_cell - one) / args.cells
    print(f"  {saved:.1f} s saved per cell (each Tuner starts its own worker processes)")
    print(f"RESULT one_tuner_s={one:.2f} per_cell_tuners_s={per_cell:.2f} saved_s_per_cell={saved:.2f} "
          f"ratio={one / per_cell:.3f}")


if __name__ == "__main__":
    main()
