"""`study data extract` on short videos of a real face (scikit-image's astronaut).

The astronaut's face sits at x=177, y=66, 95 x 95 in the 512 x 512 photograph (found
there with OpenCV's default cascade); videos here are that photo at 256 px,
shifted by a few pixels from frame to frame.
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner

from study.data_cli import extract as extract_cmd
from trainables.data import read_index
from trainables.data.extract import SUMMARY, extract, frames_dir, read_sampled, sample_indices
from trainables.data.faces import Box, FaceDetector, crop_square, square_box
from trainables.errors import UserError

SIDE = 256
N_FRAMES = 20
K = 4  # frames kept per video
SIZE = 96
FACE_512 = Box(177, 66, 95, 95)


def shifts(i: int) -> tuple[int, int]:
    return (i % 5) - 2, (i % 3) - 1  # dx, dy in px


def photo_frames(name: str = "astronaut") -> list[np.ndarray]:
    rgb = np.asarray(getattr(skimage.data, name)())
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    base = cv2.cvtColor(cv2.resize(rgb[:, :, :3], (SIDE, SIDE), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    frames = []
    for i in range(N_FRAMES):
        dx, dy = shifts(i)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        frames.append(cv2.warpAffine(base, m, (SIDE, SIDE), borderMode=cv2.BORDER_REFLECT))
    return frames


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    """mp4v in .mp4, MJPG in .avi: both write and read back in opencv-python-headless 4.x."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, 10, (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened(), f"this OpenCV build cannot write {path.suffix}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "face.mp4", photo_frames())


@pytest.fixture(scope="module")
def ffpp(tmp_path_factory, face_video) -> tuple[Path, Path, dict]:
    """A mini FaceForensics++ download (3 reals, 3 Deepfakes), extracted once."""
    videos, out = tmp_path_factory.mktemp("ffpp"), tmp_path_factory.mktemp("ffpp_out")
    names = [("original_sequences/youtube", v) for v in ("000", "002", "004")]
    names += [("manipulated_sequences/Deepfakes", v) for v in ("000_001", "002_003", "004_005")]
    for where, v in names:
        target = videos / where / "c23" / "videos" / f"{v}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(face_video, target)
    (out / "splits").mkdir()  # users copy the official split files
    for split, pair in (("train", ["000", "001"]), ("val", ["002", "003"]), ("test", ["004", "005"])):
        (out / "splits" / f"{split}.json").write_text(json.dumps([pair]))
    summary = extract(videos, out, frames_per_video=K, size=SIZE, progress=False)
    return videos, out, summary


# ---- units ---------------------------------------------------------------------------------


def test_sample_indices_spread_over_the_whole_video():
    assert sample_indices(100, 4) == [12, 37, 62, 87]
    assert sample_indices(20, 4) == [2, 7, 12, 17]
    assert sample_indices(3, 5) == [0, 1, 2]  # short video: every frame
    assert sample_indices(0, 5) == []
    idx = sample_indices(1000, 32)
    assert len(set(idx)) == 32 and idx == sorted(idx)
    assert idx[0] < 1000 / 32 and idx[-1] >= 1000 - 1000 / 32


class FakeCapture:
    """A capture with `true` frames whose container claims `reported` (OpenCV's API)."""

    def __init__(self, true: int, reported: float):
        self.true, self.reported, self.i = true, reported, -1

    def isOpened(self):  # noqa: N802  (OpenCV's name)
        return True

    def get(self, prop):
        assert prop == cv2.CAP_PROP_FRAME_COUNT
        return self.reported

    def grab(self):
        self.i += 1
        return self.i < self.true

    def retrieve(self):
        return True, np.full((2, 2, 3), self.i, np.uint8)

    def release(self):
        pass


@pytest.mark.parametrize("reported", [100, 10, 0, -1, float("nan")])
def test_sampling_uses_the_true_length_when_the_frame_count_lies(reported):
    got, n = read_sampled("x.mp4", 4, lambda f: int(f[0, 0, 0]), open_capture=lambda p: FakeCapture(40, reported))
    assert n == 40
    assert sorted(got) == sample_indices(40, 4) == [5, 15, 25, 35]
    assert all(got[i] == i for i in got)  # the frame decoded is the frame numbered


