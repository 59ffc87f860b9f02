"""One driver per study: a lease file in the study's storage folder.

Ray Tune and MLflow have no lock for a study: two `study run` drivers on one study would train
the same trials into the same checkpoint folders and the same parent run. The first driver
creates `<storage>/<study>/driver.lease` (written whole, then linked to its name: of two
drivers started together one wins, and none ever reads a half-written lease) holding its host, pid, start time and a heartbeat it rewrites every `BEAT_S`
seconds. Another driver finds a live lease and exits 2 naming its holder. A lease is stale
when its heartbeat is older than the timeout (`TIMEOUT_ENV`, default `TIMEOUT_S`), or when
its holder ran on this host and its process is gone (a driver killed with SIGKILL): `--resume`
takes it over and says so. Taking over renames the stale file first (one rename wins), so two
resumers never both hold it. The driver removes its lease when it ends.

With a remote storage (s3://, gs://) the lease lives in the local workdir: it then guards the
drivers of this machine only.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from study.status import pid_alive
from trainables.errors import UserError

FILE = "driver.lease"
BEAT_S = 15.0
TIMEOUT_S = 180.0
TIMEOUT_ENV = "CKD_STUDY_LEASE_TIMEOUT_S"


class LeaseHeld(UserError):
    """Another driver is running this study."""


def timeout_s() -> float:
    try:
        return max(1.0, float(os.environ.get(TIMEOUT_ENV, TIMEOUT_S)))
    except ValueError:
        return TIMEOUT_S


class StudyLease:
    """`with StudyLease(folder, study, status_command).held(resume):` while a driver runs."""

    def __init__(self, folder: str | Path, study: str, status_command: str = "",
                 clock: Callable[[], float] = time.time):
        self.path = Path(folder) / FILE
        self.study, self.status_command, self.clock = study, status_command, clock
        self.token = uuid.uuid4().hex
        self.note = ""  # what acquiring it did, when worth saying (a stale lease taken over)
        self._made: list[Path] = []  # the folders `acquire` created, deepest first
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- reading ----------------------------------------------------------------------------
    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # half written by a driver that died mid-write: stale
            return {"host": "?", "pid": -1, "heartbeat": 0.0, "started": 0.0}

    def stale(self, lease: dict) -> bool:
        if self.clock() - float(lease.get("heartbeat", 0.0)) > timeout_s():
            return True
        return lease.get("host") == socket.gethostname() and not pid_alive(int(lease.get("pid", -1)))

    def check_free(self) -> None:
        """LeaseHeld when a live driver holds the study (read only: nothing is written)."""
        lease = self.read()
        if lease is not None and lease.get("token") != self.token and not self.stale(lease):
            raise LeaseHeld(self._held_message(lease))

    def _held_message(self, lease: dict) -> str:
        age = self.clock() - float(lease.get("heartbeat", 0.0))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(lease.get("started", 0.0))))
        return (f"study {self.study!r} is being run by another driver: pid {lease.get('pid')} on "
                f"{lease.get('host')}, started {started}, heartbeat {age:.0f} s ago ({self.path}). Watch it with "
                f"`{self.status_command or 'study status'}`; a driver that is gone frees it after "
                f"{timeout_s():.0f} s without a heartbeat ({TIMEOUT_ENV}), at once when it ran on this host")

    # --- holding ----------------------------------------------------------------------------
    def acquire(self, resume: bool) -> None:
        self._made = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                self._create()
            except FileExistsError:
                lease = self.read()
                if lease is None:
                    continue  # released meanwhile: try again
                if not self.stale(lease):
                    raise LeaseHeld(self._held_message(lease)) from None
                if not resume:
                    raise UserError(f"study {self.study!r} was left by a driver that is gone (pid {lease.get('pid')} "
                                    f"on {lease.get('host')}): continue it with --resume") from None
                try:  # one of several resumers wins this rename; the others try again and find its lease
                    os.rename(self.path, self.path.with_name(f"{FILE}.stale-{self.token}"))
                except FileNotFoundError:
                    continue
                self.path.with_name(f"{FILE}.stale-{self.token}").unlink(missing_ok=True)
                self.note = (f"took over the lease of a driver that is gone (pid {lease.get('pid')} on "
                             f"{lease.get('host')}, last heartbeat {self.clock() - float(lease.get('heartbeat', 0)):.0f} "
                             "s ago)")
                continue
            return
        raise LeaseHeld(f"study {self.study!r}: another driver took its lease at the same time ({self.path})")

    def _create(self) -> None:
        """Create the lease file with its content at once (FileExistsError when it exists): written
        to a file of our own, then hard-linked to the lease's name, so that another driver never
        reads a lease half written (which would look stale, and be taken over)."""
        tmp = self.path.with_name(f"{FILE}.{self.token}.new")
        tmp.write_text(json.dumps(self._record(started=self.clock())))
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: exclusive create, then write
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(tmp.read_text())
        finally:
            tmp.unlink(missing_ok=True)

    def _record(self, started: float) -> dict:
        return {"study": self.study, "host": socket.gethostname(), "pid": os.getpid(), "started": started,
                "heartbeat": self.clock(), "token": self.token}

    def beat(self) -> None:
        """Rewrite the heartbeat (atomically), while the lease is still ours."""
        lease = self.read()
        if lease is None or lease.get("token") != self.token:
            return
        tmp = self.path.with_name(f"{FILE}.{self.token}.tmp")
        tmp.write_text(json.dumps(self._record(started=float(lease.get("started", self.clock())))))
        os.replace(tmp, self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        lease = self.read()
        if lease is not None and lease.get("token") == self.token:
            self.path.unlink(missing_ok=True)
            for folder in self._made:  # a driver refused by its checks leaves no folder behind
                try:
                    folder.rmdir()
                except OSError:  # the study wrote something there: it stays
                    break

    def __enter__(self) -> "StudyLease":
        def run() -> None:
            while not self._stop.wait(BEAT_S):
                try:
                    self.beat()
                except OSError:  # a full or gone disk: the next beat tries again
                    pass

        self._thread = threading.Thread(target=run, name="study-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
