"""The short summary `study run` ends with: chosen hyperparameters, results, next commands."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from study.config import StudyConfig
from study.runner import StudySummary
from study.tracking import Tracking


def results_frame(tracking: Tracking, stage: str) -> pd.DataFrame:
    rows = []
    for run in tracking.children(stage, status="FINISHED"):
        rows.append({**{k: run.data.tags.get(k) for k in ("source", "pair", "method", "volume", "seed")},
                     **{k: run.data.metrics.get(k) for k in ("test_acc", "test_auc")}})
    return pd.DataFrame(rows)


def print_summary(cfg: StudyConfig, summary: StudySummary, workdir: Path, echo: Callable[[str], None]) -> None:
    echo("")
    echo(f"study {cfg.name}: done")
    for s in summary.stages:
        if not (s.trials or s.reused):
            continue
        extra = f", {s.reused} reused" if s.reused else ""
        echo(f"  {s.name:<22} {s.trials:>3} trials, {s.errors} failed{extra}, {s.seconds:6.1f} s")
    for (method, volume), hp in sorted(summary.chosen.items()):
        echo(f"  best {method} at {volume} images (validation): "
             + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hp.items())))
    frame = results_frame(Tracking(cfg.tracking_uri, cfg.name), "grid")
    if not frame.empty:
        frame["volume"] = frame["volume"].astype(int)
        table = frame.groupby(["source", "pair", "volume", "method"])["test_acc"].agg(["mean", "std", "count"])
        echo("\ntest accuracy (mean, std over seeds):")
        echo(table.round(3).to_string())
    uri = cfg.tracking_uri
    echo(f"\nMLflow tracking URI: {uri}")
    echo(f"Ray storage:         {cfg.storage_path}/{cfg.name}")
    echo("next:")
    echo(f"  mlflow ui --backend-store-uri {uri}      (or: study ui --workdir {workdir})")
    echo(f"  study report --workdir {workdir} --study {cfg.name} --out reports/")
