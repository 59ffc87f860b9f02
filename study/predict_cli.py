"""`study predict`: a thin command over trainables.serving (the model) and trainables.predict (the inputs).

Registered in study/cli.py (`main.add_command(predict)`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from study.exits import EXIT_SOME_FAILED, fail
from study.report_cli import uri_option, workdir_option
from trainables.errors import UserError

FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)
MAX_LISTED = 10


def export_if_needed(client, model_ref: str) -> None:
    """A grid run's MLflow model is made on first use (study.logged_model): make it now when
    `model_ref` names a run (its id or runs:/<id>/<model name>) that has none. An unknown run is
    left to `fetch_model`, which names it."""
    from study.logged_model import ensure_logged_model
    from trainables.inputs import run_of_ref

    run_id = run_of_ref(model_ref)
    if run_id is None:
        return
    try:
        client.get_run(run_id)
    except Exception:  # noqa: BLE001  (no such run: fetch_model says so)
        return
    ensure_logged_model(client, run_id)


@click.command("predict")
@workdir_option
@uri_option
@click.option("--model", "model_ref", required=True, metavar="RUN_ID|models:/NAME/VERSION|DIR",
              help="A teacher or grid run's id (its MLflow model `model`), a registered model "
                   "(models:/NAME/VERSION, e.g. from `study report --register`), or a local MLflow model folder.")
@click.option("--images", type=FOLDER, default=None,
              help="Folder of face crops (png/jpg/…, searched recursively), resized to the model's image size.")
@click.option("--videos", type=FOLDER, default=None,
              help="Folder of videos (searched recursively): faces cut as `study data extract` cuts them.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV written: one row per input (fake_prob, predicted, reason when it could not be scored); "
                   "with --videos, the per-frame scores go beside it as <name>_frames.csv.")
@click.option("--frames-per-video", type=click.IntRange(min=1), default=32, show_default=True,
              help="Frames scored per video, spread evenly over it; a video's score is their mean.")
@click.option("--margin", type=click.FloatRange(min=1.0), default=None,
              help="Face-crop margin for --videos. Default: the one the model's training data were extracted "
                   "with (recorded with the model), else 1.3, `study data extract`'s default.")
def predict(workdir: Path, tracking_uri, model_ref: str, images, videos, out: Path, frames_per_video: int,
            margin) -> None:
    """Fake probabilities of images or videos from a trained detector (exit 1 if any input could not be scored)."""
    if (images is None) == (videos is None):
        raise click.UsageError("give exactly one of --images DIR and --videos DIR")
    from trainables.inputs import IMAGE_SUFFIXES, VIDEO_SUFFIXES, find_files, model_ref_kind

    try:  # what can be checked without torch, MLflow or the model: in a fraction of a second
        kind = model_ref_kind(model_ref)
        folder = images if images is not None else videos
        files, other = find_files(folder, IMAGE_SUFFIXES if images is not None else VIDEO_SUFFIXES)
        if not files:
            what = "images" if images is not None else "videos"
            suffixes = ", ".join(IMAGE_SUFFIXES if images is not None else VIDEO_SUFFIXES)
            raise UserError(f"no {what} found under {folder} ({other} other file(s); {what} end in {suffixes})")
    except UserError as exc:
        fail(exc)
    from analysis.store import open_existing, tracking_uri as resolve_uri
    from trainables.predict import score_images, score_videos
    from trainables.serving import fetch_model

    try:
        uri = resolve_uri(workdir, tracking_uri)
        if kind != "folder":
            export_if_needed(open_existing(uri), model_ref)  # a missing store is named (never created empty)
        model = fetch_model(model_ref, uri)
        out.parent.mkdir(parents=True, exist_ok=True)
        if images is not None:
            table = score_images(model, files)
        else:
            table, frames = score_videos(model, videos, [f.relative_to(videos) for f in files], frames_per_video,
                                         margin)
            frames_out = out.with_name(f"{out.stem}_frames{out.suffix or '.csv'}")
            frames.to_csv(frames_out, index=False)
    except UserError as exc:
        fail(exc)
    table.to_csv(out, index=False)
    scored = table["reason"] == ""
    meta = model.metadata
    click.echo(f"model {model.where}: {meta.get('arch')} at {model.image_size} px; "
               f"{int(scored.sum())} of {len(table)} input(s) scored, written to {out}")
    if videos is not None:
        click.echo(f"per-frame scores: {frames_out}")
        if margin is None and not meta.get("face_crop"):
            click.echo("note: the model's training data record no face-crop margin (not extracted by `study data "
                       "extract`): faces were cut with margin 1.3; set --margin to match your crops", err=True)
    if other:
        click.echo(f"{other} file(s) under {folder} passed over (not {'images' if images else 'videos'} by name)")
    if not scored.all():
        bad = table[~scored]
        for row in bad.head(MAX_LISTED).itertuples():
            click.echo(f"not scored: {row.path}: {row.reason}", err=True)
        click.echo(f"{len(bad)} input(s) could not be scored (rows with a reason in {out})", err=True)
        sys.exit(EXIT_SOME_FAILED)


@click.command("export")
@workdir_option
@uri_option
@click.option("--run", "run_id", required=True, help="A teacher or grid run's id.")
def export(workdir: Path, tracking_uri, run_id: str) -> None:
    """Make a run's MLflow model (grid runs export theirs on first use) and print its URIs,
    e.g. for `mlflow models serve -m runs:/<run id>/<model name>`."""
    from analysis.store import open_existing, tracking_uri as resolve_uri
    from study.logged_model import ensure_logged_model

    try:
        client = open_existing(resolve_uri(workdir, tracking_uri))
        try:
            client.get_run(run_id)
        except Exception:
            raise UserError(f"--run {run_id}: no run with this id in this store: check --workdir / "
                            "--tracking-uri") from None
        model_id = ensure_logged_model(client, run_id)
        name = client.get_logged_model(model_id).name
    except UserError as exc:
        fail(exc)
    click.echo(f"runs:/{run_id}/{name}")
    click.echo(f"models:/{model_id}")
