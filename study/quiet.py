"""A quiet terminal: Ray's, MLflow's and Optuna's own log lines go to a file, not the console.

Without `--verbose`, `study run` shows its progress lines, this project's warnings and the
summary; the libraries' INFO and WARNING lines (Ray's start-up and token notes, Tune's "Wrote
the latest version of all result files", MLflow's database set-up, Optuna's "A new study
created") are appended to `<workdir>/logs/<study>.log`, created when the first of them
arrives (a run that fails before any library speaks writes nothing). Worker processes' output
reaches the terminal only with `--verbose` (Ray's `log_to_driver`, set in the runner); a
trial's error is in its MLflow run either way.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LIBRARY_LOGGERS = ("ray", "mlflow", "optuna", "alembic", "filelock", "urllib3")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ACTIVE: list[logging.Handler] = []  # the file handler of the library_logs context in force, if any


def log_path(workdir: str | Path, study: str) -> Path:
    return Path(workdir) / "logs" / f"{study}.log"


def _library(name: str) -> bool:
    return any(name == lib or name.startswith(lib + ".") for lib in LIBRARY_LOGGERS)


class _LastResort(logging.Handler):
    """Python's last resort (records of a logger without handlers, e.g. Ray's while `ray.init`
    has cleared them): a library's to the file, anyone else's as before (to stderr)."""

    def __init__(self, file: logging.Handler, before: logging.Handler | None):
        super().__init__(logging.NOTSET)
        self.file, self.before = file, before

    def emit(self, record: logging.LogRecord) -> None:
        if _library(record.name):
            self.file.handle(record)
        elif self.before is not None and record.levelno >= self.before.level:
            self.before.handle(record)


def reattach() -> None:
    """Put the active file handler back on the libraries' loggers (`ray.init` clears Ray's)."""
    for handler in _ACTIVE[-1:]:
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = [handler], False


class _LazyFile(logging.FileHandler):
    """A file handler that makes its folder and file on the first record (`delay`)."""

    def __init__(self, path: Path):
        super().__init__(path, delay=True, encoding="utf-8")
        self.path = path

    def _open(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:
        """A line that cannot be written (a full disk) is dropped: the libraries' log file is a
        record for later, and Python's default would print a traceback on the terminal."""


@contextmanager
def library_logs(path: Path, enabled: bool = True) -> Iterator[Path | None]:
    """While inside: every record of LIBRARY_LOGGERS (INFO and above) goes to `path` only.
    `enabled=False` (--verbose) leaves the loggers as they are."""
    if not enabled:
        yield None
        return
    try:  # Optuna adds its console handler on first use: let it do so now, to be replaced below
        import optuna

        optuna.logging.get_logger("optuna")
    except ImportError:  # pragma: no cover (a dependency)
        pass
    handler = _LazyFile(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    saved = []
    last_resort = logging.lastResort
    logging.lastResort = _LastResort(handler, last_resort)
    _ACTIVE.append(handler)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    try:
        yield path
    finally:
        _ACTIVE.remove(handler)
        logging.lastResort = last_resort
        for logger, handlers, propagate, level in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        handler.close()
