"""From videos to face crops: `extract(videos, out)` writes `frames/<video>/<NNN>.png`.

Each video (mp4/avi/mov/mkv/webm, found recursively) is decoded once from start
to end with OpenCV; `frames_per_video` frames spread evenly over the whole video
are kept (frame i of k is number floor((i + 0.5) * n / k)). When the container's
frame count turns out wrong the video is read again with the true count. In each
kept frame the largest face is cropped (see `faces.py`); frames without a face are
skipped and counted. `NNN` is the frame's number in the video.

Output mirrors the input tree, frames beside where the videos were:
    <videos>/<rel>/videos/x.mp4  ->  <out>/<rel>/frames/x/NNN.png   (FaceForensics++)
    <videos>/<rel>/x.mp4         ->  <out>/<rel>/frames/x/NNN.png   (Celeb-DF: Celeb-real/frames/id0_0000/)
so `<out>` reads with the `ffpp` and `celebdf` readers once their split files are
copied there. A video's frames go to a hidden `.x.partial` folder renamed to `x/`
when it is done: a finished folder (even an empty one, when no frame had a face)
means done, and a rerun skips it. Undecodable videos are reported and retried by
the next run. `<out>/extract_summary.json` records each run's counts.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from trainables.data.faces import CASCADE, FaceDetector, crop_square
from trainables.errors import UserError
from trainables.inputs import VIDEO_SUFFIXES

SUMMARY = "extract_summary.json"
PARTIAL = ".partial"
MIN_SIZE = 16
MAX_LISTED = 5


class VideoError(Exception):
    """A video that cannot be opened or decoded (reported, the run goes on)."""


class VideoResult(NamedTuple):
    video: str  # relative to the videos folder, posix
    frames: int  # crops written
    no_face: int  # kept frames without a face
    error: str | None  # why the video failed, or None


# ---- paths -----------------------------------------------------------------------------


def find_videos(root: Path) -> list[PurePosixPath]:
    """Video files under `root` (any case of the suffixes), relative, sorted; hidden ones skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        found += [PurePosixPath(rel_dir.as_posix(), f) for f in filenames
                  if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return sorted(found)


def frames_dir(video: PurePosixPath) -> PurePosixPath:
    """Where a video's frames go, relative to the output root (see module docstring)."""
    parent = video.parent
    if parent.name == "videos":
        parent = parent.parent
    return parent / "frames" / video.stem


def plan(videos_dir: Path, out_dir: Path) -> list[tuple[PurePosixPath, Path]]:
    """(video, its frames folder) for every video; two videos sharing a folder are an error."""
    videos = find_videos(videos_dir)
    if not videos:
        raise UserError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) found under {videos_dir}: check --videos")
    targets: dict[PurePosixPath, PurePosixPath] = {}
    clashes = []
    for v in videos:
        t = frames_dir(v)
        if t in targets:
            clashes.append(f"{targets[t]} and {v} -> {t}")
        targets.setdefault(t, v)
    if clashes:
        raise UserError(f"videos that would share a frames folder under {out_dir}: {clashes[:MAX_LISTED]}; "
                        f"rename or move one of each pair")
    return [(v, out_dir / t) for t, v in targets.items()]


# ---- sampling --------------------------------------------------------------------------


def sample_indices(n_frames: int, k: int) -> list[int]:
    """`k` frame numbers spread evenly over `n_frames` (all of them when n_frames <= k)."""
    if n_frames <= k:
        return list(range(max(n_frames, 0)))
    return [int((i + 0.5) * n_frames / k) for i in range(k)]


def read_sampled(
    path: str, k: int, process: Callable[[np.ndarray], Any], open_capture: Callable | None = None
) -> tuple[dict[int, Any], int]:
    """({frame number: process(frame)} for the sampled frames, the video's true frame count).

    `open_capture(path)` returns an object like `cv2.VideoCapture` (tests pass fakes).
    """
    import cv2

    open_capture = open_capture or cv2.VideoCapture
    cap = _open(path, open_capture)
    try:
        value = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        reported = int(value) if value == value and value > 0 else 0  # NaN, 0 or -1 when unknown
        got, n = _scan(cap, sample_indices(reported, k), process)
    finally:
        cap.release()
    if n == 0:
        raise VideoError("no frame could be decoded")
    if n == reported:
        return got, n
    cap = _open(path, open_capture)  # the count lied: sample again over the true length
    try:
        return _scan(cap, sample_indices(n, k), process)
    finally:
        cap.release()


def _open(path: str, open_capture: Callable):
    cap = open_capture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoError("OpenCV cannot open it (not a video, damaged, or a codec this OpenCV build lacks)")
    return cap


def _scan(cap, wanted: list[int], process: Callable[[np.ndarray], Any]) -> tuple[dict[int, Any], int]:
    """Read to the end (grab is cheap), decoding only the wanted frames."""
    wanted_set, got, i = set(wanted), {}, 0
    while cap.grab():
        if i in wanted_set:
            ok, frame = cap.retrieve()
            if ok and frame is not None:
                got[i] = process(frame)
        i += 1
    return got, i


# ---- one video -------------------------------------------------------------------------

_DETECTOR: FaceDetector | None = None  # one per process


def _detector() -> FaceDetector:
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = FaceDetector()
    return _DETECTOR


