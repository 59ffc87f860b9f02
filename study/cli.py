"""The `study` command line: thin commands over study.config / study.runner / analysis."""
from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path

import click

from study.config import STAGES
from study.exits import EXIT_INTERRUPTED, EXIT_SOME_FAILED, fail
from trainables.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def shipped_config(name: str) -> Path:
    """`quickstart` or `configs/quickstart.yaml` -> the file; a path is returned as it is."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if candidate.is_file():
        return candidate
    shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise UserError(f"config {name} does not exist (shipped configs: {shipped})")



@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Few-sample knowledge distillation studies for deepfake detectors (Ray Tune + Optuna + MLflow)."""


@main.command()
@click.argument("config", required=False, default="quickstart")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Where MLflow's SQLite DB, Ray storage and generated data go.")
@click.option("--address", default=None, help="An existing Ray cluster ('auto' on its head, or ray://host:port).")
@click.option("--resume", is_flag=True, help="Continue an interrupted study without re-running finished trials "
                                                     "(the same config and --set options).")
@click.option("--stage", type=click.Choice(list(STAGES)), default=None,
              help="Run only this stage (earlier stages' results are read from MLflow).")
@click.option("--max-concurrent", type=int, default=None, help="At most this many trials at once.")
@click.option("--retrain-teachers", is_flag=True,
              help="Train the teachers anew instead of reusing finished ones (e.g. from older code).")
@click.option("--quiet", is_flag=True, help="No progress lines (only each stage's start and the summary).")
@click.option("--verbose", is_flag=True, help="Ray Tune's own trial tables, and Ray's, MLflow's and Optuna's log "
                                               "lines (otherwise in <workdir>/logs/<study>.log), on the terminal.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config value before validation: a dotted KEY into the YAML, a YAML VALUE "
                   "(e.g. --set students.seeds=[0,1,2] --set data.root=/data/ffpp). Repeatable; "
                   "--resume needs the same ones.")
def run(config: str, workdir: Path, address, resume: bool, stage, max_concurrent, retrain_teachers: bool,
        quiet: bool, verbose: bool, overrides: tuple[str, ...]) -> None:
    """Run a study (default: the built-in quickstart on synthetic data)."""
    from study.config import load_config
    from study.progress import resume_command

    try:  # torch-free and fast: Ray, MLflow and torch are imported only for a valid config
        path = shipped_config(config)
        cfg = load_config(path, workdir, overrides)
    except UserError as exc:
        fail(exc)
    from study.runner import RunOptions, StudyInterrupted, StudyRunner
    from study.summary import print_summary

    try:
        runner = StudyRunner(cfg, RunOptions(workdir=workdir, address=address, resume=resume, stage=stage,
                                             max_concurrent=max_concurrent, retrain_teachers=retrain_teachers,
                                             verbose=0 if quiet else 2 if verbose else 1),
                             echo=click.echo)
        summary = runner.run()
    except UserError as exc:
        fail(exc)
    except (StudyInterrupted, KeyboardInterrupt):  # before the handler of any other error below
        click.echo(f"\nstudy interrupted; finished trials are kept. Resume with:\n"
                   f"  {resume_command(path, workdir, overrides, address)}", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a full disk under the study's own files, or an error it caused further down
        from study.tracking import disk_full, disk_full_error, low_space
        if disk_full(exc):
            fail(disk_full_error(str(getattr(exc, "filename", None) or workdir), exc))
        left = low_space(workdir)
        if left:  # e.g. a store left half-written by the full disk: the cause is the disk
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            fail(disk_full_error(str(workdir), f"{exc.__class__.__name__}: {first} with {left // 1024} KB left"))
        raise
    print_summary(cfg, summary, workdir, click.echo)
    if summary.errors:
        click.echo(f"{summary.errors} trial(s) FAILED: their runs in MLflow hold the error "
                   f"(tag 'error'); rerun them with: {resume_command(path, workdir, overrides, address)}", err=True)
        sys.exit(EXIT_SOME_FAILED)


@main.command()
@click.argument("config", required=False, default="quickstart")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Where the study would run (nothing is written there).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for `study run`.")
def plan(config: str, workdir: Path, overrides: tuple[str, ...]) -> None:
    """Show what `study run CONFIG` would run: stages, cells, trial counts and where each cell's
    hyperparameters come from. Starts nothing and writes nothing (no Ray, no torch)."""
    from study.config import load_config
    from study.plan_view import describe

    try:
        cfg = load_config(shipped_config(config), workdir, overrides)
        describe(cfg, click.echo)
    except UserError as exc:
        fail(exc)


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True)
@click.option("--tracking-uri", default=None, help="Default: sqlite:///<workdir>/mlflow.db")
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (only loopback by default).")
@click.option("--port", default=5000, show_default=True)
def ui(workdir: Path, tracking_uri, host: str, port: int) -> None:
    """Open the MLflow UI on a study's tracking store (which must exist: nothing is created)."""
    import os

    from analysis.store import open_existing, tracking_uri as resolve_uri

    uri = resolve_uri(workdir, tracking_uri)
    try:
        client = open_existing(uri)  # a wrong --workdir is named, and no empty store is made
        experiments = [e for e in client.search_experiments() if e.name != "Default"]
    except UserError as exc:
        fail(exc)
    # this interpreter's MLflow: the UI works without an activated virtualenv
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    click.echo(" ".join(argv))
    for e in experiments:  # MLflow 3 opens on its GenAI pages: the runs list of each study is here
        click.echo(f"study {e.name}: {runs_page(host, port, e.experiment_id)}")
    os.execv(argv[0], argv)  # an argument list, never a shell string


