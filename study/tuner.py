"""The one place a Ray Tune `Tuner` is set up, for every stage of a study and for the
benchmarks: the trainable with its resources, actor reuse, trial folders named by trial
id, one checkpoint kept, retries from the last checkpoint. When Ray's API moves, this
file moves."""
from __future__ import annotations

from typing import Any, Sequence

from ray import tune

from trainables.tune import train_trial


def make_tuner(name: str, storage: str, param_space: dict[str, Any], resources: dict[str, float], *,
               search_alg=None, scheduler=None, num_samples: int = 1, max_concurrent: int | None = None,
               max_failures: int = 0, callbacks: Sequence[tune.Callback] = (), verbose: int = 0) -> tune.Tuner:
    """A new Tuner of `train_trial` writing under `storage`/`name`."""
    return tune.Tuner(
        tune.with_resources(train_trial, resources), param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
            max_concurrent_trials=max_concurrent, reuse_actors=True,
            trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=list(callbacks),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=verbose))


def restored_tuner(path: str, resources: dict[str, float]) -> tune.Tuner | None:
    """The Tuner saved at `path` (a stage of an interrupted study), its unfinished and errored
    trials to be resumed; None when there is none."""
    if not tune.Tuner.can_restore(path):
        return None
    return tune.Tuner.restore(path, tune.with_resources(train_trial, resources),
                              resume_unfinished=True, resume_errored=True)
