"""Decoded images on disk: each set of images decoded once per node, memory-mapped by every trial.

A study's trials score the same val/test splits and draw from the same training subsets. At
paper scale (FF++ at 299 px: 8,960 frames, 2.4 GB decoded per split) decoding them in every
trial costs tens of seconds and gigabytes per trial process. Here a set of images (a list of
paths at one image size) is decoded once into a uint8 `.npy` file (N, 3, S, S) under a cache
folder, and every trial maps it: the OS page cache holds one copy per node, shared by all.

- Key: the paths, each file's size and mtime, and the image size (a changed or replaced
  image gives a new key: a stale array is never used).
- Writes are atomic: decoded into `<key>.npy.<pid>.<random>.tmp`, flushed, renamed; the
  sidecar `<key>.json` (shape, bytes, digest of sampled blocks) is written the same way,
  after the array. A file lock (`<key>.lock`, `fcntl.flock`) makes the trials that race for
  the same set wait for the one that decodes it; without locks (e.g. some network file
  systems) each racer decodes into its own temp file and the renames stay atomic.
- Checked on every open: the sidecar's key, the file's byte count (truncation), the `.npy`
  header (shape, dtype) and a digest of 64 sampled 4 KiB blocks plus the header. A file that
  fails is removed and decoded again, never used. (A flipped bit outside the sampled blocks
  is not detected: hashing every byte on every open would cost what the cache saves.)
- Mapped copy-on-write (`mmap.ACCESS_COPY`): the file is opened read-only, a stray write
  changes the trial's private copy, never the cache. `MappedImages.release` drops pages a
  pass has read from the process (`madvise(MADV_DONTNEED)`), so evaluation that streams
  through a split keeps a trial's resident memory flat; the page cache keeps them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from trainables.data.images import load_images
from trainables.errors import DataError

FORMAT = 1  # bump when the decoding changes: old files are then never matched
CHUNK = 256  # images decoded at a time while writing (bounds the writer's memory)
SAMPLE_BLOCKS, BLOCK = 64, 4096

try:
    import fcntl
except ImportError:  # not POSIX: no lock; racing writers still rename atomically
    fcntl = None


def set_key(paths: Sequence[str | os.PathLike], size: int) -> str:
    """The cache key of `paths` decoded at `size`: changes when any file is replaced."""
    h = hashlib.sha256(f"ckd-decoded:{FORMAT}:{size}\n".encode())
    for p in paths:
        p = os.fspath(p)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise DataError(f"image file {p} does not exist: was the dataset moved? re-index it") from None
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


@dataclass
class MappedImages:
    """uint8 (N, 3, S, S) images mapped from a cache file."""
    images: torch.Tensor
    path: Path
    _map: mmap.mmap
    _offset: int  # bytes before the first image (the .npy header)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.images.shape[1:]))

    def release(self, start: int, stop: int) -> None:
        """Drop rows [start, stop) from this process's resident memory (whole pages inside
        the range only); reading them again maps them back from the page cache."""
        page = mmap.PAGESIZE
        lo = self._offset + start * self.row_bytes
        hi = self._offset + stop * self.row_bytes
        lo, hi = -(-lo // page) * page, hi // page * page
        if hi > lo and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def _sample_digest(f, nbytes: int) -> str:
    """sha256 of the first block and SAMPLE_BLOCKS blocks spread over the file."""
    h = hashlib.sha256()
    starts = {0, max(0, nbytes - BLOCK)} | {i * max(0, nbytes - BLOCK) // SAMPLE_BLOCKS for i in range(SAMPLE_BLOCKS)}
    for s in sorted(starts):
        f.seek(s)
        h.update(f.read(BLOCK))
    return h.hexdigest()


def _header(f) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of the .npy file `f`, read from its start."""
    f.seek(0)
    major, _ = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if fortran:
        raise ValueError("Fortran-ordered array")
    return tuple(shape), dtype, f.tell()


