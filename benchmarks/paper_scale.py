"""Paper scale: does a trial's memory and data preparation depend on the size of the dataset?

    python benchmarks/paper_scale.py [--base-frames 512] [--scales 1 2 4] [--size 299]
        [--frames-per-video 32] [--trials 4] [--concurrent 2] [--volume 100] [--work DIR]
    python benchmarks/paper_scale.py --smoke      # tiny sizes, under 2 minutes

1. Writes a FaceForensics++ tree (`original_sequences/youtube/c23/frames/<id>/`,
   `manipulated_sequences/Deepfakes/c23/frames/<a>_<b>/`) of synthetic frames: real
   "videos" and their self-blended fakes from the project's synthetic generator, at --size
   px. Each scale has its own split files (`splits_<s>x/{train,val,test}.json`) naming
   --base-frames x s frames per val and test split (the first pairs of one pool), so the
   scales share the frames on disk. The reader is the real `ffpp` one.
2. Per scale, a Ray Tune stage (`study.tuner.make_tuner`, as a study runs it) of --trials
   VT student trials of test_resnet at --size px (subsets of --volume images, distinct
   seeds), --concurrent at a time, each asking Ray for 1 CPU and --memory-per-trial bytes;
   every trial scores the whole val and test splits, mapped from the study's decoded-image
   cache (`trainables/data/decoded.py`; with --no-cache, decoded into each trial's own memory, as
   before the cache existed), and, unless --no-evaluate, an evaluation dataset (`evaluate`) whose
   test split is the largest scale's, at every scale: its scoring must not raise the peak either.
   Ray's memory monitor is on (its default).
3. From the trials' own records: peak RSS of each trial process, and its data-preparation
   seconds (index, subset, mapped val and test): the first trial (which decodes the splits
   for the node) against the later ones (started after the cache was complete; each still
   decodes its own training subset, as a trial with a new seed does). RESULT gives the
   largest scale's.
4. Evaluation images/s of `trainables.engine.predict` over the largest scale's test split
   mapped from the cache, against a bare loop over the same images held in memory.
Ends with `RESULT rss_growth_4x=<peak trial RSS at the largest scale / at the smallest>
later_prep_fraction=<later trials' mean data-preparation s / the first's> eval_ratio=<mapped
eval images/s / in-memory> cache_gb=<decoded-image cache on disk> trials_killed=<n>`.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainables.data.decoded import DecodedStore
from trainables.data.synthetic import CROP_SIDE, load_photos, real_video, self_blend
from trainables.engine import ImageSet, eval_batch_size, predict, to_input
from trainables.hparams import HParams
from trainables.losses import baseline_method
from trainables.models import create_model
from trainables.record import RunTags
from trainables.trial import CrossSet, TrialSpec, dataset_index, eval_frame

METHOD = "Deepfakes"


def pair_ids(first: int, count: int) -> list[list[str]]:
    return [[f"{2 * i:03d}", f"{2 * i + 1:03d}"] for i in range(first, first + count)]


def write_tree(root: Path, pairs: list[list[str]], frames: int, size: int, seed: int = 0) -> None:
    """Real videos a and b and fakes a_b, b_a (self-blended frames of a and b) per pair."""
    photos = load_photos(max_short_side=int(size / CROP_SIDE[0]))
    real_dir = root / "original_sequences" / "youtube" / "c23" / "frames"
    fake_dir = root / "manipulated_sequences" / METHOD / "c23" / "frames"

    def save(folder: Path, images) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(folder / f"{i:03d}.png", compress_level=1)

    def write_pair(number: int) -> None:
        a, b = pairs[number]
        rng = np.random.default_rng([seed, number])
        for vid, other in ((a, b), (b, a)):
            reals = real_video(photos, frames, size, rng)
            save(real_dir / vid, reals)
            save(fake_dir / f"{vid}_{other}", [self_blend(f, rng) for f in reals])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write_pair, range(len(pairs))))


def write_splits(root: Path, scale: int, train: list, val_pool: list, test_pool: list, per_split: int) -> Path:
    folder = root / f"splits_{scale}x"
    folder.mkdir(exist_ok=True)
    lists = {"train": train, "val": val_pool[:per_split * scale], "test": test_pool[:per_split * scale]}
    for split, pairs in lists.items():
        (folder / f"{split}.json").write_text(json.dumps(pairs))
    return folder


def trial_configs(root: Path, split_dir: Path, args, cross_dir: Path | None = None) -> list[dict]:
    """The scale's VT trials; with `cross_dir`, each also scores an evaluation dataset: the same
    tree with the largest scale's split lists (`evaluate`, metrics cross_big_*)."""
    data = {"kind": "ffpp", "root": str(root), "methods": [METHOD], "split_dir": str(split_dir)}
    cross = () if cross_dir is None else (CrossSet("big", {**data, "split_dir": str(cross_dir)}),)
    hp = HParams(method=baseline_method(), epochs=1, batch_size=16, min_steps=2, seed=0)
    cells = []
    for seed in range(args.trials):
        spec = TrialSpec(role="student", arch="test_resnet", data=data, image_size=args.size, volume=args.volume,
                         subset_seed=seed, decode_dir=None if args.no_cache else str(args.work / "decoded"),
                         evaluate=cross,
                         device="cpu")
        tags = RunTags(stage="grid", source=METHOD, method=hp.method, student=spec.arch, seed=seed,
                       volume=args.volume, cell=f"{METHOD}/test_resnet/vt/{args.volume}/{seed}")
        cells.append({"spec": spec.to_dict(), "hparams": hp.replace(seed=seed).to_dict(),
                      "tags": RunTags.to_mlflow(tags)})
    return cells


