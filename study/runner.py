"""Run a study's stages as Ray Tune Tuners, every trial recorded in MLflow by the driver.

The one home of `ray.init`; Tuners are made by `study.tuner`. Stages read what earlier stages left
from MLflow (teacher checkpoints, the sweep's best hyperparameters), so `--stage` can
run one of them later, and `--resume` restores each stage's Tuner from Ray storage
without re-running finished trials.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from analysis.store import network_store_warning, snapshot_sqlite
from search_spaces import space_keys
from study.config import Resources, StudyConfig, check_same_config, recorded_text
from study.config_reader import set_options
from study.budget import BudgetSearch, Choice, recipe
from study.per_cell import PerCellScheduler, PerCellSearch
from study.plan import (
    STAGES, Budgets, Cell, ablation_cells, budget_cells, budget_recipes, given_teachers, grid_cells, sweep_cells,
    teacher_cells,
)
from study.lease import FILE as LEASE_FILE, StudyLease
from study.quiet import library_logs, log_path, reattach
from study.progress import (
    Heartbeat, StageProgress, record_driver, record_planned, record_reused, resume_command,
)
from study.tracking import MLflowTrialCallback, Tracking
from study.tuner import ProgressCallback, make_tuner, ray_tables, restored_tuner
from trainables.data.subsets import balanced_split, balanced_subset
from trainables.data.transfer import unlabeled_frame
from trainables.errors import DataError, UserError
from trainables.hparams import HParams
from trainables.models import create_model, sha256_file
from trainables.record import RunTags
from trainables.trial import TeacherRef, dataset_index
from trainables.tune import MODEL_FILE


# every checkpoint (num_to_keep=1) forces an experiment snapshot: cheap here, so no warning
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")




class StudyInterrupted(Exception):
    """A stage was stopped (Ctrl+C) before all its trials ended."""


@dataclass
class RunOptions:
    workdir: Path
    address: str | None = None
    resume: bool = False
    stage: str | None = None
    max_concurrent: int | None = None
    retrain_teachers: bool = False  # never reuse a finished teacher run (of any study)
    verbose: int = 1  # 0: quiet; 1: one progress line per stage; 2: also Ray Tune's tables


@dataclass
class StageSummary:
    name: str
    trials: int = 0
    errors: int = 0
    seconds: float = 0.0
    reused: int = 0


@dataclass
class StudySummary:
    stages: list[StageSummary] = field(default_factory=list)
    chosen: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    parent_run_id: str = ""
    budgets: dict[int, int] = field(default_factory=dict)  # min_steps: auto: volume -> budget
    budget_choices: dict[tuple[str, int], Choice] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.stages)


def code_version() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def preflight(cfg: StudyConfig) -> None:
    """Check every method's loss term and the data can serve every volume, before anything is
    written anywhere."""
    from trainables.losses import get_method
    for i, method in enumerate(cfg.students.methods):
        get_method(method, where=f"{cfg.path}: students.methods[{i}]")  # its loss module registers its term
    volumes = set(cfg.students.volumes) | set(cfg.sweep.volumes) | set(cfg.ablations.vary_volumes) \
        | set(cfg.ablations.efficiency_volumes)
    for source, data in cfg.source_specs():
        index = dataset_index(data)
        train = index[index["split"] == "train"]
        counts = train["label"].value_counts().to_dict()
        for volume in sorted(volumes):
            for label, name in ((0, "real"), (1, "fake")):
                if counts.get(label, 0) < volume // 2:
                    raise UserError(
                        f"{cfg.path}: volume {volume} needs {volume // 2} {name} training images "
                        f"but source {source!r} has {counts.get(label, 0)}: lower the volume")
        for split in ("val", "test"):
            balanced_split(index, split, seed=0)
        _check_transfer(cfg, index)
    for d in cfg.evaluate.datasets:  # each evaluation dataset reads, and has test images of both classes
        try:
            test = dataset_index(d.data)
        except UserError as exc:
            raise UserError(f"{cfg.path}: evaluate dataset {d.name!r}: {exc}") from None
        test = test[test["split"] == "test"]
        counts = test["label"].value_counts().to_dict()
        if not counts.get(0) or not counts.get(1):
            raise UserError(f"{cfg.path}: evaluate dataset {d.name!r} has {counts.get(0, 0)} real and "
                            f"{counts.get(1, 0)} fake test images: its AUC needs both")
    for t in cfg.teachers:  # a given checkpoint must load into its architecture now, not in a trial
        if t.checkpoint is not None:
            try:
                create_model(t.arch, weights=t.checkpoint)
            except UserError as exc:
                raise UserError(f"{cfg.path}: teacher {t.name!r}: {exc}") from None


def _check_transfer(cfg: StudyConfig, index) -> None:
    """Enough train images outside each subset's videos for students.transfer (train_unlabeled),
    for every volume a distilling student trains at and every seed that draws a subset (a
    DataError naming the numbers). The efficiency curve is VT's: it has no transfer set."""
    sets = [t for t in (cfg.students.transfer, *(a.transfer for a in cfg.students.arms))
            if t is not None and t.source == "train_unlabeled"]
    if not sets:
        return
    t = max(sets, key=lambda t: t.size)  # the largest set: the others are drawn the same way, fewer
    volumes = set(cfg.students.volumes) | set(cfg.sweep.volumes) | set(cfg.ablations.vary_volumes) \
        | (set(cfg.budget.volumes) if cfg.students.auto_budget else set())
    seeds = set(cfg.students.draws or cfg.students.seeds) | {cfg.sweep.seed} | set(cfg.ablations.vary_seeds) \
        | set(cfg.budget.seeds)
    for volume in sorted(volumes):
        for seed in sorted(seeds):
            try:
                unlabeled_frame(index, balanced_subset(index, volume, seed), t.size, seed)
            except DataError as exc:
                raise UserError(f"{cfg.path}: volume {volume}, draw {seed}: {exc}") from None


