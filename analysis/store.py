"""The one MLflow adapter of the project: the default tracking URI, opening a store (and
checking it can be reached), paging through runs, reading an artifact. `study.tracking`
(the driver's writes) and `analysis.runs` (the reads behind `study report`) both use it.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from trainables.errors import UserError

if TYPE_CHECKING:  # mlflow is imported where a store is opened: validating a config needs only default_uri
    from mlflow.tracking import MlflowClient

CONFIG_ARTIFACT = "study.yaml"  # the parent run's artifact: the effective config the study ran
DB_NAME = "mlflow.db"


def default_uri(workdir: str | Path = "runs") -> str:
    """`study run`'s default store: a SQLite file in the work folder."""
    return f"sqlite:///{Path(workdir).resolve() / DB_NAME}"


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: `artifacts/` beside the
    database (MLflow's own default is `./mlruns` in whatever folder the driver runs from).
    None for a server, which decides itself (`--artifacts-destination`)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts").as_uri()


def tracking_uri(workdir: str | Path | None = None, uri: str | None = None) -> str:
    """The URI given, else the default one of `workdir`."""
    return uri or default_uri(workdir or "runs")


def workdir_of(uri: str) -> str | None:
    """The work folder of a default SQLite URI (None for any other store)."""
    if uri.startswith("sqlite:///") and uri.endswith(f"/{DB_NAME}"):
        return str(Path(uri.removeprefix("sqlite:///")).parent)
    return None


def check_reachable(client: MlflowClient, uri: str) -> None:
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:
        raise UserError(
            f"MLflow tracking URI {uri} cannot be reached or opened: "
            f"{exc.__class__.__name__}: {str(exc)[:300]}. Start the server or fix tracking_uri."
        ) from None


def open_existing(uri: str) -> MlflowClient:
    """A client on a store that must already exist (reading never creates an empty SQLite DB)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise UserError(f"no MLflow store at {uri} ({path} does not exist): pass the --workdir "
                            "that `study run` used, or --tracking-uri")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    check_reachable(client, uri)
    return client


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list:
    """Every run matching `filter_string`, page after page."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


@contextmanager
def downloaded(client: MlflowClient, run_id: str, artifact: str) -> Iterator[Path]:
    """A run's artifact in a temporary folder (no progress bar); FileNotFoundError if it has none."""
    quiet = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(quiet)
    os.environ[quiet] = "false"
    try:
        with tempfile.TemporaryDirectory() as d:
            try:
                path = Path(client.download_artifacts(run_id, artifact, d))
            except Exception:
                raise FileNotFoundError(f"run {run_id} has no artifact {artifact}") from None
            yield path
    finally:
        if before is None:
            os.environ.pop(quiet, None)
        else:
            os.environ[quiet] = before