def run_scale(scale: int, cells: list[dict], args) -> list[dict]:
    """The trials' final records (or their errors) of one scale's Tune stage."""
    from ray import tune

    from study.tuner import make_tuner

    resources = {"cpu": 1, "gpu": 0, "memory": args.memory_per_trial}
    tuner = make_tuner(f"scale{scale}", str(args.work / "ray"), {"cell": tune.grid_search(cells)}, resources,
                       max_concurrent=args.concurrent)
    results = tuner.fit()
    out = []
    for r in results:
        out.append({"error": repr(r.error) if r.error else "", **{k: v for k, v in (r.metrics or {}).items()
                                                                   if k.startswith(("sys_", "test_n", "cross_big_n"))}})
    return out


def prep_split(records: list[dict]) -> tuple[float, list[float]]:
    """(the first trial's data-preparation s, those of trials started after it had finished)."""
    ok = sorted((r for r in records if not r["error"]), key=lambda r: r["sys_data_prep_start"])
    first = ok[0]
    done = first["sys_data_prep_start"] + first["sys_data_prep_s"]
    later = [r["sys_data_prep_s"] for r in ok[1:] if r["sys_data_prep_start"] >= done]
    return first["sys_data_prep_s"], later


def eval_speed(root: Path, split_dir: Path, args, repeats: int) -> tuple[float, float, int]:
    """(mapped images/s, in-memory images/s, images) over a test split, best of `repeats`."""
    data = {"kind": "ffpp", "root": str(root), "methods": [METHOD], "split_dir": str(split_dir)}
    spec = TrialSpec(role="student", arch="test_resnet", data=data, image_size=args.size, volume=args.volume)
    frame = eval_frame(spec, dataset_index(data), "test")
    mapped = DecodedStore(args.work / "decoded").get(list(frame["path"]), args.size)
    labels = torch.tensor(frame["label"].to_numpy())
    held = mapped.images.clone()  # the same images, in this process's memory
    model = create_model("test_resnet").eval()
    cpu = torch.device("cpu")
    bs = eval_batch_size(cpu, args.size)  # the engine's, for both

    @torch.no_grad()
    def bare() -> None:
        for s in range(0, len(held), bs):
            model(to_input(held[s:s + bs], cpu))

    times: dict[str, list[float]] = {"mapped": [], "memory": []}
    for _ in range(repeats):
        for name, fn in (("mapped", lambda: predict(model, ImageSet(mapped.images, labels, mapped=mapped), cpu,
                                                       batch_size=bs)),
                         ("memory", bare)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return len(held) / min(times["mapped"]), len(held) / min(times["memory"]), len(held)


def disk_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-frames", type=int, default=512, help="frames per val and test split at scale 1")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--frames-per-video", type=int, default=32)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--volume", type=int, default=100, help="training images of each student trial")
    ap.add_argument("--memory-per-trial", type=int, default=2 * 1024**3, help="bytes each trial asks Ray for")
    ap.add_argument("--repeats", type=int, default=3, help="alternations of the evaluation speed test")
    ap.add_argument("--work", type=Path, default=None,
                    help="folder for the tree and caches (default: a new temp folder); a tree written there "
                         "before with the same --size and --frames-per-video and enough pairs is reused")
    ap.add_argument("--keep", action="store_true", help="keep --work afterwards")
    ap.add_argument("--no-cache", action="store_true",
                    help="for comparison: each trial decodes its splits into its own memory (no decoded-image cache)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, under 2 minutes")
    ap.add_argument("--no-evaluate", action="store_true",
                    help="trials score their own splits only (no evaluation dataset of the largest scale's size)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.base_frames, args.size, args.frames_per_video, args.volume, args.repeats = 16, 64, 4, 8, 1
    work_given = args.work is not None
    args.work = args.work or Path(tempfile.mkdtemp(prefix="ckd-paper-scale-"))
    try:
        run(args)
    finally:
        if not (args.keep or work_given):
            shutil.rmtree(args.work, ignore_errors=True)


def run(args) -> None:
    import ray

    root = args.work / "ffpp"
    per_video = 4 * args.frames_per_video  # frames per pair: 2 real + 2 fake videos
    per_split = math.ceil(args.base_frames / per_video)  # pairs per split at scale 1
    top = max(args.scales)
    train_pairs = max(1, math.ceil(2 * args.volume / per_video))
    pools = pair_ids(0, train_pairs), pair_ids(train_pairs, per_split * top), pair_ids(train_pairs + per_split * top,
                                                                                       per_split * top)
    t0 = time.perf_counter()
    pairs = pools[0] + pools[1] + pools[2]
    marker = {"size": args.size, "frames_per_video": args.frames_per_video}
    done = json.loads((root / "TREE.json").read_text()) if (root / "TREE.json").is_file() else {}
    if {k: done.get(k) for k in marker} == marker and done.get("pairs", 0) >= len(pairs):
        print(f"reusing the tree in {root} ({done['pairs']} pairs)", flush=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
        write_tree(root, pairs, args.frames_per_video, args.size)
        (root / "TREE.json").write_text(json.dumps({**marker, "pairs": len(pairs)}))
        print(f"wrote {len(pairs) * per_video} frames at {args.size} px in {time.perf_counter() - t0:.0f} s "
              f"({disk_gb(root):.2f} GB of PNG)", flush=True)
    ray.init(num_cpus=args.concurrent, include_dashboard=False, log_to_driver=False)
    peak, killed, fractions, split_dirs = {}, 0, {}, {}
    cross_dir = None if args.no_evaluate else write_splits(root, top, *pools, per_split)
    try:
        for scale in sorted(args.scales):
            split_dirs[scale] = write_splits(root, scale, *pools, per_split)
            records = run_scale(scale, trial_configs(root, split_dirs[scale], args, cross_dir), args)
            failed = [r["error"] for r in records if r["error"]]
            killed += sum("OutOfMemory" in e or "memory" in e.lower() for e in failed)
            if len(failed) == len(records):
                raise SystemExit(f"scale {scale}x: every trial failed: {failed[0]}")
            ok = [r for r in records if not r["error"]]
            peak[scale] = max(r["sys_peak_rss_mb"] for r in ok)
            first, later = prep_split(records)
            fractions[scale] = [s / first for s in later]
            cross = f" + {int(ok[0]['cross_big_n'])} evaluation-dataset frames" if cross_dir else ""
            print(f"scale {scale}x: {int(ok[0]['test_n'])} test + val frames each{cross}; {len(ok)}/{len(records)} trials "
                  f"finished, {len(failed)} failed; peak RSS per trial {[round(r['sys_peak_rss_mb']) for r in ok]} MiB; "
                  f"data preparation: first {first:.1f} s, later {[round(s, 2) for s in later]} s", flush=True)
    finally:
        ray.shutdown()
    if args.no_cache:
        print(f"RESULT peak_rss_mb_{min(args.scales)}x={peak[min(args.scales)]:.0f} "
              f"peak_rss_mb_{top}x={peak[top]:.0f} no_cache=1")
        return
    # in a fresh process, as a trial scores: this one has run Ray's driver
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        mapped_ips, memory_ips, n = pool.apply(eval_speed, (root, split_dirs[top], args, args.repeats))
    print(f"evaluation over {n} test frames at {args.size} px: mapped {mapped_ips:.0f} images/s, "
          f"in memory {memory_ips:.0f} images/s", flush=True)
    cache = disk_gb(args.work / "decoded")
    used = subprocess.run(["du", "-sh", str(args.work / "decoded")], capture_output=True, text=True).stdout.split()[0]
    print(f"decoded-image cache: {cache:.2f} GB ({used} on disk) for scales {sorted(args.scales)}")
    later = sum(fractions[top]) / len(fractions[top]) if fractions.get(top) else math.nan
    print(f"RESULT rss_growth_4x={peak[top] / peak[min(args.scales)]:.3f} later_prep_fraction={later:.4f} "
          f"eval_ratio={mapped_ips / memory_ips:.3f} cache_gb={cache:.3f} trials_killed={killed}")


if __name__ == "__main__":
    main()