def check_address(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at a host:port Ray address."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address)
    if match is None:  # "auto", "local", …: Ray resolves these itself
        return
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise UserError(
            f"cannot reach Ray at {address!r} ({exc.strerror or exc}): start the cluster "
            "(`ray start --head`) or fix --address; on the head node use --address auto") from None


@contextmanager
def ray_session(address: str | None, verbose: int = 1):
    """Start a local Ray (or join `address`) and stop what we started, also on errors."""
    started = False
    if not ray.is_initialized():
        # workers' output and Ray's own console logging only with --verbose (study.quiet)
        kwargs: dict[str, Any] = {"log_to_driver": verbose >= 2, "include_dashboard": False,
                                  "configure_logging": verbose >= 2}
        if address:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
            reattach()  # ray.init clears its loggers' handlers: the libraries' lines go to the log file again
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(
                f"cannot connect to Ray at {address!r}: {str(exc).splitlines()[0][:300]}. "
                "Is the cluster up? For a remote address set RAY_AUTH_MODE=token and the token "
                "(Ray >= 2.59), or run on the head node with --address auto.") from None
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def open_optuna_storage(url: str):
    """The Optuna RDB storage of the study's sweeps; a UserError naming it when it cannot be opened."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:
        raise UserError(f"the sweep's Optuna storage {url} cannot be opened ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0][:200]}): fix sweep.storage") from None


def check_optuna_storage(url: str) -> None:
    """A server storage (postgresql://, mysql://…) must answer before anything runs; a SQLite file
    is made when the sweep starts (its folder must exist or be creatable). Nothing is written."""
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        probe = folder
        while not probe.exists():
            probe = probe.parent
        if not os.access(probe, os.W_OK):
            raise UserError(f"the sweep's Optuna storage {url}: {probe} is not writable: fix sweep.storage")
        return
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(url).connect():
            pass
    except Exception as exc:
        raise UserError(f"the sweep's Optuna storage {url} cannot be reached ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0][:200]}): start it or fix sweep.storage") from None


def optuna_study_names(study: str, cells: list[Cell]) -> list[str]:
    """`<study>/<method>/<volume>` per swept cell (with its source and pair when the study has
    several): the names `optuna.load_study` and `optuna-dashboard` show."""
    short = [f"{study}/{c.tags.method}/{c.tags.volume}" for c in cells]
    if len(set(short)) == len(short):
        return short
    return [f"{study}/{c.tags.source}/{c.tags.pair}/{c.tags.method}/{c.tags.volume}" for c in cells]


def trial_resources(res: Resources) -> dict[str, float]:
    """What each trial asks Ray for. A fractional `gpu` packs several trials on one GPU
    (Ray sets CUDA_VISIBLE_DEVICES; the trial's device "auto" then picks CUDA); `gpu: 0`
    keeps a trial on the CPU even on a GPU node. `memory` (bytes) is reserved in Ray's
    scheduler: a node runs only as many trials as its memory holds (Ray does not cap the
    process at it; its memory monitor acts on the node's usage)."""
    out = {"cpu": res.cpu, "gpu": res.gpu}
    if res.memory is not None:
        out["memory"] = res.memory
    return out


def has_stage_folders(storage: str) -> bool:
    """Whether Ray's storage of the study holds anything of a stage (the driver's lease alone,
    which `study run` takes before its checks, is not a result)."""
    if "://" in storage:
        return False  # remote: the parent run in MLflow tells
    folder = Path(storage)
    return folder.is_dir() and any(not p.name.startswith(LEASE_FILE) for p in folder.iterdir())


class StudyRunner:
    def __init__(self, cfg: StudyConfig, opts: RunOptions, echo: Callable[[str], None] = print):
        self.cfg, self.opts, self.echo = cfg, opts, echo
        self.tracking = Tracking(cfg.tracking_uri, cfg.name)
        self.storage = f"{cfg.storage_path.rstrip('/')}/{cfg.name}"
        self.summary = StudySummary()
        self._parent: str | None = None
        self.code = code_version()
        # one driver per study (study.lease): in the study's storage, or the workdir when that is remote
        lease_dir = Path(opts.workdir) / "leases" / cfg.name if "://" in self.storage else Path(self.storage)
        self.lease = StudyLease(lease_dir, cfg.name, f"study status --workdir {opts.workdir} --study {cfg.name}")

    # --- the whole study -------------------------------------------------------
    def check(self) -> None:
        """Everything that can fail before a single write: another driver, reachability, clashes, data."""
        self.lease.check_free()  # a live driver on this study: exit 2 at once, naming it
        if self.opts.address:
            check_address(self.opts.address)
        self.tracking.check_reachable()
        parent = self.tracking.parent_run()
        exists = parent is not None or has_stage_folders(self.storage)
        if exists and self.opts.retrain_teachers:
            raise UserError(
                f"study {self.cfg.name!r} already has results, distilled from its current teachers: retrain "
                "them in a new study (another name or --workdir) with --retrain-teachers")
        if exists and not self.opts.resume and self.opts.stage is None:
            raise UserError(
                f"study {self.cfg.name!r} already has results ({self.cfg.tracking_uri}, {self.storage}): "
                f"continue it with `study run {self.cfg.path} --resume --workdir {self.opts.workdir}"
                f"{' ' + set_options(self.cfg.overrides) if self.cfg.overrides else ''}`, "
                "or give it another name or --workdir")
        if parent is not None and self.opts.resume:
            self._check_same_config(parent)
        preflight(self.cfg)
        if self.cfg.sweep.spaces and self.opts.stage in (None, "sweep"):
            check_optuna_storage(self.cfg.optuna_storage)

    def _check_same_config(self, parent) -> None:
        """--resume continues the study as it was started: the effective config (file and --set
        overrides) equals the one its parent run recorded (`CONFIG_ARTIFACT`, else its hash tag)."""
        import yaml

        from analysis.store import CONFIG_ARTIFACT, downloaded

        recorded = None
        try:
            with downloaded(self.tracking.client, parent.info.run_id, CONFIG_ARTIFACT) as path:
                recorded = yaml.safe_load(path.read_text())
        except (FileNotFoundError, yaml.YAMLError):
            pass  # a parent run without a readable config: its config_hash tag decides
        check_same_config(self.cfg, recorded, parent.data.tags.get("config_hash"), parent.info.run_id)

    def run(self) -> StudySummary:
        """Every stage asked for; the libraries' own log lines go to a file unless --verbose."""
        path = log_path(self.opts.workdir, self.cfg.name)
        with library_logs(path, enabled=self.opts.verbose < 2):
            if self.opts.verbose == 1:
                self.echo(f"Ray's, MLflow's and Optuna's log lines: {path} (--verbose shows them here)")
            return self._run()

    def _run(self) -> StudySummary:
        warning = network_store_warning(self.cfg.tracking_uri)
        if warning:
            self.echo(f"warning: {warning}")
        # the lease before anything reads or creates the store: of two drivers started together on a
        # new study, one creates the SQLite store and the other exits 2 naming it (not a collision)
        self.lease.check_free()
        self.lease.acquire(resume=self.opts.resume or self.opts.stage is not None)
        if self.lease.note:
            self.echo(f"note: {self.lease.note}")
        with self.lease:
            self.check()
            return self._stages()

    def _stages(self) -> StudySummary:
        stages = [self.opts.stage] if self.opts.stage else list(STAGES)
        config_text = recorded_text(self.cfg)  # the effective config: the file with its --set overrides
        with ray_session(self.opts.address, self.opts.verbose):
            self._parent = self.tracking.start_parent(self.cfg.config_hash, config_text, self.code)
            self.summary.parent_run_id = self._parent
            resume = resume_command(Path(self.cfg.path).resolve(), Path(self.opts.workdir).resolve(),
                                    self.cfg.overrides, self.opts.address)
            record_driver(self.tracking.client, self._parent, resume=resume, metric=self.cfg.sweep.metric)
            status = "FAILED"
            try:
                teachers = self.teachers(train="teachers" in stages)
                budgets = None
                if self.cfg.students.auto_budget and set(stages) - {"teachers"}:
                    budgets = self.budgets(teachers, train="budget" in stages)
                if "sweep" in stages and self.cfg.sweep.spaces and self.cfg.grid.hparams != "from_run":
                    self.sweep(teachers, budgets)
                chosen = self.chosen_hparams() if ("grid" in stages or "ablations" in stages) else {}
                self.summary.chosen = dict(chosen)
                if chosen and self.cfg.grid.hparams == "sweep":  # the grid can be re-run from them
                    self.tracking.log_chosen(self._parent, chosen)
                if "grid" in stages and self.cfg.grid.enabled:
                    self.grid_stage("grid", grid_cells(self.cfg, teachers, chosen, budgets), log_models=True)
                if "ablations" in stages:
                    cells = ablation_cells(self.cfg, teachers, chosen, budgets)
                    if cells:
                        self.grid_stage("ablations", cells)
                status = "FINISHED"
            except (StudyInterrupted, KeyboardInterrupt):
                status = "KILLED"
                raise
            finally:
                stopping = sys.exc_info()[1]  # what ends the study, if anything: it is what the user sees
                try:
                    self.tracking.kill_running()
                    self.tracking.end_parent(self._parent, status)
                except Exception as cleanup:
                    if stopping is None:
                        raise
                    logging.getLogger(__name__).warning("could not record the study's end either (%s)",
                                                        cleanup.__class__.__name__)
        return self.summary

    def _snapshot(self, stage: str) -> None:
        """A consistent copy of a SQLite store at a stage's end (analysis.store.snapshot_sqlite):
        what `study status` and the README's roll-back point at when the store is damaged."""
        snapshot_sqlite(self.cfg.tracking_uri, stage)

    # --- stages ----------------------------------------------------------------
    def teachers(self, train: bool) -> dict[tuple[str, str], TeacherRef]:
        out = given_teachers(self.cfg)
        todo: list[Cell] = []
        reused = 0
        for cell in teacher_cells(self.cfg):
            ref = None if self.opts.retrain_teachers else self._finished_teacher(cell, warn=True)
            if ref is not None:
                out[(cell.tags.source, cell.tags.teacher_name)] = ref
                reused += 1
            else:
                todo.append(cell)
        if todo and not train:
            missing = [c.tags.cell for c in todo]
            raise UserError(f"teachers {missing} have no finished run yet: run `--stage teachers` first")
        stage = StageSummary("teachers", reused=reused)
        if reused:  # `study status` says so, instead of a stage that never started
            record_reused(self.tracking.client, self._parent, "teachers", reused)
        if todo:
            record_planned(self.tracking.client, self._parent, "teachers", len(todo))
            results = self._fit("teachers", {"cell": tune.grid_search([c.config() for c in todo])}, stage,
                                len(todo), log_models=True, resources=self.cfg.resources.for_teachers())
            self._record_teachers(results)
            for cell in todo:
                ref = self._finished_teacher(cell)
                if ref is None:
                    raise UserError(f"teacher {cell.tags.cell} did not finish (see its FAILED run in MLflow)")
                out[(cell.tags.source, cell.tags.teacher_name)] = ref
        self.summary.stages.append(stage)
        self._snapshot(stage.name)
        return out

    def _finished_teacher(self, cell: Cell, warn: bool = False) -> TeacherRef | None:
        run = self.tracking.finished_teacher(cell.config_hash)
        if run is None and cell.legacy_hash != cell.config_hash:  # recorded before scoring left its identity
            run = self.tracking.finished_teacher(cell.legacy_hash)
        if run is None:
            return None
        unscored = [c.name for c in cell.spec.evaluate if not any(k.startswith(c.prefix()) for k in run.data.metrics)]
        if warn and unscored:
            self.echo(f"warning: teacher {cell.tags.cell} is reused from run {run.info.run_id}, which was not scored "
                      f"on evaluation dataset(s) {unscored}: its cross-dataset row stays empty (a teacher's "
                      "scoring does not make it another teacher); `study run --retrain-teachers` (in a new study) "
                      "trains and scores it again.")
        trained_by = run.data.tags.get("code_version", "unknown")
        if warn and trained_by != self.code:
            self.echo(f"warning: teacher {cell.tags.cell} is reused from run {run.info.run_id}, trained by "
                      f"code version {trained_by}; this is {self.code}. Its numbers may differ from a teacher "
                      "trained now: `study run --retrain-teachers` (in a new study) trains it again.")
        path, digest = run.data.tags["checkpoint_path"], run.data.tags.get("checkpoint_sha256")
        if not Path(path).is_file():
            return None
        if digest and sha256_file(path) != digest:
            raise UserError(f"teacher checkpoint {path} changed since it was recorded (SHA-256 differs "
                            f"from run {run.info.run_id}): restore it or delete that run to retrain")
        return TeacherRef(cell.spec.arch, path)

    def _record_teachers(self, results) -> None:
        """Copy each finished teacher's weights to a stable path; record path and SHA-256."""
        folder = Path(self.storage) / "teachers"
        folder.mkdir(parents=True, exist_ok=True)
        run_of = {r.data.tags.get("trial_id"): r.info.run_id for r in self.tracking.children("teachers")}
        for result in results:
            if result.error is not None or result.checkpoint is None:
                continue
            tags = RunTags.from_mlflow(result.config["cell"]["tags"])
            # one file per trial: a retrained teacher never replaces the weights an older run recorded
            trial_id = result.metrics.get("trial_id", "")
            dest = folder / f"{tags.cell.replace('/', '_')}-{tags.config_hash}-{trial_id}.pt"
            with result.checkpoint.as_directory() as d:
                tmp = dest.with_suffix(".tmp")
                shutil.copyfile(Path(d) / MODEL_FILE, tmp)
                os.replace(tmp, dest)
            run_id = run_of.get(trial_id)
            if run_id is not None:
                self.tracking.client.set_tag(run_id, "checkpoint_path", str(dest))
                self.tracking.client.set_tag(run_id, "checkpoint_sha256", sha256_file(dest))

    def budgets(self, teachers, train: bool) -> Budgets:
        """min_steps: auto: train doubling budgets round by round (each round one Tuner, its own
        folder `budget-<round>`, resumable) until every (method, volume) is decided, then
        record each volume's budget on the parent run (`budgets.json`). Reads validation only."""
        b = self.cfg.budget
        search = BudgetSearch(b.start_steps, b.max_steps, b.tol, len(b.seeds))
        methods, stage = budget_recipes(self.cfg), StageSummary("budget")
        for round_ in range(len(search.ladder())):
            todo = search.todo(self._budget_scores(), methods, b.volumes)
            if not todo:
                break
            if not train:
                raise UserError(f"the training budgets (students.hparams.min_steps: auto) are not decided yet: "
                                f"run `--stage budget` first ({len(todo)} budget(s) still to try)")
            cells = budget_cells(self.cfg, teachers, todo)
            this_round = StageSummary(f"budget-{round_}")
            results = self._fit(this_round.name, {"cell": tune.grid_search([c.config() for c in cells])},
                                this_round, len(cells))
            stage.seconds += this_round.seconds
            stage.trials += len(results)
            stage.errors += results.num_errors
            if results.num_errors:
                raise UserError(f"{results.num_errors} budget trial(s) failed (see their FAILED runs in MLflow): "
                                "the budgets cannot be chosen; fix the cause and --resume")
        budgets, choices = search.choose(self._budget_scores(), methods, b.volumes)
        self.tracking.log_budgets(self._parent, budgets, choices)
        self.summary.budgets, self.summary.budget_choices = budgets, choices
        if stage.trials:
            self.summary.stages.append(stage)
            self._snapshot(stage.name)
        return budgets

    def _budget_scores(self) -> dict[tuple[str, int, int], list[float]]:
        """(recipe, volume, min_steps) -> the budget metric (validation) of each finished trial (a
        recipe: the method, in its grid arm when it ran in one)."""
        metric, scores = self.cfg.budget.metric, {}
        for r in self.tracking.children("budget", status="FINISHED"):
            tags = RunTags.from_mlflow(r.data.tags)
            if tags.budget is not None and tags.volume is not None and metric in r.data.metrics:
                key = (recipe(tags.method, tags.arm), tags.volume, tags.budget)
                scores.setdefault(key, []).append(r.data.metrics[metric])
        return scores

    def sweep(self, teachers, budgets: Budgets | None = None) -> None:
        """Every swept (method, volume) in one Tuner (`study.per_cell`): each cell keeps its own
        Optuna searcher (seeded `sweep.seed`) and ASHA ladder and gets `sweep.trials` trials, and
        the cells share the stage's workers instead of starting new ones per cell. Each searcher's
        Optuna study is kept in the study's Optuna storage (`optuna_study_names`), in step with
        Ray's searcher state: a resumed sweep continues the same studies."""
        sw = self.cfg.sweep
        self._refuse_per_cell_sweep()
        cells = sweep_cells(self.cfg, teachers, budgets)
        total = len(cells) * sw.trials
        record_planned(self.tracking.client, self._parent, "sweep", total)
        storage = open_optuna_storage(self.cfg.optuna_storage)
        names = optuna_study_names(self.cfg.name, [c for c, _ in cells])
        searchers, schedulers = [], {}
        for (cell, space), study_name in zip(cells, names):
            epochs = HParams.from_dict(cell.hparams).epochs
            searchers.append((cell.config(), OptunaSearch(space=space, metric=sw.metric, mode="max", seed=sw.seed,
                                                          study_name=study_name, storage=storage)))
            schedulers[cell.tags.cell] = (
                ASHAScheduler(metric=sw.metric, mode="max", max_t=epochs,
                              grace_period=min(sw.grace_period, epochs), reduction_factor=2)
                if sw.scheduler == "asha" else FIFOScheduler())
        stage = StageSummary("sweep")
        self._fit(stage.name, {}, stage, total, num_samples=total,
                  search_alg=PerCellSearch(searchers, sw.trials, sw.metric, "max"),
                  scheduler=PerCellScheduler(schedulers))
        self.summary.stages.append(stage)
        self._snapshot(stage.name)

    def _refuse_per_cell_sweep(self) -> None:
        """A study whose sweep an older version ran as one Tuner per cell (`sweep-<method>-v<volume>`
        folders) cannot be continued here: a new sweep Tuner would run every cell's trials again
        beside the recorded ones, and the cells would no longer have equal budgets."""
        if "://" in self.storage or (Path(self.storage) / "sweep").exists():
            return
        old = sorted(p.name for p in Path(self.storage).glob("sweep-*") if p.is_dir())
        if old:
            raise UserError(
                f"the sweep of study {self.cfg.name!r} was run by an older ckd-study, one Tuner per cell "
                f"({', '.join(old)} in {self.storage}): continue it with the version that started it (the "
                "parent run's code_version tag), or run the study again under another name or --workdir")

    def chosen_hparams(self) -> dict[tuple[str, int], dict[str, Any]]:
        """Per swept (method, volume): the searched values of the best complete run on validation
        (or, with grid.hparams: from_run, those an earlier study recorded on its parent run)."""
        if self.cfg.grid.hparams == "from_run":
            return self.tracking.chosen_of(self.cfg.grid.from_run)
        if self.cfg.grid.hparams != "sweep":
            return {}
        metric, chosen = self.cfg.sweep.metric, {}
        runs = [r for r in self.tracking.children("sweep", status="FINISHED") if metric in r.data.metrics]
        for method, space in self.cfg.sweep.spaces.items():
            for volume in self.cfg.sweep.volumes:
                mine = [r for r in runs if (lambda t: (t.method, t.volume))(RunTags.from_mlflow(r.data.tags))
                        == (method, volume)]
                if not mine:
                    raise UserError(f"no finished sweep run for method {method!r} at volume {volume}: "
                                    "run `--stage sweep` first (or set grid.hparams: paper)")
                best = best_sweep_run(mine, metric)
                params = HParams.from_dict({**HParams.subset(best.data.params, method), "method": method}).to_dict()
                chosen[(method, volume)] = {k: params[k] for k in space_keys(space, method, volume)}
        return chosen

    def grid_stage(self, name: str, cells: list[Cell], log_models: bool = False) -> None:
        stage = StageSummary(name)
        record_planned(self.tracking.client, self._parent, name, len(cells))
        self._fit(name, {"cell": tune.grid_search([c.config() for c in cells])}, stage, len(cells),
                  log_models=log_models)
        self.summary.stages.append(stage)
        self._snapshot(stage.name)

    # --- one Tuner ---------------------------------------------------------------
    def _fit(self, name: str, param_space: dict, stage: StageSummary, expected: int, *,
             search_alg=None, scheduler=None, num_samples: int = 1, log_models: bool = False,
             resources: Resources | None = None):
        resources = trial_resources(resources or self.cfg.resources)
        path = f"{self.storage}/{name}"
        t0 = time.perf_counter()
        tuner = restored_tuner(path, resources, self.echo)
        if tuner is not None:
            self.echo(f"[{name}] resuming from {path}")
        else:
            self.echo(f"[{name}] starting")
            callback = MLflowTrialCallback(self.cfg.tracking_uri, self.tracking.experiment_id,
                                           self._parent, self.cfg.name, log_models=log_models,
                                           code_version=self.code)
            progress = ProgressCallback(StageProgress(name, expected, quiet=self.opts.verbose == 0),
                                        Heartbeat(self.cfg.tracking_uri, self._parent))
            tuner = make_tuner(name, self.storage, param_space, resources, search_alg=search_alg,
                               scheduler=scheduler, num_samples=num_samples, max_concurrent=self.opts.max_concurrent,
                               max_failures=self.cfg.max_failures, callbacks=[callback, progress],
                               verbose=1 if self.opts.verbose >= 2 else 0)  # Ray's tables only with --verbose
        with _InterruptWatch() as watch, ray_tables(show=self.opts.verbose >= 2):
            results = tuner.fit()
        stage.seconds = time.perf_counter() - t0
        stage.trials = len(results)
        stage.errors = results.num_errors
        # fit() returns normally after Ctrl+C (and reports the stopped trials TERMINATED)
        if watch.interrupted or stage.trials < expected:
            raise StudyInterrupted(name)
        return results


def best_sweep_run(runs: list, metric: str):
    """The sweep's choice among one cell's finished runs: ASHA stops weak trials early, so among
    those that ran all epochs, the highest `metric`; a tie (a small validation set gives equal
    values) goes to the trial started first, so the choice never depends on the order a search
    returns the runs in."""
    last = max(r.data.metrics.get("epoch", 0) for r in runs)
    complete = [r for r in runs if r.data.metrics.get("epoch", 0) == last]
    return max(complete, key=lambda r: (r.data.metrics[metric], -r.info.start_time, r.info.run_id))


class _InterruptWatch(logging.Handler):
    """Notices Ray Tune's own SIGINT handling (it logs, then fit() returns normally).

    Ray Tune 2.60 has no public signal of it: on Ctrl+C `Tuner.fit()` stops the trials, saves
    the experiment and returns an ordinary `ResultGrid` whose stopped trials read TERMINATED,
    with no "interrupted" flag; a trial stopped by ASHA looks the same, so the results cannot
    tell either. Tune's own warning on its logger is the one trace; the runner also checks
    that every expected trial came back (`_fit`)."""

    LOGGER = "ray.tune.tune"

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.interrupted = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Stop signal received" in message or "has been interrupted" in message:
            self.interrupted = True

    def __enter__(self) -> "_InterruptWatch":
        logging.getLogger(self.LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)
