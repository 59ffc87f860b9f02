"""GPU training throughput: our engine against a bare timm loop, and trials per hour when
several small students share one GPU.

    python benchmarks/gpu_throughput.py [--size 299] [--batch-size 32]
        [--models legacy_xception efficientnet_b0 mobilenetv3_large_100] [--steps 20]
        [--share-model mobilenetv3_large_100] [--share-procs 4] [--share-trials 8]
    python benchmarks/gpu_throughput.py --smoke --device cpu      # the same code on the CPU, seconds

1. Per model, training images/s on random uint8 images (--size px, batch --batch-size):
   - engine: `trainables.engine.train_student` with HParams(method=VT, amp=True,
     channels_last=True): bf16 autocast, channels_last, cudnn.benchmark, AdamW, the flip,
     the loss wrapper and its per-step `loss.item()`; the first epoch (--steps steps) is a
     warm-up, the second is timed;
   - bare: a plain timm loop with the same settings (same images on the host, same
     normalisation, bf16 autocast, channels_last, cudnn.benchmark, TF32, AdamW, cross-entropy)
     and no per-step synchronisation; --warmup steps, then --steps timed.
   The ratio engine / bare is what the engine's loop costs (1.0 = nothing).
2. Trials per hour of a small student (--share-model, a VT trial of --share-images images
   for --share-epochs epochs, validated on --share-val images after each epoch): --share-trials
   trials one at a time in one process, against the same trials spread over --share-procs
   processes training at once on the same device (as Ray places trials with fractional
   GPUs), each with --share-threads torch threads either way. Each process warms up (CUDA
   context, cudnn autotuning) before a common start.
Without CUDA (and no explicit --device cpu) it says so and ends with `RESULT cuda=0`.
Ends with `RESULT cuda=… engine_ips_<model>=… bare_ips_<model>=… ratio_<model>=…
trials_per_hour_1=… trials_per_hour_<P>=… share_speedup=…`.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import time

import torch
import torch.nn.functional as F

from trainables.engine import (
    ImageSet, configure_device, memory_format, set_seed, to_input, train_student,
)
from trainables.hparams import HParams
from trainables.losses import baseline_method
from trainables.models import create_model

VT = baseline_method()  # vanilla training: what every ratio is taken against


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_set(n: int, size: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % 2)


def engine_hparams(batch_size: int, epochs: int, seed: int = 0) -> HParams:
    return HParams(method=VT, amp=True, channels_last=True, batch_size=batch_size, epochs=epochs, seed=seed)


def engine_ips(name: str, data: ImageSet, batch_size: int, device: torch.device) -> float:
    """Images/s of the engine's second epoch (the first warms up)."""
    marks: list[float] = []

    def on_epoch(epoch: int, metrics: dict, state) -> None:
        sync(device)
        marks.append(time.perf_counter())

    train_student(create_model(name), [], data, None, engine_hparams(batch_size, 2), device=device,
                  on_epoch=on_epoch)
    return len(data) / (marks[1] - marks[0])


def bare_ips(name: str, data: ImageSet, batch_size: int, device: torch.device, warmup: int, steps: int) -> float:
    """Images/s of a plain timm loop with the engine's settings, no per-step sync."""
    import timm

    configure_device(device)  # cudnn.benchmark and TF32, as the engine sets them
    set_seed(0)
    hp = engine_hparams(batch_size, 1)
    fmt = memory_format(device, hp)  # channels_last on CUDA
    model = timm.create_model(name, pretrained=False, num_classes=2).to(device).to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
    use_amp = device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    n = len(data)

    def step() -> None:
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        x = to_input(data.images[idx], device, fmt)
        y = data.labels[idx].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch_size / (time.perf_counter() - t0)


# --- several trials sharing one device ---------------------------------------------------------
def share_worker(rank: int, cfg: dict, barrier, queue) -> None:
    """Run cfg["trials"] VT trials one after another, after a warm-up and a common start;
    put (rank, (start, end), None) or (rank, None, error) on `queue`."""
    try:
        torch.set_num_threads(cfg["threads"])
        device = torch.device(cfg["device"])
        train = random_set(cfg["images"], cfg["size"], seed=100 + rank)
        val = random_set(cfg["val"], cfg["size"], seed=200 + rank)
        hp = engine_hparams(cfg["batch_size"], cfg["epochs"])
        warm = ImageSet(train.images[: 2 * cfg["batch_size"]], train.labels[: 2 * cfg["batch_size"]])
        train_student(create_model(cfg["model"]), [], warm, val, hp.replace(epochs=1), device=device)
        sync(device)
        barrier.wait()
        t0 = time.monotonic()
        for i in range(cfg["trials"]):
            train_student(create_model(cfg["model"]), [], train, val, hp.replace(seed=i), device=device)
        sync(device)
        queue.put((rank, (t0, time.monotonic()), None))
    except BaseException as exc:  # tell the parent (and free the others from the barrier)
        barrier.abort()
        queue.put((rank, None, f"{exc.__class__.__name__}: {exc}"))


