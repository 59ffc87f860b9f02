"""A synthetic real/fake task that installs offline: self-blended or face-swapped images.

Self-blended images (Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended
Images", CVPR 2022): a fake is an image with a region replaced by a slightly
colour-shifted, resampled copy of itself through a soft irregular mask, so the
only cue is the blending boundary and resampling, as in face-swap artefacts.

Swapped images (`manipulation="swap"`): the region comes from ANOTHER photograph's
crop, re-captured by a different "camera" drawn once a video: per-channel gain and
bias, a slight Gaussian blur, Gaussian sensor noise and JPEG compression (the real
frames have none of these). The traces are foreign content and colour inside a soft
mask, noise and 8 x 8 JPEG blocks inside it but not outside, and the blend boundary.
Real frames are the same for both manipulations and a seed; only the fakes differ,
so a detector trained on one kind of fake can be tested on the other.

"Real" frames are square crops of scikit-image's bundled photographs (they ship in
its wheel). Frames come in "videos" of `frames_per_video` crops sharing one base
crop with small jitter, so that a split by video matters. The settings were chosen in a
prototype at 64 px: with them a tiny CNN learns the task well above chance from thousands
of images and barely at all from 10.

`generate(out, num_images, manipulation=...)` writes `out/<split>/real|fake/<video>/<n>.png`
(70/15/15 split of videos per class, balanced) and `out/SYNTHETIC.json` last.
"""
from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from trainables.data.index import assign_splits, check_seed
from trainables.errors import DataError

MARKER = "SYNTHETIC.json"
VERSION = 1  # bump when the images a seed gives change
# `cat` is left out: it is the same photograph as `chelsea`; `logo` is a drawing.
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket",
          "immunohistochemistry", "hubble_deep_field", "retina")
SPLIT_FRACTIONS = {"val": 0.15, "test": 0.15}  # train gets the rest (70 %)

# real frames
CROP_SIDE = (0.2, 0.6)  # of the photo's short side
JITTER = 0.03  # frame-to-frame shift and scale of a video's crop, of the crop side
CONTRAST = (0.9, 1.1)
BRIGHTNESS = 0.08 * 255
# self-blending
MASK_AREA = (0.2, 0.5)  # ellipse area, of the image
MASK_ASPECT = (0.6, 1.6)
MASK_CENTRE = (0.35, 0.65)
EDGE_WOBBLE = 0.15  # radius x (1 + 0.15 sum_k sin(k theta + phi_k))
EDGE_HARMONICS = (2, 3, 5)
MASK_SIGMA = (1.0, 4.0)  # px
SOURCE_GAIN = (0.94, 1.06)
SOURCE_BIAS = 8.0
SOURCE_SHRINK = (0.5, 0.9)
SOURCE_SHIFT = 2  # px, half the time
# face swap: the donor's camera, drawn once a video
MANIPULATIONS = ("blend", "swap")
DONOR_GAIN = (0.85, 1.15)  # per channel: a stronger colour shift than self-blending's
DONOR_BIAS = 16.0
DONOR_BLUR = (0.3, 1.0)  # px
DONOR_NOISE = (2.0, 6.0)  # sensor noise sigma, of 255; real frames have none
DONOR_JPEG = (40, 75)  # quality; real frames are lossless


def load_photos(max_short_side: int | None = None) -> list[np.ndarray]:
    """scikit-image's sample photographs as uint8 RGB arrays (H, W, 3).

    With `max_short_side`, larger photos are first shrunk (bicubic) to it, so that
    cropping them later costs little; 5 x size keeps the smallest crop >= size.
    """
    import skimage.data

    photos = []
    for name in PHOTOS:
        img = np.asarray(getattr(skimage.data, name)())
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = np.ascontiguousarray(img[:, :, :3], dtype=np.uint8)
        h, w = img.shape[:2]
        if max_short_side and min(h, w) > max_short_side:
            f = max_short_side / min(h, w)
            img = np.asarray(Image.fromarray(img).resize((round(w * f), round(h * f)), Image.BICUBIC))
        photos.append(img)
    return photos


