"""What the driver shows and records about its progress, so that `study status` can read it
from MLflow alone (another terminal or machine):

- `StageProgress`: one line per stage Tuner on stdout (trials done of planned, running,
  failed, elapsed, ETA): rewritten in place on a terminal, a new line at each change
  elsewhere (CI logs). Plain Python, fed by `study.tuner.ProgressCallback` (Ray's hooks).
- `Heartbeat`: a tag on the study's parent run that the driver updates while it runs.
- `record_driver` / `record_planned`: the parent run's other progress tags (who runs the
  study, the command that resumes it, the sweep metric, the trials planned per stage).

Torch-, Ray- and MLflow-free at import (MLflow is imported where a client is made).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from study.config import STAGES

log = logging.getLogger(__name__)

STAGE_ORDER = STAGES
# the parent run's tags (all strings)
PLANNED_TAG = "progress.planned."  # + stage: trials that stage runs in all, set when it starts
REUSED_TAG = "progress.reused."  # + stage: earlier runs it reuses instead of training (teachers)
HEARTBEAT_TAG = "progress.heartbeat"  # unix seconds, updated by the driver while it runs
DRIVER_TAG = "progress.driver"  # host:pid of the driver
RESUME_TAG = "progress.resume"  # the command that continues the study
METRIC_TAG = "progress.metric"  # the sweep's selection metric (val_auc, ...)
HEARTBEAT_EVERY_S = 30.0
TTY_EVERY_S = 1.0  # a terminal's line is rewritten at most this often (the ETA moves at each)


def fmt_duration(seconds: float | None) -> str:
    """45 -> '45s', 185 -> '3m05s', 7380 -> '2h03m'; None -> '?'."""
    if seconds is None:
        return "?"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def resume_command(config_path: str | Path, workdir: str | Path, overrides: Sequence[str] = (),
                   address: str | None = None) -> str:
    """`study run CONFIG --resume --workdir DIR [--set ...] [--address ADDR]`: what continues a study."""
    from study.config_reader import set_options

    parts = [f"study run {config_path} --resume --workdir {workdir}", set_options(overrides)]
    if address:
        parts.append(f"--address {address}")
    return " ".join(p for p in parts if p)


class StageProgress:
    """Counts of one stage's trials from start/end events and Ray's trial statuses, and its line.

    ETA: the work left (trials not started × the mean duration of the ended ones, plus what the
    running ones have left of that mean) spread over the most trials seen running at once, and
    never less than what the longest-running trial has left."""

    def __init__(self, name: str, planned: int, *, quiet: bool = False, stream: TextIO | None = None,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.name, self.planned, self.quiet = name, planned, quiet
        self.stream, self.tty, self.clock = stream, tty, clock
        self._reset()

    def _reset(self) -> None:
        self.started_at: float | None = None
        self.starts: dict[str, float] = {}  # running trial -> when it started
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.durations: list[float] = []  # of ended trials, seconds
        self.peak = 0  # most trials running at once
        self._shown = ""  # the last line shown
        self._counts_shown: tuple[int, int, int] | None = None  # and its counts
        self._shown_at = -1e18
        self._open = False  # a tty line without its newline yet

    def __getstate__(self):  # pickled into Ray's tuner.pkl: the stream, clock and counts stay behind
        return {"name": self.name, "planned": self.planned, "quiet": self.quiet}

    def __setstate__(self, state):
        self.__init__(state["name"], state["planned"], quiet=state["quiet"])

    def state(self) -> dict[str, Any]:
        """What a resumed stage needs to go on counting (saved in Ray's experiment state)."""
        return {"done": sorted(self.done), "failed": sorted(self.failed), "durations": list(self.durations),
                "peak": self.peak}

    def restore(self, state: dict[str, Any]) -> None:
        self.done |= set(state.get("done", ()))
        self.failed |= set(state.get("failed", ()))
        self.durations = list(state.get("durations", ())) + self.durations
        self.peak = max(self.peak, int(state.get("peak", 0)))

    # --- events ---------------------------------------------------------------------------
    def trial_started(self, trial_id: str) -> None:
        now = self._now()
        self.done.discard(trial_id)
        self.failed.discard(trial_id)
        self.starts.setdefault(trial_id, now)
        self.peak = max(self.peak, len(self.starts))
        self.show()

    def trial_ended(self, trial_id: str, failed: bool = False) -> None:
        now = self._now()
        start = self.starts.pop(trial_id, None)
        if start is not None:
            self.durations.append(now - start)
        (self.failed if failed else self.done).add(trial_id)
        (self.done if failed else self.failed).discard(trial_id)
        self.show()

    def sync(self, done: Sequence[str], failed: Sequence[str]) -> None:
        """Trials Ray reports ended that no event told of (a restored stage's earlier trials)."""
        for trial_id in done:
            if trial_id not in self.done and trial_id not in self.failed:
                self.starts.pop(trial_id, None)
                self.done.add(trial_id)
        for trial_id in failed:
            if trial_id not in self.failed:
                self.starts.pop(trial_id, None)
                self.done.discard(trial_id)
                self.failed.add(trial_id)

    def begin(self) -> None:
        """The stage's clock starts (elapsed time counts from here)."""
        self._now()

    def _now(self) -> float:
        now = self.clock()
        if self.started_at is None:
            self.started_at = now
        return now

    # --- the line -------------------------------------------------------------------------
    def eta(self, now: float | None = None) -> float | None:
        """Seconds until every planned trial ended; None before any trial ended."""
        if not self.durations:
            return None
        now = self.clock() if now is None else now
        mean = sum(self.durations) / len(self.durations)
        running = len(self.starts)
        waiting = max(self.planned - len(self.done) - len(self.failed) - running, 0)
        left = [max(mean - (now - t), 0.0) for t in self.starts.values()]  # of the running trials
        return max((waiting * mean + sum(left)) / max(self.peak, 1), max(left, default=0.0))

    def counts(self) -> tuple[int, int, int]:
        return len(self.done), len(self.starts), len(self.failed)

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        done, running, failed = self.counts()
        planned = max(self.planned, done + running + failed)  # a restored Tuner may hold more
        elapsed = now - self.started_at if self.started_at is not None else 0.0
        finished = done + failed >= planned and not running
        tail = "done" if finished else f"ETA {fmt_duration(self.eta(now))}"
        return (f"[{self.name}] {done}/{planned} done, {running} running, {failed} failed, "
                f"{fmt_duration(elapsed)} elapsed, {tail}")

    def _is_tty(self) -> bool:
        if self.tty is not None:
            return self.tty
        try:
            return self._out().isatty()
        except (AttributeError, ValueError):
            return False

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def show(self, force: bool = False) -> None:
        """A terminal: rewrite the line when the counts changed, else at most every TTY_EVERY_S
        (elapsed time and ETA move); elsewhere: a new line only when the counts changed."""
        if self.quiet:
            return
        now, counts = self.clock(), self.counts()
        text, out = self.line(now), self._out()
        if self._is_tty():
            moved = counts != self._counts_shown or now - self._shown_at >= TTY_EVERY_S
            if text == self._shown or not (force or moved):
                return
            out.write("\r" + text + " " * max(len(self._shown) - len(text), 0))
            self._open = True
        else:
            if counts == self._counts_shown and not force:
                return
            out.write(text + "\n")
        out.flush()
        self._shown, self._counts_shown, self._shown_at = text, counts, now

    def tick(self) -> None:
        """Between events (each step of Tune's loop): a terminal's ETA and elapsed time move;
        counts that `sync` changed are shown."""
        self.show()

    def close(self) -> None:
        """The stage's last line, ended by a newline."""
        if self.quiet:
            return
        if self._is_tty():
            self.show(force=True)
            if self._open:
                self._out().write("\n")
                self._out().flush()
                self._open = False
        elif self._counts_shown != self.counts():
            self.show(force=True)


class Heartbeat:
    """Sets the parent run's `HEARTBEAT_TAG` to the time, at most every `every_s` seconds.
    Best effort: a tracking server that does not answer costs a warning, never the study."""

    def __init__(self, uri: str, run_id: str, every_s: float = HEARTBEAT_EVERY_S,
                 clock: Callable[[], float] = time.time):
        self.uri, self.run_id, self.every_s, self.clock = uri, run_id, every_s, clock
        self._client = None
        self._last = -1e18
        self._warned = False

    def __getstate__(self):
        return {"uri": self.uri, "run_id": self.run_id, "every_s": self.every_s}

    def __setstate__(self, state):
        self.__init__(state["uri"], state["run_id"], state["every_s"])

    def beat(self, force: bool = False) -> bool:
        """True when the tag was written."""
        now = self.clock()
        if not force and now - self._last < self.every_s:
            return False
        self._last = now
        try:
            if self._client is None:
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.uri)
            self._client.set_tag(self.run_id, HEARTBEAT_TAG, f"{now:.0f}")
            return True
        except Exception as exc:  # the study goes on; `study status` then reads an older heartbeat
            if not self._warned:
                log.warning("could not write the study's heartbeat to %s: %s", self.uri, exc)
                self._warned = True
            return False