def trials_per_hour(procs: int, total: int, cfg: dict, timeout: float) -> float:
    """`total` trials over `procs` processes started together: trials per hour of wall time."""
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    cfg = {**cfg, "trials": total // procs}
    workers = [ctx.Process(target=share_worker, args=(r, cfg, barrier, results)) for r in range(procs)]
    for w in workers:
        w.start()
    spans, errors, deadline = [], [], time.monotonic() + timeout
    try:
        while len(spans) + len(errors) < procs:
            try:
                _, span, error = results.get(timeout=5)
            except queue.Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead:  # killed without a word (e.g. out of memory)
                    raise RuntimeError(f"a sharing worker died with exit code {dead[0]}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sharing workers still running after {timeout:.0f} s (--timeout)") from None
                continue
            (errors.append(error) if error else spans.append(span))
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.terminate()
    real = [e for e in errors if not e.startswith("BrokenBarrierError")] or errors
    if real:
        raise RuntimeError(f"a sharing worker failed: {real[0]}")
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return total / wall * 3600


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cuda:N or cpu")
    ap.add_argument("--size", type=int, default=299, help="image size (px)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--models", nargs="+", default=["legacy_xception", "efficientnet_b0", "mobilenetv3_large_100"])
    ap.add_argument("--steps", type=int, default=20, help="timed steps (and the engine's warm-up epoch)")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up steps of the bare loop")
    ap.add_argument("--share-model", default="mobilenetv3_large_100", help="the small student of part 2")
    ap.add_argument("--share-size", type=int, default=None, help="its image size (default --size)")
    ap.add_argument("--share-procs", type=int, default=4, help="trials training at once on the device")
    ap.add_argument("--share-trials", type=int, default=8, help="trials in all (a multiple of --share-procs)")
    ap.add_argument("--share-images", type=int, default=1000, help="training images of a trial")
    ap.add_argument("--share-val", type=int, default=256, help="validation images of a trial")
    ap.add_argument("--share-epochs", type=int, default=2)
    ap.add_argument("--share-batch-size", type=int, default=24)
    ap.add_argument("--share-threads", type=int, default=1,
                    help="torch threads of each trial, alone or shared (Ray gives a 1-CPU trial one)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads of part 1 (0: torch's default)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the sharing workers")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (pair with --device cpu off a GPU)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.batch_size, args.models, args.steps, args.warmup = 32, 8, ["test_resnet"], 2, 1
        args.share_model, args.share_procs, args.share_trials = "test_resnet", 2, 2
        args.share_images, args.share_val, args.share_epochs, args.share_batch_size = 16, 16, 1, 8
        args.threads = args.threads or 1  # tiny ops: a second thread only waits (worse on a busy machine)
    if (args.device == "auto" or args.device.startswith("cuda")) and not torch.cuda.is_available():
        print("CUDA is not available: nothing measured (pass --device cpu to run the same code on the CPU)")
        print("RESULT cuda=0")
        return
    device = torch.device("cuda" if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.share_trials % args.share_procs:
        raise SystemExit(f"--share-trials {args.share_trials} must be a multiple of --share-procs {args.share_procs}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; {args.size} px, batch {args.batch_size}")

    out = [f"cuda={int(device.type == 'cuda')}"]
    data = random_set(args.batch_size * args.steps, args.size, seed=0)
    for model in args.models:
        eng = engine_ips(model, data, args.batch_size, device)
        bare = bare_ips(model, data, args.batch_size, device, args.warmup, args.steps)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"{model:<24} engine {eng:8.1f} images/s   bare timm loop {bare:8.1f} images/s   "
              f"ratio {eng / bare:.3f}", flush=True)
        out += [f"engine_ips_{model}={eng:.1f}", f"bare_ips_{model}={bare:.1f}", f"ratio_{model}={eng / bare:.3f}"]

    cfg = {"device": str(device), "model": args.share_model, "size": args.share_size or args.size,
           "images": args.share_images, "val": args.share_val, "epochs": args.share_epochs,
           "batch_size": args.share_batch_size, "threads": args.share_threads}
    print(f"\nsharing: {args.share_trials} VT trials of {args.share_model} at {cfg['size']} px "
          f"({args.share_images} images, {args.share_epochs} epochs, {args.share_val} validation images)", flush=True)
    one = trials_per_hour(1, args.share_trials, cfg, args.timeout)
    print(f"  one at a time:             {one:8.0f} trials/hour", flush=True)
    shared = trials_per_hour(args.share_procs, args.share_trials, cfg, args.timeout)
    print(f"  {args.share_procs} processes on one device: {shared:8.0f} trials/hour ({shared / one:.2f}x)")
    out += [f"trials_per_hour_1={one:.1f}", f"trials_per_hour_{args.share_procs}={shared:.1f}",
            f"share_speedup={shared / one:.3f}"]
    print("RESULT " + " ".join(out))


if __name__ == "__main__":
    main()