@pytest.mark.parametrize("video, frames", [
    ("original_sequences/youtube/c23/videos/000.mp4", "original_sequences/youtube/c23/frames/000"),
    ("Celeb-real/id0_0000.mp4", "Celeb-real/frames/id0_0000"),
    ("videos/x.avi", "frames/x"),
    ("x.MOV", "frames/x"),
])
def test_output_folder_mirrors_the_input_tree(video, frames):
    assert frames_dir(PurePosixPath(video)) == PurePosixPath(frames)


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy / (a.w * a.h + b.w * b.h - ix * iy)


def test_detector_finds_the_astronaut_and_no_face_in_coffee():
    detector = FaceDetector()
    big = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    assert iou(detector.largest(big), FACE_512) > 0.8
    frame = photo_frames()[7]  # 256 px, shifted
    dx, dy = shifts(7)
    known = Box(round(FACE_512.x / 2 + dx), round(FACE_512.y / 2 + dy), 48, 48)
    assert iou(detector.largest(frame), known) > 0.6
    assert detector.largest(photo_frames("coffee")[0]) is None


def test_crop_square_is_centred_shifted_inside_or_padded():
    assert square_box(Box(40, 40, 20, 20), 2.0, 100, 100) == (30, 30, 40)  # centred
    assert square_box(Box(0, 85, 10, 10), 2.0, 100, 100) == (80, 0, 20)  # shifted inside the frame
    top, left, side = square_box(Box(10, 5, 40, 40), 2.0, 60, 200)  # side 80 > height 60
    assert (top, side) == (-10, 80) and left == 0
    frame = np.full((60, 200, 3), 200, np.uint8)
    crop = crop_square(frame, Box(10, 5, 40, 40), 2.0, 80)
    assert crop.shape == (80, 80, 3)
    assert (crop[:10] == 0).all() and (crop[70:] == 0).all() and (crop[10:70] == 200).all()


# ---- whole runs ----------------------------------------------------------------------------


def test_ffpp_tree_is_extracted_and_read_by_the_ffpp_reader(ffpp):
    _, out, summary = ffpp
    assert summary["videos"] == {"total": 6, "extracted": 6, "skipped_finished": 0, "failed": 0}
    assert summary["frames_written"] == 6 * K and summary["frames_without_face"] == 0
    assert json.loads((out / SUMMARY).read_text()) == summary
    frames = sorted(p.name for p in (out / "original_sequences/youtube/c23/frames/000").iterdir())
    assert frames == [f"{i:03d}.png" for i in sample_indices(N_FRAMES, K)]

    df = read_index({"kind": "ffpp", "root": str(out), "methods": ["Deepfakes"]})
    assert len(df) == 6 * K
    assert df.groupby("split")["label"].agg(lambda s: sorted(set(s))).to_dict() == {
        "train": [0, 1], "val": [0, 1], "test": [0, 1]}
    assert set(df["video"]) == {"youtube/000", "youtube/002", "youtube/004",
                                "Deepfakes/000_001", "Deepfakes/002_003", "Deepfakes/004_005"}


def test_crops_are_centred_on_the_face(ffpp):
    _, out, _ = ffpp
    detector = FaceDetector()
    for png in sorted((out / "original_sequences/youtube/c23/frames/000").iterdir()):
        crop = cv2.imread(str(png))
        assert crop.shape == (SIZE, SIZE, 3)
        face = detector.largest(crop)
        assert face is not None, png
        # margin 1.3: the face fills about 1 / 1.3 of the crop, around its centre
        assert abs(face.x + face.w / 2 - SIZE / 2) < 0.1 * SIZE
        assert abs(face.y + face.h / 2 - SIZE / 2) < 0.1 * SIZE
        assert 0.6 * SIZE / 1.3 < face.w < 1.4 * SIZE / 1.3


def test_second_run_skips_finished_videos_and_redoes_interrupted_ones(ffpp):
    videos, out, _ = ffpp
    before = pngs(out)
    summary = extract(videos, out, frames_per_video=K, size=SIZE, progress=False)
    assert summary["videos"] == {"total": 6, "extracted": 0, "skipped_finished": 6, "failed": 0}
    assert pngs(out) == before

    # an interrupted run leaves a hidden partial folder and no finished folder
    frames = out / "original_sequences/youtube/c23/frames"
    (frames / "002").rename(frames / ".002.partial")
    (frames / ".002.partial" / "junk.png").write_bytes(b"x")
    summary = extract(videos, out, frames_per_video=K, size=SIZE, progress=False)
    assert summary["videos"] == {"total": 6, "extracted": 1, "skipped_finished": 5, "failed": 0}
    assert pngs(out) == before and not (frames / ".002.partial").exists()


