"""Self-blended pseudo-fakes from any folder of real face crops: `make_sbi(real, out)`.

Each real image (png/jpg/jpeg, found recursively) gets `per_image` fakes made by
`synthetic.self_blend` (Shiohara & Yamasaki, "Detecting Deepfakes with
Self-Blended Images", CVPR 2022), the generator of the synthetic dataset. Output
is a `folder`-layout dataset, the input's folders kept as videos:
    <real>/<rel>/<name>  ->  <out>/real/<rel>/<name>             (hard link, or a copy)
                             <out>/fake/<rel>/<stem>_sbi<j>.png
An image directly in <real> is its own video: <out>/real/<stem>/<name>. A real
clip and its fakes share one video name, which the `folder` reader keeps in one
split. Each image's fakes depend only on the seed and its relative path, so the
same seed gives the same files. The dataset is written to a hidden folder beside
`out` and renamed when complete; `<out>/SBI.json` records the parameters.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from trainables.data.images import to_rgb
from trainables.data.index import check_seed, list_images
from trainables.data.synthetic import self_blend
from trainables.errors import DataError

MARKER = "SBI.json"
VERSION = 1  # bump when the fakes a seed gives change
MAX_LISTED = 5


def video_folder(rel: PurePosixPath) -> PurePosixPath:
    """The folder (= video) an input image goes to, below real/ and fake/."""
    return rel.parent if rel.parent != PurePosixPath(".") else PurePosixPath(rel.stem)


def fake_names(rel: PurePosixPath, per_image: int) -> list[PurePosixPath]:
    return [video_folder(rel) / f"{rel.stem}_sbi{j}.png" for j in range(per_image)]


def image_rng(seed: int, rel: PurePosixPath, j: int) -> np.random.Generator:
    """One stream per (seed, image, copy): independent of the other files and of thread order."""
    key = int.from_bytes(hashlib.sha256(rel.as_posix().encode()).digest()[:8], "little")
    return np.random.default_rng([seed, key, j])


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) of an image file; DataError naming it if it cannot be decoded."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(to_rgb(img, str(path)), dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... for bad files
        raise DataError(f"real image {path} cannot be decoded ({exc.__class__.__name__}: {exc}): "
                        f"replace or remove it and run again") from None


def make_sbi(real: str | os.PathLike, out: str | os.PathLike, seed: int = 0, per_image: int = 1,
             workers: int = 4) -> dict:
    """Write the dataset to `out` (absent or empty) and return the counts written to SBI.json."""
    real_dir, out_dir = Path(real).expanduser().resolve(), Path(out).expanduser().resolve()
    seed = check_seed(seed)
    if isinstance(per_image, bool) or not isinstance(per_image, int) or per_image < 1:
        raise DataError(f"per_image={per_image!r} must be an integer >= 1")
    if not real_dir.is_dir():
        raise DataError(f"real images folder {real_dir} does not exist or is not a folder: check --real")
    if out_dir == real_dir or real_dir in out_dir.parents:
        raise DataError(f"--out {out_dir} is inside --real {real_dir}: write the dataset elsewhere")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir} is not an empty folder: write the self-blended dataset into a new folder")
    rels = [PurePosixPath(p.relative_to(real_dir).as_posix()) for p in list_images(real_dir)]
    if not rels:
        raise DataError(f"no .png/.jpg/.jpeg images under {real_dir}: point --real at face crops")
    _check_unique(rels, per_image, real_dir)

    partial = out_dir.parent / f".{out_dir.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted run

    def write(rel: PurePosixPath) -> None:
        src = real_dir / rel
        img = read_rgb(src)
        dst = partial / "real" / video_folder(rel) / rel.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        _link_or_copy(src, dst)
        for j, name in enumerate(fake_names(rel, per_image)):
            fake = partial / "fake" / name
            fake.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(self_blend(img, image_rng(seed, rel, j))).save(fake, compress_level=1)

    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:  # PIL and numpy release the GIL
            list(pool.map(write, rels))  # re-raises the first error
        counts = {"real": len(rels), "fake": len(rels) * per_image,
                  "videos": len({video_folder(r) for r in rels})}
        marker = {"version": VERSION, "seed": seed, "per_image": per_image, "real_dir": str(real_dir), **counts}
        (partial / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.rename(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return marker


def _check_unique(rels: list[PurePosixPath], per_image: int, real_dir: Path) -> None:
    """`a.png` and `a.jpg` in one folder would give the same fake (and flat files the same video)."""
    seen: dict[tuple[str, PurePosixPath], PurePosixPath] = {}
    clashes = []
    for rel in rels:
        targets = [("real", video_folder(rel) / rel.name)] + [("fake", f) for f in fake_names(rel, per_image)]
        for target in targets:
            pair = f"{seen.get(target)} and {rel}"
            if target in seen and seen[target] != rel and pair not in clashes:
                clashes.append(pair)
            seen.setdefault(target, rel)
    if clashes:
        raise DataError(f"images under {real_dir} whose outputs would share a file: {clashes[:MAX_LISTED]}; "
                        f"rename one of each pair")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)
