"""`study status`: where a study stands, read from MLflow alone (another terminal or machine
than its driver's): per stage the trials done, running, failed and planned, the time spent,
the best validation result so far; whether the driver is gone, and then how to resume.

The driver records what is not in the trial runs on the study's parent run (`study.progress`:
planned trials per stage, a heartbeat, host:pid, the resume command, the sweep metric).
The driver is gone when the parent run ended KILLED or FAILED, or is still RUNNING but its
driver process is not (same host), or has not beaten for `STALE_S`.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import click

from study.config import OPTIONAL_STAGES
from study.exits import fail
from study.progress import (
    DRIVER_TAG, HEARTBEAT_EVERY_S, HEARTBEAT_TAG, METRIC_TAG, PLANNED_TAG, RESUME_TAG, REUSED_TAG, STAGE_ORDER,
    fmt_duration,
)
from study.report_cli import uri_option, workdir_option
from trainables.errors import UserError

STALE_S = 10 * HEARTBEAT_EVERY_S  # no heartbeat for this long: the driver is gone
DEFAULT_METRIC = "val_auc"  # StudyConfig's sweep.metric default


@dataclass
class StageStatus:
    stage: str
    planned: int | None = None  # None: the stage has not started (or a study recorded before the tag)
    done: int = 0
    running: int = 0
    failed: int = 0
    killed: int = 0  # interrupted (Ctrl+C), continued by --resume
    reused: int = 0  # earlier runs the stage reuses instead of training (teachers of another study)
    first_start_ms: int | None = None
    last_end_ms: int | None = None
    best: float | None = None
    best_cell: str = ""

    @property
    def seen(self) -> int:
        return self.done + self.running + self.failed + self.killed

    def elapsed_s(self, now: float) -> float | None:
        if self.first_start_ms is None:
            return None
        end = now * 1000 if self.running or self.last_end_ms is None else self.last_end_ms
        return (end - self.first_start_ms) / 1000


@dataclass
class Driver:
    state: str  # running | gone | finished | unknown
    why: str


@dataclass
class StudyStatus:
    study: str
    status: str  # the parent run's: RUNNING, FINISHED, FAILED, KILLED; "NO RUN" before one
    start_ms: int | None
    end_ms: int | None
    metric: str
    stages: list[StageStatus] = field(default_factory=list)
    driver: Driver = field(default_factory=lambda: Driver("unknown", ""))
    resume: str = ""

    def elapsed_s(self, now: float) -> float | None:
        if self.start_ms is None:
            return None
        end = now * 1000 if self.status == "RUNNING" or self.end_ms is None else self.end_ms
        return (end - self.start_ms) / 1000

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.stages)

    def best(self) -> StageStatus | None:
        """The stage with the best validation result: the sweep's, else the students' (teachers,
        trained on all the data, only when no student has one)."""
        scored = [s for s in self.stages if s.best is not None]
        for group in ([s for s in scored if s.stage == "sweep"], [s for s in scored if s.stage != "teachers"], scored):
            if group:
                return max(group, key=lambda s: s.best)
        return None


# --- reading ---------------------------------------------------------------------------------
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def driver_state(status: str, tags: Mapping[str, str], now: float, host: str | None = None,
                 alive: Callable[[int], bool] = pid_alive) -> Driver:
    """The rule: ended KILLED/FAILED -> gone; FINISHED -> finished; RUNNING -> gone when the
    recorded driver process is not running on this host, or its heartbeat is older than STALE_S."""
    if status in ("KILLED", "FAILED"):
        return Driver("gone", f"the study's run ended {status}")
    if status == "FINISHED":
        return Driver("finished", "the study's run ended FINISHED")
    if status != "RUNNING":
        return Driver("unknown", f"the study's run is {status}")
    where, _, pid = tags.get(DRIVER_TAG, "").rpartition(":")
    host = socket.gethostname() if host is None else host
    if where and where == host and pid.isdigit() and not alive(int(pid)):
        return Driver("gone", f"its driver (pid {pid} on {where}) is not running")
    beat = tags.get(HEARTBEAT_TAG, "")
    try:
        age = now - float(beat)
    except ValueError:
        return Driver("unknown", "RUNNING, but no heartbeat recorded (a study started by an older version)")
    if age > STALE_S:
        return Driver("gone", f"RUNNING, but no heartbeat for {fmt_duration(age)}; a running driver beats "
                              f"every {HEARTBEAT_EVERY_S:.0f} s")
    return Driver("running", f"{tags.get(DRIVER_TAG, '?')}, heartbeat {fmt_duration(age)} ago")


def latest_per_trial(runs: list) -> list:
    """One run per trial id (the latest), as `analysis.runs.runs_frame` keeps."""
    keyed: dict[str, object] = {}
    loose = []
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        trial_id = run.data.tags.get("trial_id", "")
        if trial_id:
            keyed[trial_id] = run
        else:
            loose.append(run)
    return [*keyed.values(), *loose]


def stage_statuses(parent_tags: Mapping[str, str], runs: list, metric: str) -> list[StageStatus]:
    """Per stage (study.plan's order, then any other stage tag) the counts of its trial runs."""
    stages: dict[str, StageStatus] = {s: StageStatus(s) for s in STAGE_ORDER}
    for key, value in parent_tags.items():
        for prefix, count in ((PLANNED_TAG, "planned"), (REUSED_TAG, "reused")):
            if key.startswith(prefix) and value.isdigit():
                name = key[len(prefix):]
                setattr(stages.setdefault(name, StageStatus(name)), count, int(value))
    for run in latest_per_trial(runs):
        tags, info = run.data.tags, run.info
        st = stages.setdefault(tags.get("stage", "?"), StageStatus(tags.get("stage", "?")))
        counter = {"FINISHED": "done", "RUNNING": "running", "SCHEDULED": "running", "FAILED": "failed",
                   "KILLED": "killed"}.get(info.status, "killed")
        setattr(st, counter, getattr(st, counter) + 1)
        if info.start_time:
            st.first_start_ms = min(st.first_start_ms or info.start_time, info.start_time)
        if info.end_time:
            st.last_end_ms = max(st.last_end_ms or 0, info.end_time)
        value = run.data.metrics.get(metric)
        if value is not None and (st.best is None or value > st.best):
            st.best, st.best_cell = value, tags.get("cell", "") or info.run_name or info.run_id
    return list(stages.values())


def _recorded_metric(client, parent) -> str:
    """The sweep metric: the parent's tag, else the recorded study.yaml's sweep.metric."""
    if METRIC_TAG in parent.data.tags:
        return parent.data.tags[METRIC_TAG]
    import yaml

    from analysis.store import CONFIG_ARTIFACT, downloaded

    try:
        with downloaded(client, parent.info.run_id, CONFIG_ARTIFACT) as path:
            raw = yaml.safe_load(path.read_text()) or {}
        return str((raw.get("sweep") or {}).get("metric", DEFAULT_METRIC))
    except (FileNotFoundError, yaml.YAMLError, AttributeError):
        return DEFAULT_METRIC


def read_status(client, uri: str, study: str, experiment_id: str, now: float | None = None,
                host: str | None = None) -> StudyStatus:
    from analysis.store import search_all, workdir_of

    now = time.time() if now is None else now
    parents = search_all(client, [experiment_id], f"tags.kind = 'parent' and tags.study = '{study}'")
    runs = search_all(client, [experiment_id], f"tags.kind = 'trial' and tags.study = '{study}'")
    if not parents:
        return StudyStatus(study, "NO RUN", None, None, DEFAULT_METRIC, stage_statuses({}, runs, DEFAULT_METRIC),
                           Driver("unknown", "no parent run of the study"))
    parent = max(parents, key=lambda r: r.info.start_time or 0)
    tags, info = parent.data.tags, parent.info
    metric = _recorded_metric(client, parent)
    workdir = workdir_of(uri)
    resume = tags.get(RESUME_TAG) or (f"study run <config> --resume --workdir {workdir}" if workdir
                                      else "study run <config> --resume (its --workdir and --set options)")
    return StudyStatus(study, info.status, info.start_time, info.end_time, metric,
                       stage_statuses(tags, runs, metric), driver_state(info.status, tags, now, host), resume)


def study_ids(client, uri: str, study: str | None) -> list[tuple[str, str]]:
    """[(study, experiment id)]: the one named, else every study of the store."""
    from analysis.runs import resolve_study, study_names

    if study is not None:
        return [resolve_study(client, uri, study)]
    names = study_names(client)
    if not names:
        raise UserError(f"the tracking store {uri} holds no study: run `study run` first")
    return [(n, client.get_experiment_by_name(n).experiment_id) for n in names]


# --- writing ---------------------------------------------------------------------------------
def _best_text(st: StageStatus | None) -> str:
    return f"{st.best:.4f}" if st is not None and st.best is not None else "-"


def render(ss: StudyStatus, now: float) -> list[str]:
    """The detailed view of one study."""
    lines = [f"study {ss.study}: {ss.status}, {fmt_duration(ss.elapsed_s(now))} since it started"
             if ss.start_ms else f"study {ss.study}: {ss.status}"]
    gone = ss.driver.state == "gone"
    head = f"  {'stage':<10} {'done':>5} {'running':>7} {'failed':>7} {'planned':>8} {'elapsed':>8}  best {ss.metric}"
    lines.append(head)
    for st in ss.stages:
        if st.stage in OPTIONAL_STAGES and not st.seen and st.planned is None:
            continue  # a stage this study does not have (budget: only with min_steps: auto)
        reused = f"{st.reused} reused from an earlier run" if st.reused else ""
        if not st.seen and not st.planned:
            lines.append(f"  {st.stage:<10} " + (f"{reused} (nothing to train)" if reused else
                                                 "nothing to run" if st.planned == 0 else
                                                 "not started" if ss.status == "RUNNING" else "not run"))
            continue
        planned = "?" if st.planned is None else str(st.planned)
        mark = "!" if gone and st.running else " "
        best = _best_text(st) + (f"  ({st.best_cell})" if st.best is not None else "")
        extra = (f"   {st.killed} interrupted" if st.killed else "") + (f"   {reused}" if reused else "")
        elapsed = fmt_duration(st.elapsed_s(now)) if st.first_start_ms else "-"
        lines.append(f"  {st.stage:<10} {st.done:>5} {st.running:>7}{mark}{st.failed:>7} {planned:>8} "
                     f"{elapsed:>8}  {best}{extra}")
    if gone and any(st.running for st in ss.stages):
        lines.append("  (!: left RUNNING by the driver that is gone; --resume runs them again)")
    lines.append(f"driver: {ss.driver.state} ({ss.driver.why})" if ss.driver.why else f"driver: {ss.driver.state}")
    if gone:
        lines.append(f"resume with:\n  {ss.resume}")
    elif ss.status == "FINISHED" and ss.failed:
        lines.append(f"{ss.failed} trial(s) FAILED (their runs hold the error, tag 'error'); rerun them with:\n"
                     f"  {ss.resume}")
    return lines


def one_line(ss: StudyStatus, now: float) -> str:
    """One study in a store's list."""
    done = sum(s.done for s in ss.stages)
    planned = sum(s.planned for s in ss.stages if s.planned is not None)
    running = sum(s.running for s in ss.stages)
    best = ss.best()
    text = (f"{ss.study:<20} {ss.status:<9} {done}/{planned} done, {running} running, {ss.failed} failed, "
            f"{fmt_duration(ss.elapsed_s(now)) if ss.start_ms else '-'}, best {ss.metric} {_best_text(best)}"
            + (f" ({best.stage})" if best is not None else ""))
    if ss.driver.state == "gone":
        text += f"; driver gone: {ss.resume}"
    return text


@click.command("status")
@workdir_option
@uri_option
@click.option("--study", "study_name", default=None,
              help="Study (MLflow experiment) name; default: every study of the store (the only one in full).")
def status(workdir: Path, tracking_uri, study_name) -> None:
    """Where a study stands, from MLflow alone: trials per stage, best validation result, driver, resume."""
    from analysis.store import open_existing, tracking_uri as resolve_uri

    uri = resolve_uri(workdir, tracking_uri)
    try:
        client = open_existing(uri)
        studies = study_ids(client, uri, study_name)
        now = time.time()
        found = [read_status(client, uri, name, exp, now) for name, exp in studies]
    except UserError as exc:
        fail(exc)
    if len(found) == 1:
        for line in render(found[0], now):
            click.echo(line)
        return
    click.echo(f"{len(found)} studies at {uri} (details: study status --study NAME):")
    for ss in found:
        click.echo("  " + one_line(ss, now))