def self_blend(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A self-blended fake of `img` (uint8, H x W x 3): mask * source + (1 - mask) * img."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"self_blend needs a uint8 H x W x 3 image, got {img.dtype} {img.shape}")
    mask = blend_mask(img.shape[0], img.shape[1], rng)[:, :, None]  # (H, W, 1)
    source = _resampled_source(img, rng).astype(np.float32)
    out = mask * source + (1 - mask) * img.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def blend_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Soft irregular ellipse in [0, 1], float32 (H, W)."""
    area = rng.uniform(*MASK_AREA) * h * w
    aspect = rng.uniform(*MASK_ASPECT)
    ry = np.sqrt(area / (np.pi * aspect))  # pi * rx * ry = area, rx / ry = aspect
    rx = aspect * ry
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(*MASK_CENTRE) * h, rng.uniform(*MASK_CENTRE) * w
    phases = rng.uniform(0, 2 * np.pi, size=len(EDGE_HARMONICS))
    sigma = rng.uniform(*MASK_SIGMA)

    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = y + 0.5 - cy, x + 0.5 - cx
    u = (np.cos(angle) * dx + np.sin(angle) * dy) / rx  # ellipse frame, unit circle = edge
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) / ry
    theta = np.arctan2(v, u)
    wobble = sum(np.sin(k * theta + p) for k, p in zip(EDGE_HARMONICS, phases))
    inside = (u * u + v * v) <= (1 + EDGE_WOBBLE * wobble) ** 2
    return np.clip(gaussian_filter(inside.astype(np.float32), sigma, mode="nearest"), 0, 1)


def _resampled_source(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    gain = rng.uniform(*SOURCE_GAIN, size=3).astype(np.float32)
    bias = rng.uniform(-SOURCE_BIAS, SOURCE_BIAS, size=3).astype(np.float32)
    shifted = np.clip(np.rint(img * gain + bias), 0, 255).astype(np.uint8)
    f = rng.uniform(*SOURCE_SHRINK)
    small = Image.fromarray(shifted).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
    source = np.asarray(small.resize((w, h), Image.BICUBIC))
    if rng.random() < 0.5:
        dy, dx = rng.integers(-SOURCE_SHIFT, SOURCE_SHIFT + 1, size=2)
        source = _shift(source, int(dy), int(dx))
    return source


def _shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate by (dy, dx) px, repeating the edge pixels."""
    h, w = img.shape[:2]
    pad = np.pad(img, ((abs(dy),) * 2, (abs(dx),) * 2, (0, 0)), mode="edge")
    return pad[abs(dy) - dy:abs(dy) - dy + h, abs(dx) - dx:abs(dx) - dx + w]


def real_video(photos: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`n` frames (uint8 size x size x 3) of one "video": jittered crops of one base crop.

    Flips, contrast and brightness are drawn once a video (frames of a clip share
    them); only the crop's position and scale move from frame to frame.
    """
    return _video_of(photos[rng.integers(len(photos))], n, size, rng)


def swap_video(photos: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`n` face-swapped frames: a real video whose masked region comes from a video of another photo.

    The target video takes the same draws as `real_video`; the donor video is one
    of the other photos, re-captured by one camera (`DonorCamera`) for all its frames.
    """
    if len(photos) < 2:
        raise ValueError("swap_video needs at least two photos (the donor must be another photo)")
    k = int(rng.integers(len(photos)))
    target = _video_of(photos[k], n, size, rng)
    donor = _video_of(photos[(k + 1 + int(rng.integers(len(photos) - 1))) % len(photos)], n, size, rng)
    camera = DonorCamera.draw(rng)
    return [face_swap(t, d, rng, camera) for t, d in zip(target, donor)]


@dataclass(frozen=True)
class DonorCamera:
    """How a swapped-in region was captured: colour, blur, sensor noise, JPEG quality."""

    gain: np.ndarray  # (3,)
    bias: np.ndarray  # (3,)
    blur: float  # Gaussian sigma, px
    noise: float  # sigma, of 255
    quality: int  # JPEG

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "DonorCamera":
        return cls(rng.uniform(*DONOR_GAIN, size=3).astype(np.float32),
                   rng.uniform(-DONOR_BIAS, DONOR_BIAS, size=3).astype(np.float32),
                   float(rng.uniform(*DONOR_BLUR)), float(rng.uniform(*DONOR_NOISE)),
                   int(rng.integers(DONOR_JPEG[0], DONOR_JPEG[1] + 1)))

    def capture(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`img` (uint8 H x W x 3) through this camera: blur, gain and bias, noise, then JPEG."""
        arr = gaussian_filter(img.astype(np.float32), (self.blur, self.blur, 0), mode="nearest")
        arr = arr * self.gain + self.bias + rng.normal(0, self.noise, img.shape).astype(np.float32)
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=self.quality)
        return np.asarray(Image.open(buf).convert("RGB"))


def face_swap(img: np.ndarray, donor: np.ndarray, rng: np.random.Generator,
              camera: DonorCamera | None = None) -> np.ndarray:
    """A swapped fake: mask * camera(donor) + (1 - mask) * img, both uint8 H x W x 3.

    Without `camera`, one is drawn from `rng` (a video passes the same one to each frame).
    """
    for name, a in (("img", img), ("donor", donor)):
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"face_swap needs uint8 H x W x 3 images, got {name} {a.dtype} {a.shape}")
    if donor.shape != img.shape:
        raise ValueError(f"face_swap needs img and donor of one shape, got {img.shape} and {donor.shape}")
    camera = DonorCamera.draw(rng) if camera is None else camera
    mask = blend_mask(img.shape[0], img.shape[1], rng)[:, :, None]  # (H, W, 1)
    source = camera.capture(donor, rng).astype(np.float32)
    out = mask * source + (1 - mask) * img.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _video_of(photo: np.ndarray, n: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`real_video`'s frames of a given photo."""
    ph, pw = photo.shape[:2]
    side = rng.uniform(*CROP_SIDE) * min(ph, pw)
    cy = rng.uniform(side / 2, ph - side / 2)
    cx = rng.uniform(side / 2, pw - side / 2)
    flip_h, flip_v = rng.random(2) < 0.5
    contrast, brightness = rng.uniform(*CONTRAST), rng.uniform(-BRIGHTNESS, BRIGHTNESS)
    frames = []
    for _ in range(n):
        s = side * (1 + rng.uniform(-JITTER, JITTER))
        y = np.clip(cy + rng.uniform(-JITTER, JITTER) * side, s / 2, ph - s / 2)
        x = np.clip(cx + rng.uniform(-JITTER, JITTER) * side, s / 2, pw - s / 2)
        arr = np.asarray(_crop(photo, y - s / 2, x - s / 2, s, size), dtype=np.float32)
        if flip_h:
            arr = arr[:, ::-1]
        if flip_v:
            arr = arr[::-1]
        mean = arr.mean()
        arr = (arr - mean) * contrast + mean + brightness
        frames.append(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    return frames


def _crop(photo: np.ndarray, top: float, left: float, side: float, size: int) -> Image.Image:
    """The square (top, left, side) of `photo`, bicubic to size x size.

    Only a margin-padded window goes through PIL: converting the whole photo
    (up to 1411 px) for every frame would dominate the run time.
    """
    ph, pw = photo.shape[:2]
    margin = int(np.ceil(2 * side / size)) + 2  # bicubic support at this scale
    y0, x0 = max(0, int(top) - margin), max(0, int(left) - margin)
    y1, x1 = min(ph, int(np.ceil(top + side)) + margin), min(pw, int(np.ceil(left + side)) + margin)
    window = Image.fromarray(photo[y0:y1, x0:x1])
    box = (left - x0, top - y0, left - x0 + side, top - y0 + side)
    return window.resize((size, size), Image.BICUBIC, box=box)


# a marker without these keys was made with these values (markers written before the key existed)
MARKER_DEFAULTS = {"manipulation": "blend"}


def marker_params(num_images: int, size: int, seed: int, frames_per_video: int, manipulation: str = "blend") -> dict:
    """What the marker file records; a dataset is reused only if these match (missing keys: MARKER_DEFAULTS).

    `manipulation` is recorded only when it is not "blend", so markers written before it
    existed still match.
    """
    check_manipulation(manipulation)
    params = {"version": VERSION, "num_images": num_images, "size": size, "seed": seed,
              "frames_per_video": frames_per_video}
    return params if manipulation == "blend" else {**params, "manipulation": manipulation}


def check_manipulation(manipulation: object) -> str:
    if manipulation not in MANIPULATIONS:
        raise DataError(f"synthetic manipulation={manipulation!r} must be one of {list(MANIPULATIONS)}")
    return manipulation


def generate(
    out: str | Path, num_images: int, size: int = 64, seed: int = 0, frames_per_video: int = 4, workers: int = 4,
    manipulation: str = "blend",
) -> Path:
    """Write the dataset to `out` (must be empty or absent) and return `out`.

    Half the images are real and half fake (`manipulation` "blend": self-blended, or
    "swap": face-swapped from another photo); videos of each class are split
    70/15/15 into train/val/test. Same arguments, same files; the real frames do
    not depend on `manipulation`.
    """
    out = Path(out)
    check_manipulation(manipulation)
    checks = (("num_images", num_images, 2), ("size", size, 8), ("frames_per_video", frames_per_video, 1))
    for name, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"synthetic {name}={value!r} must be an integer >= {low}")
    if num_images % 2:
        raise DataError(f"synthetic num_images={num_images} must be even (half real, half fake)")
    seed = check_seed(seed)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty: generate the synthetic dataset into a new folder")

    photos = load_photos(max_short_side=int(size / CROP_SIDE[0]))
    per_class = num_images // 2
    lengths = [frames_per_video] * (per_class // frames_per_video)
    lengths += [per_class % frames_per_video] if per_class % frames_per_video else []
    videos = [(cls, f"{cls}{i:05d}", n) for cls in ("real", "fake") for i, n in enumerate(lengths)]
    split_of = assign_splits({name: cls for cls, name, _ in videos}, SPLIT_FRACTIONS, seed)

    def write_video(number: int) -> None:
        cls, name, n = videos[number]
        rng = np.random.default_rng([seed, number])  # one stream per video: threads keep it deterministic
        if cls == "fake" and manipulation == "swap":
            frames = swap_video(photos, n, size, rng)
        else:
            frames = real_video(photos, n, size, rng)
            if cls == "fake":
                frames = [self_blend(f, rng) for f in frames]
        folder = out / split_of[name] / cls / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{i:03d}.png", compress_level=1)

    with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL and numpy release the GIL
        list(pool.map(write_video, range(len(videos))))
    counts = {"real": per_class, "fake": per_class}
    marker = {**marker_params(num_images, size, seed, frames_per_video, manipulation), "images": counts,
              "split_fractions": {"train": 0.7, **SPLIT_FRACTIONS}}
    (out / MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # last: marks the set finished
    return out