def extract_video(path: Path, name: str, target: Path, frames_per_video: int, size: int,
                  margin: float) -> VideoResult:
    """Crop one video's sampled frames into `target` (via a temporary folder)."""
    import cv2

    detector = _detector()

    def face_crop(frame: np.ndarray) -> np.ndarray | None:
        box = detector.largest(frame)
        return None if box is None else crop_square(frame, box, margin, size)

    partial = target.parent / f".{target.name}{PARTIAL}"
    try:
        crops, n = read_sampled(str(path), frames_per_video, face_crop)
    except VideoError as exc:
        return VideoResult(name, 0, 0, str(exc))
    except cv2.error as exc:
        return VideoResult(name, 0, 0, f"OpenCV error: {str(exc).strip()}")
    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted run
    partial.mkdir(parents=True)
    width = max(3, len(str(n - 1)))
    written = 0
    for i, crop in sorted(crops.items()):
        if crop is None:
            continue
        file = partial / f"{i:0{width}d}.png"
        if not cv2.imwrite(str(file), crop):
            return VideoResult(name, 0, 0, f"cannot write {file} (disk full or no permission?)")
        written += 1
    os.rename(partial, target)
    return VideoResult(name, written, len(crops) - written, None)


def _run_job(job: tuple) -> VideoResult:
    path, name, target, k, size, margin = job
    try:
        return extract_video(Path(path), name, Path(target), k, size, margin)
    except UserError:
        raise  # setup problem (no cascades): stops the run
    except Exception as exc:  # anything else is this video's problem: report it, go on
        return VideoResult(name, 0, 0, f"{exc.__class__.__name__}: {exc}")


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already


# ---- all videos ------------------------------------------------------------------------


def extract(
    videos: str | os.PathLike,
    out: str | os.PathLike,
    frames_per_video: int = 32,
    size: int = 299,
    margin: float = 1.3,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Extract every video under `videos` into `out`; return (and write) the run's summary."""
    videos_dir, out_dir = Path(videos).expanduser().resolve(), Path(out).expanduser().resolve()
    _check_args(videos_dir, frames_per_video, size, margin, workers)
    settings = {"frames_per_video": frames_per_video, "size": size, "margin": float(margin),
                "detector": f"opencv-haar:{CASCADE}"}
    _check_previous_settings(out_dir / SUMMARY, settings)
    _detector()  # fail early (e.g. OpenCV 5 without cascades)
    jobs = plan(videos_dir, out_dir)
    todo = [(str(videos_dir / v), v.as_posix(), str(t), frames_per_video, size, margin)
            for v, t in jobs if not t.is_dir()]
    results = _run_all(todo, workers, progress)

    failed = [{"video": r.video, "reason": r.error} for r in results if r.error]
    done = [r for r in results if not r.error]
    summary = {
        "videos_dir": str(videos_dir),
        "out": str(out_dir),
        "settings": settings,
        "videos": {"total": len(jobs), "extracted": len(done), "skipped_finished": len(jobs) - len(todo),
                   "failed": len(failed)},
        "frames_written": sum(r.frames for r in done),
        "frames_without_face": sum(r.no_face for r in done),
        "videos_without_face": sorted(r.video for r in done if r.frames == 0),
        "failed": sorted(failed, key=lambda f: f["video"]),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{SUMMARY}{PARTIAL}"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, out_dir / SUMMARY)
    return summary


def _check_args(videos_dir: Path, frames_per_video: int, size: int, margin: float, workers: int) -> None:
    if not videos_dir.is_dir():
        raise UserError(f"videos folder {videos_dir} does not exist or is not a folder: check --videos")
    for name, value, low in (("frames_per_video", frames_per_video, 1), ("size", size, MIN_SIZE),
                             ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"{name}={value!r} must be an integer >= {low}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 1:
        raise UserError(f"margin={margin!r} must be a number >= 1 (crop side = margin x face side)")


def _check_previous_settings(path: Path, settings: dict) -> None:
    """Resuming with other settings would mix crops of two kinds in one dataset."""
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return
    if before and before != settings:
        raise UserError(f"{path.parent} already holds frames extracted with {before} (see {path}); "
                        f"use those settings to resume, or a new --out for {settings}")


def _run_all(todo: list[tuple], workers: int, progress: bool) -> list[VideoResult]:
    from tqdm import tqdm

    results: list[VideoResult] = []
    bar = tqdm(total=len(todo), unit="video", desc="extract", disable=not progress or not todo)

    def add(r: VideoResult) -> None:
        results.append(r)
        bar.update()
        if r.error and progress:  # live; the summary lists them all
            bar.write(f"failed: {r.video}: {r.error}")

    try:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                add(_run_job(job))
        else:
            _run_pool(todo, min(workers, len(todo)), add)
    finally:
        bar.close()
    return results


def _mp_context() -> multiprocessing.context.BaseContext:
    """Never plain fork (this process may hold threads). A fork server imports this module once
    and forks each worker from itself, far faster than spawning each (the import pulls in torch)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def _run_pool(todo: list[tuple], workers: int, add: Callable[[VideoResult], None]) -> None:
    pool = ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_init_worker)
    try:
        with _sigint_ignored():  # workers start now and inherit it: Ctrl+C is the parent's, which stops them
            futures = {pool.submit(_run_job, job): job[1] for job in todo}
        for f in as_completed(futures):
            try:
                add(f.result())
            except BrokenProcessPool:  # a decoder crash kills its worker and fails every pending video
                add(VideoResult(futures[f], 0, 0, "its worker process died (a decoder crash in this or another "
                                                  "video, or out of memory); run again to retry"))
    except BaseException:  # Ctrl+C or a setup error: stop now, unfinished videos are redone next run
        _stop(pool)
        raise
    pool.shutdown()


def _stop(pool: ProcessPoolExecutor) -> None:
    """Kill the workers now (shutdown alone lets queued videos finish)."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14; it also shuts the pool down
        pool.terminate_workers()
        return
    # Python < 3.14 has no public way to kill a ProcessPoolExecutor's workers (shutdown waits for
    # the running tasks, cancel_futures only drops queued ones): its private `_processes` is the
    # one handle on them, read before shutdown clears it
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.join(timeout=5)  # reap them