def test_resuming_with_other_settings_is_refused(ffpp):
    videos, out, _ = ffpp
    with pytest.raises(UserError, match="size.*new --out"):
        extract(videos, out, frames_per_video=K, size=SIZE + 1, progress=False)


def test_bad_video_is_named_and_faceless_frames_are_counted(tmp_path, face_video):
    videos = tmp_path / "in"
    write_video(videos / "Celeb-real" / "face.avi", photo_frames())
    write_video(videos / "Celeb-real" / "coffee.mp4", photo_frames("coffee"))
    (videos / "Celeb-real" / "broken.mp4").write_bytes(bytes(range(256)) * 16)  # garbage
    s = extract(videos, tmp_path / "out", frames_per_video=K, size=SIZE, progress=False)
    assert s["videos"] == {"total": 3, "extracted": 2, "skipped_finished": 0, "failed": 1}
    assert [f["video"] for f in s["failed"]] == ["Celeb-real/broken.mp4"] and "cannot open" in s["failed"][0]["reason"]
    assert s["frames_written"] == K and s["frames_without_face"] == K
    assert s["videos_without_face"] == ["Celeb-real/coffee.mp4"]
    frames = tmp_path / "out" / "Celeb-real" / "frames"
    assert len(list((frames / "face").iterdir())) == K and list((frames / "coffee").iterdir()) == []
    assert not (frames / "broken").exists()

    s = extract(videos, tmp_path / "out", frames_per_video=K, size=SIZE, progress=False)  # failed ones retried
    assert s["videos"] == {"total": 3, "extracted": 0, "skipped_finished": 2, "failed": 1}


def test_celebdf_layout_is_read_by_the_celebdf_reader(tmp_path, face_video):
    videos, out = tmp_path / "Celeb-DF-v2", tmp_path / "out"
    for rel in ("Celeb-real/id0_0000", "Celeb-real/id0_0001", "Celeb-synthesis/id0_id1_0000",
                "Celeb-synthesis/id0_id1_0001"):
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(face_video, videos / f"{rel}.mp4")
    extract(videos, out, frames_per_video=2, size=SIZE, progress=False)
    (out / "List_of_testing_videos.txt").write_text("1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n")
    df = read_index({"kind": "celebdf", "root": str(out)})
    assert len(df) == 8
    assert set(df.loc[df["split"] == "test", "video"]) == {"Celeb-real/id0_0000", "Celeb-synthesis/id0_id1_0000"}


def test_two_workers_write_the_same_files(tmp_path, face_video):
    videos = tmp_path / "in"
    for v in ("a", "b", "c"):
        (videos / "videos").mkdir(parents=True, exist_ok=True)
        os.link(face_video, videos / "videos" / f"{v}.mp4")
    (videos / "videos" / "d.mp4").write_bytes(b"not a video")
    serial = extract(videos, tmp_path / "one", frames_per_video=2, size=SIZE, progress=False)
    pooled = extract(videos, tmp_path / "two", frames_per_video=2, size=SIZE, workers=2, progress=False)
    assert pngs(tmp_path / "one") == pngs(tmp_path / "two") != {}
    drop = ("out",)
    assert {k: v for k, v in serial.items() if k not in drop} == {k: v for k, v in pooled.items() if k not in drop}


def test_videos_sharing_a_frames_folder_are_refused(tmp_path):
    for name in ("x.mp4", "x.avi"):
        (tmp_path / "in" / "videos").mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / "videos" / name).write_bytes(b"")
    with pytest.raises(UserError, match="x.avi and videos/x.mp4|x.mp4 and videos/x.avi"):
        extract(tmp_path / "in", tmp_path / "out", progress=False)


def test_cli_exit_codes(tmp_path, face_video):
    runner = CliRunner()
    res = runner.invoke(extract_cmd, ["--videos", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "error: videos folder" in res.output and "nowhere" in res.output

    (tmp_path / "in").mkdir()
    os.link(face_video, tmp_path / "in" / "ok.mp4")
    (tmp_path / "in" / "bad.webm").write_bytes(b"\0" * 100)
    res = runner.invoke(extract_cmd, ["--videos", str(tmp_path / "in"), "--out", str(tmp_path / "o"),
                                      "--frames-per-video", "2", "--size", "64"])
    assert res.exit_code == 1, res.output
    assert "failed: bad.webm" in res.output and "2 videos: 1 extracted" in res.output
    assert len(list((tmp_path / "o" / "frames" / "ok").iterdir())) == 2
