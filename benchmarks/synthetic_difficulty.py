"""How hard is the built-in synthetic task? VT accuracy on the full train split and on
balanced 10/100/1000-image subsets, tiny model at 64 px, CPU.

    python benchmarks/synthetic_difficulty.py [--arch test_resnet] [--seeds 3]

Ends with `RESULT full=… v1000=… v100=… v10=…` (mean test accuracy over seeds).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from trainables.hparams import HParams
from trainables.trial import TrialSpec, run_trial


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="test_resnet")
    ap.add_argument("--num-images", type=int, default=6000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--root", default=None, help="dataset folder (default: a temporary one)")
    args = ap.parse_args()
    root = args.root or str(Path(tempfile.gettempdir()) / f"ckd-synthetic-{args.num_images}-{args.size}")
    data = {"kind": "synthetic", "root": root, "num_images": args.num_images, "size": args.size, "seed": 0}

    rows = {}
    for volume in (None, 1000, 100, 10):
        accs, aucs = [], []
        seeds = range(1) if volume is None else range(args.seeds)
        for seed in seeds:
            spec = TrialSpec(role="student", arch=args.arch, data=data, image_size=args.size,
                             volume=volume, subset_seed=seed)
            hp = (HParams(epochs=12, batch_size=64, lr=3e-3, seed=seed) if volume is None
                  else HParams(epochs=30, min_steps=150, batch_size=min(24, volume), lr=2e-3, seed=seed))
            t0 = time.perf_counter()
            out = run_trial(spec, hp)
            accs.append(out.metrics["test_acc"])
            aucs.append(out.metrics["test_auc"])
            print(f"volume={volume or 'full'} seed={seed} test_acc={accs[-1]:.3f} "
                  f"test_auc={aucs[-1]:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows[volume or "full"] = statistics.mean(accs)
        print(f"  -> volume={volume or 'full'}: acc {statistics.mean(accs):.3f} ± {sd:.3f}, "
              f"auc {statistics.mean(aucs):.3f} (n={len(accs)})", flush=True)
    print("RESULT " + " ".join(f"{'v' + str(k) if k != 'full' else k}={v:.3f}" for k, v in rows.items()))


if __name__ == "__main__":
    main()
