"""MLflow's artifact downloads without their progress bars (tqdm on the user's terminal), for
every command that fetches a run's artifact or model: `study predict`, `report`, `export`.
Torch-free; `analysis/` and `trainables/serving.py` both use it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # read by MLflow at each download


@contextmanager
def no_download_bars() -> Iterator[None]:
    """Within: MLflow shows no download bar. The variable is put back as it was after."""
    before = os.environ.get(PROGRESS_BAR_ENV)
    os.environ[PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PROGRESS_BAR_ENV, None)
        else:
            os.environ[PROGRESS_BAR_ENV] = before
