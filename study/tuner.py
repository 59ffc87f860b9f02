"""The one place a Ray Tune `Tuner` is set up, for every stage of a study and for the
benchmarks: the trainable with its resources, actor reuse, trial folders named by trial
id, one checkpoint kept, retries from the last checkpoint. When Ray's API moves, this
file moves."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from ray import tune
from ray.tune.search import SearchGenerator, Searcher

from study.progress import Heartbeat, StageProgress
from study.ray_state import StateKeeper, repair
from trainables.env import temporary_env
from trainables.errors import UserError
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
            name=name, storage_path=storage, callbacks=[*callbacks, StateKeeper(f"{storage.rstrip('/')}/{name}")],
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=verbose))


def restored_tuner(path: str, resources: dict[str, float], echo=print) -> tune.Tuner | None:
    """The Tuner saved at `path` (a stage of an interrupted study), its unfinished and errored
    trials to be resumed; None when there is none. A damaged state file (a full disk) is
    replaced by the stage's last good copy first (`study.ray_state`), and `echo` says so."""
    note = repair(path)
    if note:
        echo(f"note: {note}")
    if not tune.Tuner.can_restore(path):
        return None
    check_search_state(path)
    return tune.Tuner.restore(path, tune.with_resources(train_trial, resources),
                              resume_unfinished=True, resume_errored=True)


def check_search_state(path: str) -> None:
    """A stage with a searcher (the sweep) saves two files: the search generator's state and the
    searcher's. With the second missing, Ray Tune 2.60 logs "Failed to restore the run state",
    restarts the experiment and then waits forever (seen on a sweep whose searcher file was
    deleted): refuse to resume instead, saying which file and what to do."""
    if "://" in path:
        return  # remote storage: Ray reads it; nothing to look at here
    folder = Path(path)
    if any(folder.glob(SearchGenerator.CKPT_FILE_TMPL.format("*"))) and not any(
            folder.glob(Searcher.CKPT_FILE_TMPL.format("*"))):
        raise UserError(
            f"cannot resume the stage in {folder}: its searcher's saved state "
            f"({Searcher.CKPT_FILE_TMPL.format('*')}) is missing beside {SearchGenerator.CKPT_FILE_TMPL.format('*')}. "
            "Restore the file from a backup, or run the study again under another name or --workdir "
            "(what finished stays recorded in MLflow)")


NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"  # read by Tune at each fit(); "0": its older output engine


@contextmanager
def ray_tables(show: bool) -> Iterator[None]:
    """Around `Tuner.fit()`: Ray's own tables when `show` (the Tuner's verbose > 0), else nothing of
    Tune's on stdout. At verbose=0 Ray 2.60's default output engine still prints a configuration box
    and the results folder at each experiment's start; its older engine prints nothing."""
    if show:
        yield
        return
    with temporary_env(NEW_OUTPUT_ENV, "0"):
        yield


class ProgressCallback(tune.Callback):
    """Ray Tune's hooks fed to a plain `StageProgress` (the stage's line) and `Heartbeat` (the
    parent run's tag `study status` reads): Ray's own hooks and statuses stay in this file."""

    def __init__(self, progress: StageProgress, heartbeat: Heartbeat | None = None):
        self.progress, self.heartbeat = progress, heartbeat

    def setup(self, **info):
        self.progress.begin()
        if self.heartbeat is not None:
            self.heartbeat.beat(force=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.progress.trial_started(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.progress.trial_ended(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.progress.trial_ended(trial.trial_id, failed=True)

    def on_step_end(self, iteration, trials, **info):
        self.progress.sync([t.trial_id for t in trials if t.status == "TERMINATED"],
                           [t.trial_id for t in trials if t.status == "ERROR"])
        self.progress.tick()
        if self.heartbeat is not None:
            self.heartbeat.beat()

    def on_experiment_end(self, trials, **info):
        self.progress.close()

    def get_state(self) -> dict:
        return {"progress": self.progress.state()}

    def set_state(self, state: dict) -> None:
        self.progress.restore(state.get("progress", {}))