def _set_tags(client, run_id: str, tags: dict[str, str]) -> None:
    """Best effort, as the heartbeat: progress tags never stop a study."""
    from mlflow.entities import RunTag

    try:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    except Exception as exc:
        log.warning("could not record the study's progress tags %s on run %s: %s", sorted(tags), run_id, exc)


def record_driver(client, run_id: str, resume: str, metric: str) -> None:
    """On (re)start of the driver: who runs the study, how to resume it, its sweep metric."""
    _set_tags(client, run_id, {DRIVER_TAG: f"{socket.gethostname()}:{os.getpid()}", RESUME_TAG: resume,
                               METRIC_TAG: metric, HEARTBEAT_TAG: f"{time.time():.0f}"})


def record_reused(client, run_id: str, stage: str, reused: int) -> None:
    """How many of `stage`'s trials are earlier runs reused (a teacher trained by another study)."""
    _set_tags(client, run_id, {REUSED_TAG + stage: str(int(reused))})


def record_planned(client, run_id: str, stage: str, planned: int) -> None:
    """The trials `stage` runs in all, once: a resumed stage keeps the number it started with."""
    try:
        tags = client.get_run(run_id).data.tags
    except Exception:
        tags = {}
    if PLANNED_TAG + stage not in tags:
        _set_tags(client, run_id, {PLANNED_TAG + stage: str(int(planned))})
