"""What does distillation cost over vanilla training, with and without the teacher cache?

    python benchmarks/distill_cost.py [--epochs 5] [--volume 200] [--teacher efficientnet_b0]
        [--student mobilenetv3_small_050] [--size 64] [--repeats 3] [--study-trials 20] [--threads N]
    python benchmarks/distill_cost.py --smoke      # seconds: 1 epoch, 20 images of 32 px,
                                                   # tiny test models, 1 repeat

The same student (same seed, same steps) is trained on a balanced subset of the
synthetic dataset (64 px, CPU, random-init teacher: only the cost matters) with VT, KD,
RKD and CKD. Each distillation method is timed as a trial of a study pays for it:
- cache warm: the teacher's outputs are already in the study's cache folder (the 2nd..Nth
  trial of a study; read from the file, as in a fresh worker) + training;
- first trial: the cache folder is empty: build the teacher, run it on the subset (both
  flips), write the file, then train;
- amortised: (first + (N - 1) * warm) / N over a study of N = --study-trials trials;
- uncached: build the teacher and run it on every step (`cache_teachers=False`).
Then consistent teaching: KD with `augment: [flip, crop, mixup]` (teacher and student on the
same view, new every step, so the teacher runs live; nothing is cached), against VT with flips
(`kd_live_aug`) and against VT with the same augmentations (`kd_live_aug_vs_vt_aug`).
Each time is the median over --repeats, divided by VT's median. Ends with
`RESULT kd_cached=… rkd_cached=… ckd_cached=… kd_uncached=… ckd_uncached=… kd_live_aug=…
kd_live_aug_vs_vt_aug=… at_live=…` (ratios to VT, cache warm). The issue's target: <= 1.15 for
KD and CKD with the cache. Last, a method that reads feature maps: AT on every stage but the
stem (`at_live`): a teacher cache holds logits and embeddings, not maps (a 64 px test_resnet's
stage maps are about 60 KB an image, an Xception's at 299 px over 10 MB), so its teacher runs
live on every step, as KD's does uncached.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainables.data import read_index
from trainables.data.subsets import balanced_subset
from trainables.engine import set_seed, train_student
from trainables.hparams import HParams
from trainables.losses import baseline_method
from trainables.models import create_model, save_checkpoint
from trainables.teacher_cache import clear_memory
from trainables.trial import TeacherRef, TrialSpec, image_set, load_teachers, teacher_outputs

VT = baseline_method()  # vanilla training: what every ratio is taken against

METHODS = ("kd", "rkd", "ckd")
MAPS = "at"  # a method that reads feature maps: its teachers run live on every step (no cache holds maps)
MODES = ("first", "warm", "uncached")  # "first" fills the folder that "warm" then reads
AUGMENT = ("flip", "crop", "mixup")  # consistent teaching's views (modes "aug" and "live_aug")
SMOKE = {"epochs": 1, "volume": 20, "teacher": "test_efficientnet", "student": "test_resnet", "size": 32,
         "repeats": 1, "num_images": 480}
CPU = torch.device("cpu")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--volume", type=int, default=200, help="balanced training images (even)")
    ap.add_argument("--teacher", default="efficientnet_b0")
    ap.add_argument("--student", default="mobilenetv3_small_050")
    ap.add_argument("--size", type=int, default=64, help="image size (px)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per method and mode; the median counts")
    ap.add_argument("--study-trials", type=int, default=20, help="N of the amortised first-trial cost")
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--root", default=None, help="dataset folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's); 1 is steadier on a shared machine")
    ap.add_argument("--num-images", type=int, default=2400, help="images of the synthetic dataset")
    ap.add_argument("--smoke", action="store_true", help=f"a quick run that checks the script: {SMOKE}")
    args = ap.parse_args(argv)
    if args.smoke:
        vars(args).update(SMOKE)
    if args.threads:
        torch.set_num_threads(args.threads)

    root = args.root or str(Path(tempfile.gettempdir()) / f"ckd-synthetic-{args.num_images}-{args.size}")
    data = {"kind": "synthetic", "root": root, "num_images": args.num_images, "size": args.size, "seed": 0}
    frame = balanced_subset(read_index(data), args.volume, seed=0)
    train = image_set(frame, args.size)
    work = Path(tempfile.mkdtemp(prefix="ckd-distill-cost-"))
    try:
        torch.manual_seed(0)
        ckpt = work / "teacher.pt"
        save_checkpoint(create_model(args.teacher), ckpt)  # random init: the cost is what we measure
        spec = TrialSpec(role="student", arch=args.student, data=data, image_size=args.size,
                         volume=args.volume, teachers=(TeacherRef(args.teacher, str(ckpt)),),
                         eval_splits=(), cache_dir=str(work / "teacher_cache"))

        def trial(method: str, mode: str) -> float:
            """Seconds a trial spends on teacher outputs and training (not on evaluation)."""
            hp = HParams(method=method, epochs=args.epochs, batch_size=args.batch_size, seed=0,
                         augment=AUGMENT if mode in ("aug", "live_aug") else ("flip",))
            set_seed(0)
            student = create_model(args.student)
            clear_memory()  # each trial as in a fresh worker: warm = read from the folder
            if mode == "first":
                shutil.rmtree(spec.cache_dir, ignore_errors=True)
            t0 = time.perf_counter()
            if method == VT:
                train_student(student, [], train, None, hp, device=CPU)
            elif mode in ("uncached", "live_aug", "live_maps"):  # live_*: the engine runs the teacher live itself
                teachers = load_teachers(spec.teachers)
                train_student(student, teachers, train, None, hp, device=CPU, cache_teachers=mode != "uncached")
            else:
                caches = teacher_outputs(spec, hp, frame, train, CPU)
                train_student(student, [], train, None, hp, device=CPU, teacher_caches=caches)
            return time.perf_counter() - t0

        print(f"teacher {args.teacher}, student {args.student}, {args.size} px, {args.volume} images, "
              f"{args.epochs} epochs, batch {args.batch_size}, {torch.get_num_threads()} threads, "
              f"median of {args.repeats}", flush=True)
        trial(VT, "-")  # warm-up: first-call costs (allocator, kernels) count for no method
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeats):  # interleaved: drift on a shared machine hits every method alike
            times.setdefault((VT, "-"), []).append(trial(VT, "-"))
            times.setdefault((VT, "aug"), []).append(trial(VT, "aug"))
            for method in METHODS:
                for mode in MODES:
                    times.setdefault((method, mode), []).append(trial(method, mode))
            times.setdefault(("kd", "live_aug"), []).append(trial("kd", "live_aug"))
            times.setdefault((MAPS, "live_maps"), []).append(trial(MAPS, "live_maps"))
        med = {k: statistics.median(v) for k, v in times.items()}
        spread = max((max(v) - min(v)) / statistics.median(v) for v in times.values())
        vt = med[(VT, "-")]
        n = args.study_trials
        ratio = {k: v / vt for k, v in med.items()}
        print(f"\nVT: {vt:.2f} s. Wall time / VT's (seconds in brackets); the widest spread of one "
              f"method's runs was {100 * spread:.0f} % of its median")
        print(f"{'method':<8}{'cache warm':>16}{'first trial':>16}{f'amortised N={n}':>18}{'uncached':>16}")
        for m in METHODS:
            amortised = (med[(m, 'first')] + (n - 1) * med[(m, 'warm')]) / n
            cells = [f"{ratio[(m, 'warm')]:.3f} ({med[(m, 'warm')]:.2f})",
                     f"{ratio[(m, 'first')]:.3f} ({med[(m, 'first')]:.2f})",
                     f"{amortised / vt:.3f} ({amortised:.2f})",
                     f"{ratio[(m, 'uncached')]:.3f} ({med[(m, 'uncached')]:.2f})"]
            print(f"{m:<8}{cells[0]:>16}{cells[1]:>16}{cells[2]:>18}{cells[3]:>16}")
        live, vt_aug = med[("kd", "live_aug")], med[(VT, "aug")]
        print(f"\nconsistent teaching, augment {list(AUGMENT)}, teacher live: KD {live / vt:.3f} x VT with flips "
              f"({live:.2f} s), {live / vt_aug:.3f} x VT with the same augmentations ({vt_aug:.2f} s, "
              f"{vt_aug / vt:.3f} x VT with flips)")
        at_live = med[(MAPS, "live_maps")]
        print(f"feature maps ({MAPS.upper()}, every stage but the stem, teacher live): {at_live / vt:.3f} x VT "
              f"({at_live:.2f} s), against KD with the teacher cached {ratio[('kd', 'warm')]:.3f} x and KD with "
              f"the teacher live {ratio[('kd', 'uncached')]:.3f} x")
        print(f"RESULT kd_cached={ratio[('kd', 'warm')]:.3f} rkd_cached={ratio[('rkd', 'warm')]:.3f} "
              f"ckd_cached={ratio[('ckd', 'warm')]:.3f} kd_uncached={ratio[('kd', 'uncached')]:.3f} "
              f"ckd_uncached={ratio[('ckd', 'uncached')]:.3f} kd_live_aug={live / vt:.3f} "
              f"kd_live_aug_vs_vt_aug={live / vt_aug:.3f} at_live={at_live / vt:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        clear_memory()


if __name__ == "__main__":
    main()
