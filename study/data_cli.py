"""`study data extract` and `study data sbi`: thin commands over trainables.data.extract / .sbi.

Registered in study/cli.py's `data` group (`data.add_command(extract)`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from study.exits import EXIT_INTERRUPTED, EXIT_SOME_FAILED, fail
from trainables.errors import UserError

MAX_LISTED = 10

FOLDER = click.Path(file_okay=False, path_type=Path)  # existence checked by the library, with a hint



@click.command("extract")
@click.option("--videos", type=FOLDER, required=True,
              help="Folder searched recursively for .mp4/.avi/.mov/.mkv/.webm videos.")
@click.option("--out", type=FOLDER, required=True,
              help="Output root: <rel>/videos/x.mp4 becomes <out>/<rel>/frames/x/NNN.png. May equal --videos.")
@click.option("--frames-per-video", type=click.IntRange(min=1), default=32, show_default=True,
              help="Frames kept per video, spread evenly over the whole video.")
@click.option("--size", type=click.IntRange(min=16), default=299, show_default=True, help="Crop side in px.")
@click.option("--margin", type=click.FloatRange(min=1.0), default=1.3, show_default=True,
              help="Crop side = margin x the face box's side.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Videos decoded in parallel (processes).")
def extract(videos: Path, out: Path, frames_per_video: int, size: int, margin: float, workers: int) -> None:
    """Crop the largest face of evenly spaced frames of every video (resumable)."""
    try:
        from trainables.data.extract import SUMMARY, extract as run_extract

        s = run_extract(videos, out, frames_per_video=frames_per_video, size=size, margin=margin, workers=workers)
    except UserError as exc:
        fail(exc)
    except KeyboardInterrupt:
        click.echo("\nextract interrupted; finished videos are kept. Run the same command again to resume.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    v = s["videos"]
    click.echo(f"{v['total']} videos: {v['extracted']} extracted, {v['skipped_finished']} already done, "
               f"{v['failed']} failed; {s['frames_written']} frames written, "
               f"{s['frames_without_face']} sampled frames without a face")
    if s["videos_without_face"]:
        click.echo(f"{len(s['videos_without_face'])} video(s) had no face in any sampled frame, "
                   f"e.g. {s['videos_without_face'][:MAX_LISTED]}")
    click.echo(f"summary: {Path(s['out']) / SUMMARY}")
    if s["failed"]:
        for f in s["failed"][:MAX_LISTED]:
            click.echo(f"failed: {f['video']}: {f['reason']}", err=True)
        click.echo(f"{v['failed']} video(s) could not be decoded (all listed in the summary); "
                   f"fix or remove them and run again: finished videos are skipped", err=True)
        sys.exit(EXIT_SOME_FAILED)


@click.command("sbi")
@click.option("--real", type=FOLDER, required=True,
              help="Folder of real face crops (png/jpg, recursive); each image's folder is its video.")
@click.option("--out", type=FOLDER, required=True, help="New folder for the dataset (real/ and fake/).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--per-image", type=click.IntRange(min=1), default=1, show_default=True,
              help="Self-blended fakes per real image (1 keeps the classes balanced).")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True, help="Threads.")
def sbi(real: Path, out: Path, seed: int, per_image: int, workers: int) -> None:
    """Make self-blended pseudo-fakes of real face crops, as a `folder` dataset."""
    from trainables.data.sbi import make_sbi

    try:
        counts = make_sbi(real, out, seed=seed, per_image=per_image, workers=workers)
    except UserError as exc:
        fail(exc)
    click.echo(f"wrote {counts['real']} real and {counts['fake']} self-blended images "
               f"({counts['videos']} videos) to {out}")
    click.echo(f"use it with  data: {{kind: folder, root: {out}}}")