def runs_page(host: str, port: int, experiment_id: str) -> str:
    """The address of a study's runs list in MLflow 3's UI, in its model-training view
    (`workflowType`, which otherwise starts on GenAI pages) and sorted by run name: a sort
    other than by time lists every run unfolded (the UI folds children under their parent
    only when sorted by time), and a cell's seeds sit together since names lead with it."""
    query = urllib.parse.urlencode({"workflowType": "machine_learning", "orderByKey": "tags.`mlflow.runName`",
                                    "orderByAsc": "true"})
    return f"http://{host}:{port}/#/experiments/{experiment_id}/runs?{query}"


@main.group()
def data() -> None:
    """Dataset utilities."""


@data.command("synth")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--num-images", type=click.IntRange(min=8), default=2000, show_default=True)
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--manipulation", type=click.Choice(["blend", "swap"]), default="blend", show_default=True,
              help="Fakes: self-blended (blend) or a region swapped in from another photo (swap); same reals.")
def synth(out: Path, num_images: int, size: int, seed: int, manipulation: str) -> None:
    """Write the synthetic dataset (folder layout: <split>/real|fake/<video>/<n>.png)."""
    from trainables.data import read_index
    from trainables.data.synthetic import generate

    try:
        generate(out, num_images=num_images, size=size, seed=seed, manipulation=manipulation)
        index = read_index({"kind": "folder", "root": str(out)})
    except UserError as exc:
        fail(exc)
    counts = index.groupby(["split", "label"]).size().unstack(fill_value=0)
    click.echo(f"wrote {len(index)} images to {out}")
    click.echo(counts.rename(columns={0: "real", 1: "fake"}).to_string())


@main.command()
@click.argument("old", required=False, type=click.Path(path_type=Path))
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="The study folder where it is now (its mlflow.db and artifacts/).")
def relocate(old: Path | None, workdir: Path) -> None:
    """After moving a study folder: rewrite the absolute paths its SQLite store recorded under
    OLD (default: the folder its artifacts were recorded under) to the same paths under
    --workdir, after a snapshot of the store. Predict, report and export then find them."""
    from analysis.store import DB_NAME, check_sqlite, recorded_root, relocate as rewrite

    db = workdir.resolve() / DB_NAME
    try:
        if not db.is_file():
            raise UserError(f"{db} does not exist: give --workdir the moved study folder (the one with {DB_NAME})")
        check_sqlite(db)
        old = (old.expanduser().resolve() if old is not None else recorded_root(db))
        if old is None:
            raise UserError(f"{db} records no local artifact folder: nothing to relocate")
        if old == db.parent:
            click.echo(f"{db} already records its paths under {old}: nothing to do")
            return
        changed = rewrite(db, old, db.parent)
    except UserError as exc:
        fail(exc)
    click.echo(f"rewrote paths under {old} to {db.parent} (a snapshot of the store before it is in "
               f"{db.parent / 'snapshots'}): " + ", ".join(f"{k} {v}" for k, v in changed.items() if v))


def _register() -> None:
    from study.data_cli import extract, sbi
    from study.predict_cli import export, predict
    from study.report_cli import explain, report
    from study.status import status

    main.add_command(report)
    main.add_command(explain)
    main.add_command(predict)
    main.add_command(export)
    main.add_command(status)
    data.add_command(extract)
    data.add_command(sbi)


_register()

if __name__ == "__main__":
    main()
