"""Find the largest face in a frame and cut a square crop around it.

Detector: OpenCV's bundled Haar cascade `haarcascade_frontalface_default.xml`
(Viola & Jones, "Rapid Object Detection using a Boosted Cascade of Simple
Features", CVPR 2001). It ships inside `opencv-python-headless<5`, so nothing is
downloaded; it finds frontal faces only (profiles and strong tilts are missed).
Frames are shrunk to at most `DETECT_MAX_SIDE` px before detection, for speed.

Crop: a square of side `margin * max(w, h)` centred on the face box, shifted to lie
inside the frame; only when the square is larger than the frame is it padded with
black. Then resized to `size` x `size`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from trainables.errors import UserError

CASCADE = "haarcascade_frontalface_default.xml"
DETECT_MAX_SIDE = 640  # px: FF++/Celeb-DF faces stay well above MIN_FACE at this scale
MIN_FACE = 0.08  # of the (shrunk) frame's short side: smaller boxes are mostly false hits
SCALE_FACTOR = 1.1  # cascade pyramid step
MIN_NEIGHBORS = 5  # OpenCV's usual value: fewer gives more false faces


class Box(NamedTuple):
    """A face box in frame pixels."""

    x: int
    y: int
    w: int
    h: int


def _cv2():
    import cv2

    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise UserError(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 removed them): "
            f"pip install 'opencv-python-headless>=4.8,<5'"
        )
    return cv2


class FaceDetector:
    """Largest frontal face in a BGR frame (uint8 H x W x 3), or None."""

    def __init__(self) -> None:
        cv2 = _cv2()
        path = cv2.data.haarcascades + CASCADE
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise UserError(f"cannot load the face cascade {path}: reinstall 'opencv-python-headless>=4.8,<5'")

    def detect(self, frame: np.ndarray) -> list[Box]:
        """All face boxes in `frame`, in its own pixel coordinates."""
        cv2 = _cv2()
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        f = min(1.0, DETECT_MAX_SIDE / max(h, w))
        if f < 1:
            gray = cv2.resize(gray, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        min_side = max(20, round(MIN_FACE * min(gray.shape)))
        found = self._cascade.detectMultiScale(gray, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                               minSize=(min_side, min_side))
        return [Box(*(round(v / f) for v in b)) for b in found]

    def largest(self, frame: np.ndarray) -> Box | None:
        boxes = self.detect(frame)
        return max(boxes, key=lambda b: b.w * b.h) if boxes else None


def square_box(box: Box, margin: float, height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the crop square: centred on `box`, shifted inside the frame.

    When `side` exceeds a frame dimension the square is centred on that axis instead
    and sticks out on both sides (`crop_square` pads it).
    """
    side = max(1, round(margin * max(box.w, box.h)))
    cy, cx = box.y + box.h / 2, box.x + box.w / 2

    def place(centre: float, extent: int) -> int:
        if side >= extent:
            return (extent - side) // 2  # <= 0: padded on both sides
        return int(min(max(round(centre - side / 2), 0), extent - side))

    return place(cy, height), place(cx, width), side


def crop_square(frame: np.ndarray, box: Box, margin: float, size: int) -> np.ndarray:
    """The face crop (size x size, frame's channels): see the module docstring."""
    cv2 = _cv2()
    h, w = frame.shape[:2]
    top, left, side = square_box(box, margin, h, w)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, h), min(left + side, w)
    patch = frame[y0:y1, x0:x1]
    if patch.shape[0] != side or patch.shape[1] != side:  # black padding where the square leaves the frame
        patch = cv2.copyMakeBorder(patch, y0 - top, top + side - y1, x0 - left, left + side - x1,
                                   cv2.BORDER_CONSTANT, value=0)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp)
