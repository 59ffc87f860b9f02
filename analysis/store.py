"""The one MLflow adapter of the project: the default tracking URI, opening a store (and
checking it can be reached), paging through runs, reading an artifact. `study.tracking`
(the driver's writes) and `analysis.runs` (the reads behind `study report`) both use it.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from trainables.env import no_download_bars
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


SNAPSHOTS = "snapshots"  # beside a SQLite store: copies taken at each stage's end (`snapshot_sqlite`)
SNAPSHOTS_KEPT = 3


class MovedStore(UserError):
    """An artifact is missing because the study folder was moved after it was recorded."""


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def snapshots_of(db: Path) -> list[Path]:
    """The SQLite store's snapshots, oldest first."""
    folder = db.parent / SNAPSHOTS
    return sorted(folder.glob(f"{db.stem}-*.db"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []


def check_sqlite(db: Path) -> None:
    """A UserError naming the file and its latest snapshot when SQLite finds the store damaged
    (before MLflow opens it, which would end in a SQLAlchemy traceback)."""
    import sqlite3

    if not db.is_file():
        return
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            found = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        found = str(exc)
    if found != "ok":
        snaps = snapshots_of(db)
        fix = (f"roll back to its latest snapshot: cp {snaps[-1]} {db} (what was recorded after it is lost; "
               "`study run --resume` reruns those trials)") if snaps else "no snapshot of it was kept"
        raise UserError(f"the MLflow store {db} is damaged (SQLite: {str(found)[:200]}): {fix}")


def snapshot_sqlite(uri: str, label: str, keep: int = SNAPSHOTS_KEPT) -> Path | None:
    """A consistent copy of a SQLite store (SQLite's online backup: safe while it is written) in
    `snapshots/` beside it, named by `label` and the time; the `keep` newest are kept. None for
    other stores, or when the copy fails (a snapshot never stops a study)."""
    import sqlite3
    import time

    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return None
    folder = db.parent / SNAPSHOTS
    dest = folder / f"{db.stem}-{time.strftime('%Y%m%d-%H%M%S')}-{label}.db"
    try:
        folder.mkdir(exist_ok=True)
        with closing(sqlite3.connect(str(db))) as src, closing(sqlite3.connect(str(dest))) as out:
            src.backup(out)
    except (OSError, sqlite3.Error):
        dest.unlink(missing_ok=True)
        return None
    for old in snapshots_of(db)[:-keep]:
        old.unlink(missing_ok=True)
    return dest


# where a SQLite store records absolute paths of the study folder: artifact locations, and the
# teachers' checkpoint paths (run tags)
RELOCATED = (("experiments", "artifact_location", None), ("runs", "artifact_uri", None),
             ("logged_models", "artifact_location", None), ("model_versions", "source", None),
             ("model_versions", "storage_location", None), ("tags", "value", "checkpoint_path"))


def recorded_root(db: Path) -> Path | None:
    """The study folder a SQLite store's artifacts were recorded under: the folder that held its
    `artifacts/` when its first experiment was made (None when it has none, or no local one)."""
    import sqlite3
    from urllib.parse import unquote, urlparse

    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT artifact_location FROM experiments WHERE artifact_location LIKE 'file://%' "
                            "ORDER BY experiment_id").fetchall()
    for (location,) in rows:
        path = Path(unquote(urlparse(location).path))
        for parent in (path, *path.parents):
            if parent.name == "artifacts":
                return parent.parent
    return None


def moved_from(uri: str) -> Path | None:
    """The folder a SQLite store's study folder was moved from: its artifacts were recorded under
    a folder that no longer exists, and the store's own folder holds `artifacts/` (None otherwise)."""
    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return None
    old = recorded_root(db)
    here = db.resolve().parent
    if old is None or old == here or old.exists() or not (here / "artifacts").is_dir():
        return None
    return old


def relocate(db: Path, old: Path, new: Path) -> dict[str, int]:
    """Rewrite every path a SQLite store recorded under folder `old` to the same path under `new`
    (artifact locations of experiments, runs, logged models and model versions; the teachers'
    checkpoint paths), in one transaction, after a snapshot of the store; rows changed per column."""
    import sqlite3

    snapshot_sqlite(f"sqlite:///{db}", "before-relocate")
    old_s, new_s = str(old).rstrip("/"), str(new).rstrip("/")
    changed: dict[str, int] = {}
    with closing(sqlite3.connect(str(db))) as conn, conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, column, key in RELOCATED:
            if table not in tables:
                continue
            where = f"{column} LIKE ? || '%'" if key is None else f"key = '{key}' AND {column} LIKE ? || '%'"
            for prefix_old, prefix_new in ((f"file://{old_s}/", f"file://{new_s}/"), (f"{old_s}/", f"{new_s}/")):
                cur = conn.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE {where}",
                                   (prefix_new, len(prefix_old) + 1, prefix_old))
                changed[f"{table}.{column}"] = changed.get(f"{table}.{column}", 0) + cur.rowcount
    return changed


# filesystems whose locking SQLite cannot rely on (SQLite's FAQ: "use a client/server database
# engine" over a network filesystem); on these a SQLite store gets a warning
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "sshfs", "lustre", "gpfs", "ceph",
              "fuse.ceph", "glusterfs", "fuse.glusterfs", "beegfs", "afs", "fuse.s3fs", "fuse.gcsfuse")


def filesystem_of(path: Path, mounts: str | None = None) -> str | None:
    """The filesystem type of the mount holding `path` (the longest mount point that contains it,
    from /proc/mounts, or `mounts` given in its format); None where it cannot be read."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return None
    target = Path(os.path.abspath(path))
    best, kind = -1, None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (target == point or point in target.parents) and len(point.parts) > best:
            best, kind = len(point.parts), fields[2]
    return kind


def network_store_warning(uri: str, mounts: str | None = None) -> str | None:
    """A warning when a SQLite store lies on a network filesystem, with the alternative."""
    db = sqlite_path(uri)
    if db is None:
        return None
    kind = filesystem_of(db.parent, mounts)
    if kind not in NETWORK_FS:
        return None
    return (f"the MLflow store {db} is a SQLite file on a network filesystem ({kind}), where SQLite's file locking "
            "cannot be relied on (writes from several trials may corrupt it or fail): run an MLflow server and give "
            "its URI as tracking_uri (README, 'Running on a cluster'); Ray's storage may stay on the shared folder")


def check_reachable(client: MlflowClient, uri: str) -> None:
    db = sqlite_path(uri)
    if db is not None:
        check_sqlite(db)
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
        check_sqlite(path)  # before MLflow opens it
        old = moved_from(uri)
        if old is not None:  # every artifact it recorded would be missing: say why, once, up front
            raise MovedStore(f"the study folder {path.resolve().parent} was moved from {old}, where its MLflow store "
                             f"recorded every artifact: rewrite those paths with `study relocate --workdir "
                             f"{path.resolve().parent} {old}`")
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
    with no_download_bars(), tempfile.TemporaryDirectory() as d:
        try:
            path = Path(client.download_artifacts(run_id, artifact, d))
        except Exception:
            old = moved_from(client.tracking_uri) if hasattr(client, "tracking_uri") else None
            if old is not None:
                db = sqlite_path(client.tracking_uri).resolve()
                raise MovedStore(f"run {run_id}'s artifact {artifact} was recorded under {old}, which no longer "
                                 f"exists: the study folder moved to {db.parent}. Rewrite the store's paths with "
                                 f"`study relocate --workdir {db.parent} {old}`") from None
            raise FileNotFoundError(f"run {run_id} has no artifact {artifact}") from None
        yield path
