"""Environment variables set for a while and put back after: how this project quiets the
libraries that read a variable at each call. Torch-free; `study/`, `analysis/` and
`trainables/serving.py` use it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # read by MLflow at each download


@contextmanager
def temporary_env(name: str, value: str) -> Iterator[None]:
    """Within: `name` is `value`. After, even on an error, it is as it was (unset if it was)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def no_download_bars():
    """Within: MLflow shows no download bar (`study predict`, `report`, `export` on a user's terminal)."""
    return temporary_env(PROGRESS_BAR_ENV, "false")