def _replace_atomically(path: Path, write) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class DecodedStore:
    """A folder of decoded image sets, shared by the trials of a node."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.expanduser(os.fspath(root)))
        self.rebuilt: list[str] = []  # keys found damaged and decoded again (read by tests)
        self.decoded: list[str] = []  # keys this process decoded

    def files(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.npy", self.root / f"{key}.json"

    def get(self, paths: Sequence[str | os.PathLike], size: int) -> MappedImages:
        """The images at `paths` decoded at `size`, mapped from the cache (decoded first if
        no valid file is there)."""
        self.root.mkdir(parents=True, exist_ok=True)
        key = set_key(paths, size)
        shape = (len(paths), 3, size, size)
        found = self._open(key, shape)
        if found is not None:
            return found
        with _locked(self.root / f"{key}.lock"):
            # decoded by another trial while this one waited? a damaged file is removed only here,
            # under the lock (unlocked, it may be a writer's array whose sidecar is on its way)
            found = self._open(key, shape, repair=True)
            if found is None:
                self._write(key, paths, size, shape)
        found = self._open(key, shape)
        if found is None:
            raise DataError(f"decoded-image cache {self.root}: {key}.npy fails its check right after "
                            f"being written: is the disk full or the folder shared by different files?")
        return found

    def _open(self, key: str, shape: tuple[int, ...], repair: bool = False) -> MappedImages | None:
        array, meta = self.files(key)
        if not array.exists() and not meta.exists():
            return None
        problem = self._problem(key, shape)
        if problem is None:
            return self._map(array, shape)
        if not repair:
            return None
        self.rebuilt.append(f"{key}: {problem}")
        for p in (array, meta):
            p.unlink(missing_ok=True)
        return None

    def _problem(self, key: str, shape: tuple[int, ...]) -> str | None:
        """Why the files of `key` cannot be used, or None."""
        array, meta_file = self.files(key)
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("key") != key or tuple(meta.get("shape", ())) != shape:
                return "sidecar does not describe this set"
            if array.stat().st_size != meta["bytes"]:
                return f"{array.stat().st_size} bytes, {meta['bytes']} written (truncated?)"
            with open(array, "rb") as f:
                header_shape, dtype, offset = _header(f)
                if header_shape != shape or dtype != np.uint8 or offset != meta["offset"]:
                    return "array header does not match"
                if _sample_digest(f, meta["bytes"]) != meta["digest"]:
                    return "sampled blocks differ from those written"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"unreadable ({exc.__class__.__name__}: {exc})"
        return None

    @staticmethod
    def _map(array: Path, shape: tuple[int, ...]) -> MappedImages:
        with open(array, "rb") as f:
            _, _, offset = _header(f)
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        flat = np.frombuffer(mm, dtype=np.uint8, count=int(np.prod(shape)), offset=offset)
        return MappedImages(torch.from_numpy(flat.reshape(shape)), array, mm, offset)

    def _write(self, key: str, paths: Sequence[str | os.PathLike], size: int, shape: tuple[int, ...]) -> None:
        array, meta = self.files(key)
        self.decoded.append(key)
        t0 = time.perf_counter()

        def write_array(f) -> None:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            for start in range(0, len(paths), CHUNK):
                f.write(load_images(paths[start:start + CHUNK], size).numpy().tobytes())

        _replace_atomically(array, write_array)
        with open(array, "rb") as f:
            _, _, offset = _header(f)
            nbytes = array.stat().st_size
            digest = _sample_digest(f, nbytes)
        record = {"key": key, "shape": list(shape), "bytes": nbytes, "offset": offset, "digest": digest,
                  "format": FORMAT, "first_path": os.fspath(paths[0]) if len(paths) else None,
                  "decode_s": round(time.perf_counter() - t0, 3)}
        _replace_atomically(meta, lambda f: f.write(json.dumps(record).encode()))
