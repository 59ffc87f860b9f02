"""Is data ever the bottleneck? Decoding and in-memory batching against model training, images/s.

    python benchmarks/data_throughput.py [--num-images 2400] [--size 64] [--workers 1 2 4]
        [--loader-workers 2 0 1] [--models test_resnet mobilenetv3_small_050] [--batch-size 64] [--repeats 3]
    python benchmarks/data_throughput.py --smoke     # tiny sizes, seconds

On the synthetic dataset's train split (CPU):
- decode: `trainables.data.load_images` of every file with 1/2/4 threads, cold for the
  process (no in-memory image cache; the files themselves are read once beforehand so
  every worker count finds them in the OS page cache). A trial decodes its images once
  (`trainables.trial` keeps them in memory across a worker's trials);
- memory: what the engine does per batch: uint8 tensor indexing, random flip,
  `trainables.engine.to_input` (float, normalise);
- stream: what a teacher trial on a full split does instead (`data.stream`): a
  `BatchStream` decoding each batch from disk with --loader-workers DataLoader processes
  (kept across epochs; pinned memory on CUDA only), images/s of the loader alone;
- model: `trainables.engine.train_student` (VT, one epoch over the train split, batch
  --batch-size, after a short warm-up run), i.e. a trial's training throughput, which
  includes the in-memory path; and the same training streamed from disk with the first
  of --loader-workers (the teacher's path).
Prints the in-memory path's share of a training step and the decoding's share of a
12-epoch trial on the train split, and whether data is ever the bottleneck (slower than
the model). Ends with `RESULT decode_ips=… memory_ips=… model_ips_<model>=…
stream_model_ips_<model>=… stream_ips_w<N>=…` (decode_ips: the best thread count;
decode_ips_w<N> for each).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainables.data import load_images, read_index
from trainables.data.stream import BatchStream, FileSet
from trainables.engine import ImageSet, batches, flip_batch, to_input, train_student
from trainables.hparams import HParams
from trainables.losses import baseline_method
from trainables.models import create_model

VT = baseline_method()  # vanilla training: what every ratio is taken against

CPU = torch.device("cpu")
TRIAL_EPOCHS = 12  # a quickstart teacher trial: what one decoding is spread over


def decode_ips(paths: list[str], size: int, workers: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        images = load_images(paths, size, workers=workers)
        times.append(time.perf_counter() - t0)
        assert len(images) == len(paths)
    return len(paths) / statistics.median(times)


def memory_ips(images: torch.Tensor, batch_size: int, num_batches: int) -> float:
    gen = torch.Generator().manual_seed(0)
    seen = 0
    t0 = time.perf_counter()
    for idx in batches(len(images), batch_size, num_batches, gen):
        flips = torch.rand(len(idx), generator=gen) < 0.5
        x = to_input(flip_batch(images[idx], flips), CPU)
        seen += x.shape[0]
    return seen / (time.perf_counter() - t0)


def stream_ips(data: FileSet, batch_size: int, epochs: int) -> float:
    """Images/s of the loader alone over `epochs` passes (the workers start once, untimed)."""
    order = [torch.arange(i, min(i + batch_size, len(data))) for i in range(0, len(data), batch_size)]
    with BatchStream(data) as stream:
        for _ in stream.batches(order[:2]):  # start the workers
            pass
        t0 = time.perf_counter()
        seen = sum(len(b) for _ in range(epochs) for b in stream.batches(order))
        return seen / (time.perf_counter() - t0)


def model_ips(name: str, train: ImageSet | FileSet, batch_size: int, epochs: int) -> float:
    hp = HParams(method=VT, batch_size=batch_size, epochs=1)
    warm = ImageSet(load_images(train.paths[: 2 * batch_size], train.size) if isinstance(train, FileSet)
                    else train.images[: 2 * batch_size], train.labels[: 2 * batch_size])
    train_student(create_model(name), [], warm, None, hp, device=CPU)  # allocator, kernels
    result = train_student(create_model(name), [], train, None, hp.replace(epochs=epochs), device=CPU)
    return result.images_per_second


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-images", type=int, default=2400, help="images of the synthetic dataset")
    ap.add_argument("--size", type=int, default=64, help="image size (px)")
    ap.add_argument("--root", default=None, help="dataset folder (default: a temporary one)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="decoding threads")
    ap.add_argument("--loader-workers", type=int, nargs="+", default=[2, 0, 1],
                    help="DataLoader processes of the streamed path; the first one also trains")
    ap.add_argument("--models", nargs="+", default=["test_resnet", "mobilenetv3_small_050"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1, help="timed training epochs per model")
    ap.add_argument("--memory-batches", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3, help="decoding runs per worker count; the median counts")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        args.num_images, args.size, args.repeats, args.memory_batches = 480, 32, 1, 10
        args.threads = args.threads or 1  # tiny ops: a second thread only waits (worse on a busy machine)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.root or str(Path(tempfile.gettempdir()) / f"ckd-synthetic-{args.num_images}-{args.size}")
    index = read_index({"kind": "synthetic", "root": root, "num_images": args.num_images,
                        "size": args.size, "seed": 0})
    frame = index[index["split"] == "train"].reset_index(drop=True)
    paths = [str(p) for p in frame["path"]]
    if args.smoke:
        paths, frame = paths[:128], frame.iloc[:128]
    for p in paths:  # into the OS page cache: every worker count starts alike
        Path(p).read_bytes()
    print(f"train split: {len(paths)} images at {args.size} px ({root}); {torch.get_num_threads()} torch "
          f"threads")

    decode = {w: decode_ips(paths, args.size, w, args.repeats) for w in args.workers}
    for w, ips in decode.items():
        print(f"decode  {w} worker(s): {ips:8.0f} images/s")
    images = load_images(paths, args.size)
    labels = torch.tensor(frame["label"].to_numpy(), dtype=torch.long)
    mem = memory_ips(images, args.batch_size, args.memory_batches)
    print(f"in-memory batches (index + flip + to_input), batch {args.batch_size}: {mem:8.0f} images/s")
    streamed = {w: stream_ips(FileSet(paths, labels, args.size, workers=w), args.batch_size, args.epochs)
                for w in args.loader_workers}
    for w, ips in streamed.items():
        print(f"stream  {w} DataLoader worker(s): {ips:8.0f} images/s (decoded from disk every epoch)")
    train = ImageSet(images, labels)
    models = {name: model_ips(name, train, args.batch_size, args.epochs) for name in args.models}
    w0 = args.loader_workers[0]
    on_disk = FileSet(paths, labels, args.size, workers=w0)
    models_stream = {name: model_ips(name, on_disk, args.batch_size, args.epochs) for name in args.models}
    best_decode = max(decode.values())
    bottleneck = False
    for name, ips in models.items():
        step_share = ips / mem  # time share of the in-memory path in one training step
        decode_s, epoch_s = len(paths) / best_decode, len(paths) / ips
        trial_share = decode_s / (decode_s + TRIAL_EPOCHS * epoch_s)
        slower = [f"in-memory path ({mem:.0f}/s)"] if mem < ips else []
        slower += [f"decoding ({best_decode:.0f}/s)"] if best_decode < ips else []
        bottleneck |= mem < ips
        print(f"train   {name}: {ips:8.0f} images/s; in-memory path = {100 * step_share:.1f}% of a step; "
              f"decoding the split once = {100 * trial_share:.1f}% of a {TRIAL_EPOCHS}-epoch trial; "
              + (f"slower than the model: {', '.join(slower)}" if slower else "data keeps up"))
    for name, ips in models_stream.items():
        print(f"train   {name} streamed from disk ({w0} DataLoader workers): {ips:8.0f} images/s = "
              f"{ips / models[name]:.2f} x in memory")
    print("data is the bottleneck of a training step: " + ("YES" if bottleneck else "no")
          + " (decoding happens once per trial, the in-memory path on every step)")
    parts = [f"decode_ips={best_decode:.1f}", f"memory_ips={mem:.1f}"]
    parts += [f"model_ips_{name}={ips:.1f}" for name, ips in models.items()]
    parts += [f"stream_model_ips_{name}={ips:.1f}" for name, ips in models_stream.items()]
    parts += [f"decode_ips_w{w}={ips:.1f}" for w, ips in decode.items()]
    parts += [f"stream_ips_w{w}={ips:.1f}" for w, ips in streamed.items()]
    print("RESULT " + " ".join(parts))


if __name__ == "__main__":
    main()
