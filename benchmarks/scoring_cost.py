"""What does scoring an evaluation dataset cost a trial? Seconds per 1,000 frames.

    python benchmarks/scoring_cost.py [--models xception efficientnet_b4 mobilenet] [--size 299]
        [--frames 64] [--threads 2] [--device cpu]
    python benchmarks/scoring_cost.py --smoke      # test_resnet at 64 px, seconds

Each model (random weights: only the cost matters) scores --frames uint8 frames of --size px
with `trainables.engine.predict`, the function a trial scores its test split and every
`evaluate` dataset with (batches of `eval_batch_size`, no gradients), after one warm-up pass;
the time is scaled to 1,000 frames. On the CPU, --threads torch threads (a trial of `cpu: N`
gets N). Ends with `RESULT <model>_s_per_1000=…` for each model.
"""
from __future__ import annotations

import argparse
import time

import torch

from trainables.engine import ImageSet, predict
from trainables.models import create_model


def seconds_per_1000(arch: str, size: int, frames: int, device: str) -> float:
    model = create_model(arch).eval()
    images = torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8)
    data = ImageSet(images, torch.zeros(frames, dtype=torch.long))
    predict(model, ImageSet(images[:2], torch.zeros(2, dtype=torch.long)), device)  # warm-up
    t0 = time.perf_counter()
    predict(model, data, device)
    return (time.perf_counter() - t0) / frames * 1000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["xception", "efficientnet_b4", "mobilenet"])
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--frames", type=int, default=64, help="frames scored per model (the time is scaled to 1,000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.models, args.size, args.frames = ["test_resnet"], 64, 16
    torch.set_num_threads(args.threads)
    out = {}
    for arch in args.models:
        out[arch] = seconds_per_1000(arch, args.size, args.frames, args.device)
        print(f"{arch} at {args.size} px on {args.device} ({args.threads} thread(s)): {out[arch]:.1f} s per 1,000 "
              f"frames ({1000 / out[arch]:.0f} frames/s)", flush=True)
    print("RESULT " + " ".join(f"{arch}_s_per_1000={s:.3f}" for arch, s in out.items()))


if __name__ == "__main__":
    main()
