"""Score images or videos with a detector saved as an MLflow model (trainables/serving.py).

Images are taken to be face crops, as a dataset's frames are: decoded and resized to the
model's image size exactly as training decoded them (`trainables.data.images.decode`).
Videos go through `study data extract`'s code: evenly spaced frames (`read_sampled`), the
largest face of each (`FaceDetector`), cropped with the margin (and at the crop size) the
model's training data were extracted with, then resized like an extracted frame; a video's
score is the mean fake probability over its frames with a face, as video-level metrics
average them (trainables/metrics.py).

Nothing here stops at a bad input: an unreadable image, a video OpenCV cannot decode, a
video without a face each become a row with a `reason` and no probability.
"""
from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from trainables.data.images import decode
from trainables.device import eval_batch_size
from trainables.errors import DataError, UserError
from trainables.inputs import IMAGE_SUFFIXES, find_files  # noqa: F401  (re-exported)
from trainables.serving import LoadedModel

DEFAULT_MARGIN = 1.3  # `study data extract`'s default, for a model whose data record none
BATCH = 64  # images a forward pass at 64 px; fewer at larger sizes (device.eval_batch_size)
THRESHOLD = 0.5  # as ACC is computed (trainables/metrics.py)
PROGRESS_FROM = {"image": 2000, "video": 20}  # a progress bar from this many inputs (or on a terminal)
IMAGE_COLUMNS = ["path", "fake_prob", "predicted", "reason"]
VIDEO_COLUMNS = ["path", "fake_prob", "predicted", "frames_scored", "frames_sampled", "reason"]
FRAME_COLUMNS = ["path", "frame", "fake_prob", "reason"]


def progress(total: int, unit: str, show: bool | None = None):
    from tqdm import tqdm

    if show is None:
        show = sys.stderr.isatty() or total >= PROGRESS_FROM.get(unit, 1000)
    return tqdm(total=total, unit=unit, desc="predict", disable=not show, file=sys.stderr)


def label(prob: float) -> str:
    return "fake" if prob >= THRESHOLD else "real"


def batch_size(image_size: int) -> int:
    return eval_batch_size(torch.device("cpu"), image_size, largest=BATCH)  # the model runs on the CPU


def score_images(model: LoadedModel, paths: Sequence[Path], batch: int | None = None, workers: int = 4,
                 show_progress: bool | None = None) -> pd.DataFrame:
    """One row per image (IMAGE_COLUMNS): its fake probability, or why it has none."""
    size = model.image_size
    batch = batch or batch_size(size)
    rows: list[dict] = []

    def load(path: Path) -> np.ndarray | str:
        try:
            return decode(str(path), size)
        except DataError as exc:
            return str(exc)

    bar = progress(len(paths), "image", show_progress)
    chunks = [paths[start:start + batch] for start in range(0, len(paths), batch)]
    with ThreadPoolExecutor(workers) as pool:
        ahead = [pool.submit(load, p) for p in chunks[0]] if chunks else []
        for n, chunk in enumerate(chunks):
            decoded = [f.result() for f in ahead]
            # the next batch decodes while this one is scored
            ahead = [pool.submit(load, p) for p in chunks[n + 1]] if n + 1 < len(chunks) else []
            good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
            probs = _score(model, [decoded[i] for i in good])
            by_index = dict(zip(good, probs))
            for i, path in enumerate(chunk):
                if i in by_index:
                    p = float(by_index[i])
                    rows.append({"path": str(path), "fake_prob": p, "predicted": label(p), "reason": ""})
                else:
                    rows.append({"path": str(path), "fake_prob": np.nan, "predicted": "", "reason": decoded[i]})
            bar.update(len(chunk))
    bar.close()
    return pd.DataFrame(rows, columns=IMAGE_COLUMNS)


def _score(model: LoadedModel, images: Sequence[np.ndarray]) -> np.ndarray:
    """P(fake) of (S, S, 3) uint8 RGB images."""
    if not images:
        return np.zeros(0, dtype=np.float32)
    step = batch_size(model.image_size)
    out = []
    for start in range(0, len(images), step):
        batch = torch.from_numpy(np.stack(images[start:start + step])).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S)
        out.append(model.predict(batch))
    return np.concatenate(out)


def face_cropper(model: LoadedModel, margin: float | None = None) -> Callable[[np.ndarray], np.ndarray | None]:
    """BGR frame -> the model's input crop (S, S, 3) RGB of its largest face, or None: the crop
    `study data extract` writes (margin, crop size from the model's metadata), then decoded as
    training decoded an extracted frame (bicubic to the image size when the sizes differ)."""
    from PIL import Image

    from trainables.data.faces import FaceDetector, crop_square

    detector = FaceDetector()  # UserError when OpenCV has no cascades
    crop = model.metadata.get("face_crop") or {}
    margin = float(margin if margin is not None else crop.get("margin", DEFAULT_MARGIN))
    size = model.image_size
    crop_size = int(crop.get("size", size))

    def cut(frame: np.ndarray) -> np.ndarray | None:
        box = detector.largest(frame)
        if box is None:
            return None
        rgb = np.ascontiguousarray(crop_square(frame, box, margin, crop_size)[:, :, ::-1])
        if crop_size != size:
            rgb = np.array(Image.fromarray(rgb).resize((size, size), Image.BICUBIC), dtype=np.uint8)
        return rgb

    return cut


def score_videos(model: LoadedModel, root: Path, videos: Iterable[PurePosixPath], frames_per_video: int,
                 margin: float | None = None, show_progress: bool | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per video (VIDEO_COLUMNS), one row per sampled frame (FRAME_COLUMNS))."""
    import cv2

    from trainables.data.extract import VideoError, read_sampled

    cut = face_cropper(model, margin)
    videos = list(videos)
    rows, frame_rows = [], []
    bar = progress(len(videos), "video", show_progress)
    for video in videos:
        path = str(root / video)
        try:
            crops, _n = read_sampled(path, frames_per_video, cut)
            reason = ""
        except VideoError as exc:
            crops, reason = {}, f"cannot read the video: {exc}"
        except cv2.error as exc:
            crops, reason = {}, f"OpenCV error: {str(exc).strip()}"
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001  (this video's problem: a row, the batch goes on)
            crops, reason = {}, f"{exc.__class__.__name__}: {exc}"
        faces = {i: c for i, c in sorted(crops.items()) if c is not None}
        probs = dict(zip(faces, _score(model, list(faces.values()))))
        for i in sorted(crops):
            p = probs.get(i)
            frame_rows.append({"path": path, "frame": i, "fake_prob": float(p) if p is not None else np.nan,
                               "reason": "" if p is not None else "no face found"})
        if not reason and not probs:
            reason = f"no face found in any of the {len(crops)} sampled frame(s)"
        score = float(np.mean(np.asarray(list(probs.values()), dtype=np.float64))) if probs else np.nan
        rows.append({"path": path, "fake_prob": score, "predicted": label(score) if probs else "",
                     "frames_scored": len(probs), "frames_sampled": len(crops), "reason": reason})
        bar.update()
    bar.close()
    return pd.DataFrame(rows, columns=VIDEO_COLUMNS), pd.DataFrame(frame_rows, columns=FRAME_COLUMNS)
