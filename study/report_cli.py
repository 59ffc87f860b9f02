"""`study report` and `study explain`: thin click commands over `analysis`.

Wired into the `study` group by `main.add_command(report)` / `main.add_command(explain)`.
"""
from __future__ import annotations

from pathlib import Path

import click

from study.exits import fail
from trainables.errors import UserError


workdir_option = click.option(
    "--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
    help="The --workdir of `study run` (its MLflow DB is <workdir>/mlflow.db).")
uri_option = click.option("--tracking-uri", default=None, help="MLflow tracking URI (overrides --workdir).")



@click.command("report")
@workdir_option
@uri_option
@click.option("--study", "study_name", default=None,
              help="Study (MLflow experiment) name; default: the store's only study.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for report.md, tables, CSV and figures.")
@click.option("--format", "formats", default="md,tex,csv,png", show_default=True,
              help="Comma-separated subset of md, tex, csv, png.")
@click.option("--curves", multiple=True, metavar="RUN_ID",
              help="Also draw the training curves of this run (repeatable).")
@click.option("--metric", default="test_acc", show_default=True, help="Metric of Fig. 2 and Fig. 4.")
@click.option("--register", is_flag=True,
              help="Also register the best student of each table cell in the MLflow Model Registry as "
                   "<study>-<source>-<student>-<method>-<volume>: the cell's seed with the highest validation "
                   "accuracy (val_acc; never chosen on test), its version tagged with the cell's test metrics "
                   "(mean and std over seeds). Again later: no duplicate version, tags updated.")
def report(workdir: Path, tracking_uri, study_name, out: Path, formats: str, curves, metric: str,
           register: bool) -> None:
    """Regenerate the paper's tables and figures from a study's MLflow runs, the paper beside them."""
    from analysis.report import build_report, parse_formats
    from analysis.runs import tracking_uri as resolve_uri

    def ensure_logged_model(client, run_id: str) -> str:  # imported when used: it loads torch
        from study.logged_model import ensure_logged_model as ensure

        return ensure(client, run_id)

    try:
        rep = build_report(resolve_uri(workdir, tracking_uri), study_name, out, parse_formats(formats),
                           curves=curves, metric=metric, register=register, ensure_model=ensure_logged_model)
    except UserError as exc:
        fail(exc)
    n = len(rep.study.runs)
    click.echo(f"study {rep.study.study!r}: {n} trial run(s), {int((rep.cells['metric'] == 'acc').sum())} "
               f"table cell(s), {len(rep.missing)} paper cell(s) missing")
    if rep.registered is not None:
        for r in rep.registered.itertuples():
            click.echo(f"  {r.status}: {r.name}" + (f" version {r.version}" if r.version else "")
                       + f" (run {r.run_id}, seed {r.seed})" + (f": {r.note}" if r.note else ""))
    for path in rep.files:
        click.echo(f"  {path}")
    if (out / "report.md").is_file():
        click.echo(f"open {out / 'report.md'}")


@click.command("explain")
@workdir_option
@uri_option
@click.option("--run", "run_id", required=True, help="A grid or teacher run with a model/model.pt artifact.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of images; those under a real/ or fake/ folder are labelled.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--per-class", type=click.IntRange(min=1), default=4, show_default=True,
              help="Images per label (real, fake).")
@click.option("--target", type=click.Choice(["label", "predicted", "fake", "real"]), default="label",
              show_default=True, help="Class whose evidence the heatmap shows.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or auto.")
def explain(workdir: Path, tracking_uri, run_id: str, images: Path, out: Path, per_class: int, target: str,
            device: str) -> None:
    """GradCAM++ heatmaps (the paper's Fig. 3) of a recorded checkpoint on real and fake images."""
    from analysis.explain import explain_run
    from analysis.runs import tracking_uri as resolve_uri

    try:
        result = explain_run(resolve_uri(workdir, tracking_uri), run_id, images, out, per_class=per_class,
                             target=target, device=device)
    except UserError as exc:
        fail(exc)
    click.echo(f"run {run_id}: {result.arch} at {result.image_size} px, layer {result.layer}, "
               f"{len(result.table)} heatmap(s) in {result.out}")
    click.echo(result.table.to_string(index=False))
