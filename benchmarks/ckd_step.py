"""What share of a student's training step do the CKD loss and its memory bank take?

    python benchmarks/ckd_step.py [--model mobilenetv3_large_100] [--size 128] [--batch-size 24]
        [--ks 32 128] [--num-data 1000] [--teacher-dim 2048] [--steps 20] [--warmup 3]
        [--device cpu|cuda]
    python benchmarks/ckd_step.py --smoke        # tiny sizes, seconds

One student training step as the engine runs it (random uint8 images, flip, `to_input`,
the teacher's outputs looked up in a `TeacherCache` of random features, M = --num-data
training images) is cut into timed parts: student forward; the loss
(`build_loss(HParams.from_dict({"method": "ckd", "k": K}), ...)`: cache lookup, projection heads, negative
sampling, NCE scores, memory-bank update, and its backward down to the student's
features and logits); the student's backward from there; the optimiser step of the
student's parameters; the optimiser step of the loss's own parameters (the projection
heads g^T, g^S). The CKD fraction of a step is (loss + loss optimiser) / whole step,
the median over --steps steps after --warmup. It includes the cross-entropy that VT also
pays, shown separately from a VT run of the same steps. As a cross-check, plain
(uncut) steps of VT and CKD are timed too: 1 - VT / CKD is the same fraction measured
as a difference, noisier on a shared machine.
Target: <= 5 %. Ends with `RESULT ckd_fraction_k32=… ckd_fraction_k128=…`
(one key per --ks value).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from trainables.engine import (
    TeacherCache, batches, configure_device, flip_batch, memory_format, pick_device, set_seed, to_input,
)
from trainables.hparams import HParams
from trainables.losses import LossContext, Outputs, baseline_method, build_loss
from trainables.models import create_model

VT = baseline_method()  # vanilla training: what every ratio is taken against

PARTS = ("forward", "loss", "backward", "opt_student", "opt_loss")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall time of consecutive parts of one step, synchronising the device between parts."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: dict[str, float] = {}
        sync(device)
        self._t = time.perf_counter()

    def lap(self, part: str) -> None:
        sync(self.device)
        now = time.perf_counter()
        self.times[part] = now - self._t
        self._t = now


class Bench:
    """A student, its loss and optimisers on random data: one step at a time, cut or plain."""

    def __init__(self, args, hp: HParams, device: torch.device):
        self.hp, self.device = hp, device
        self.fmt = memory_format(device, hp)
        set_seed(hp.seed)
        m = args.num_data
        self.images = torch.randint(0, 256, (m, 3, args.size, args.size), dtype=torch.uint8)
        self.labels = (torch.arange(m) % 2).long()  # balanced real/fake
        self.labels_dev = self.labels.to(device)
        self.model = create_model(args.model).to(device).to(memory_format=self.fmt).train()
        self.cache = TeacherCache(  # what the engine looks up for a frozen teacher
            torch.randn(2, m, 2, device=device),
            F.normalize(torch.randn(2, m, args.teacher_dim, device=device), dim=-1) * 10)
        dims = (args.teacher_dim,) if hp.method != VT else ()
        self.loss_fn = build_loss(hp, LossContext(student_dim=self.model.feature_dim, teacher_dims=dims,
                                                  train_labels=self.labels)).to(device)
        # two AdamW instances = one over both parameter lists (AdamW is per parameter),
        # so that the heads' share of the optimiser step can be timed apart
        self.opt_student = torch.optim.AdamW(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        loss_params = list(self.loss_fn.parameters())
        self.opt_loss = torch.optim.AdamW(loss_params, lr=hp.lr, weight_decay=hp.weight_decay) if loss_params else None
        self.gen = torch.Generator().manual_seed(hp.seed)
        self.index = batches(m, hp.batch_size, 10**9, self.gen)

    def _batch(self):
        idx = next(self.index)
        flips = torch.rand(len(idx), generator=self.gen) < 0.5
        x = to_input(flip_batch(self.images[idx], flips), self.device, self.fmt)
        return x, idx.to(self.device), flips.to(self.device)

    def _teachers(self, idx, flips) -> list[Outputs]:
        return [self.cache.lookup(idx, flips)] if self.loss_fn.needs_teachers else []

    def _autocast(self):
        if self.device.type == "cuda" and self.hp.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def _zero(self) -> None:
        self.opt_student.zero_grad(set_to_none=True)
        if self.opt_loss is not None:
            self.opt_loss.zero_grad(set_to_none=True)

    def cut_step(self) -> dict[str, float]:
        """One step, timed part by part: the loss's graph is cut from the model's at z and logits."""
        x, idx, flips = self._batch()
        clock = Clock(self.device)
        with self._autocast():
            z, logits = self.model(x)
        zf, lf = z.float(), logits.float()
        clock.lap("forward")
        zd, ld = zf.detach().requires_grad_(), lf.detach().requires_grad_()
        loss, _ = self.loss_fn(Outputs(logits=ld, features=zd), self._teachers(idx, flips),
                               self.labels_dev[idx], idx)
        loss.backward()
        clock.lap("loss")
        pairs = [(t, d.grad) for t, d in ((zf, zd), (lf, ld)) if d.grad is not None]  # VT: no grad on z
        torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
        clock.lap("backward")
        self.opt_student.step()
        clock.lap("opt_student")
        if self.opt_loss is not None:
            self.opt_loss.step()
        clock.lap("opt_loss")
        self._zero()
        return clock.times

    def plain_step(self) -> float:
        """One step as the engine does it (one graph), timed as a whole."""
        x, idx, flips = self._batch()
        sync(self.device)
        t0 = time.perf_counter()
        with self._autocast():
            z, logits = self.model(x)
        loss, _ = self.loss_fn(Outputs(logits=logits.float(), features=z.float()), self._teachers(idx, flips),
                               self.labels_dev[idx], idx)
        loss.backward()
        self.opt_student.step()
        if self.opt_loss is not None:
            self.opt_loss.step()
        self._zero()
        loss.item()  # the engine logs the loss every step: the same sync
        sync(self.device)
        return time.perf_counter() - t0


def measure(step: Callable, warmup: int, steps: int) -> list:
    for _ in range(warmup):
        step()
    return [step() for _ in range(steps)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenetv3_large_100")
    ap.add_argument("--size", type=int, default=128, help="image size (px)")
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--ks", type=int, nargs="+", default=[32, 128], help="numbers of negatives K")
    ap.add_argument("--num-data", type=int, default=1000, help="M, training images (memory-bank rows)")
    ap.add_argument("--teacher-dim", type=int, default=2048, help="teacher feature width (Xception: 2048)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps; the median counts")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.batch_size, args.num_data, args.steps, args.warmup = 32, 8, 64, 3, 1
        args.threads = args.threads or 1  # tiny ops: a second thread only waits (worse on a busy machine)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    configure_device(device)
    print(f"{args.model} at {args.size} px, batch {args.batch_size}, M={args.num_data}, teacher dim "
          f"{args.teacher_dim}, {device.type}, {torch.get_num_threads()} threads; median of {args.steps} "
          f"steps after {args.warmup} warm-up")

    configs = [(VT, HParams(method=VT, batch_size=args.batch_size))]
    configs += [(f"ckd_k{k}", HParams.from_dict(dict(method="ckd", k=k, batch_size=args.batch_size))) for k in args.ks]
    cut, plain = {}, {}
    for name, hp in configs:
        bench = Bench(args, hp, device)
        cut[name] = measure(bench.cut_step, args.warmup, args.steps)
        plain[name] = statistics.median(measure(bench.plain_step, args.warmup, args.steps))

    header = "".join(f"{p:>12}" for p in PARTS)
    print(f"\nmedian ms per part{'':<3}{header}{'step':>10}{'loss share':>12}{'plain step':>12}")
    results = {}
    for name, _ in configs:
        steps = cut[name]
        med = {p: 1e3 * statistics.median(s[p] for s in steps) for p in PARTS}
        total = statistics.median(1e3 * sum(s.values()) for s in steps)
        share = statistics.median((s["loss"] + s["opt_loss"]) / sum(s.values()) for s in steps)
        results[name] = share
        print(f"{name:<21}" + "".join(f"{med[p]:>12.2f}" for p in PARTS)
              + f"{total:>10.1f}{100 * share:>11.2f}%{1e3 * plain[name]:>12.1f}")
    print(f"\nVT's loss (cross-entropy only) is {100 * results['vt']:.2f}% of its step; the CKD shares "
          "above include it.")
    out = []
    for k in args.ks:
        name = f"ckd_k{k}"
        delta = 1.0 - plain[VT] / plain[name]
        verdict = "meets" if results[name] <= 0.05 else "MISSES"
        print(f"K={k}: CKD loss + memory bank = {100 * results[name]:.2f}% of a step ({verdict} the 5% target); "
              f"plain steps: VT {1e3 * plain['vt']:.1f} ms, CKD {1e3 * plain[name]:.1f} ms -> "
              f"{100 * delta:+.1f}% by difference")
        out.append(f"ckd_fraction_k{k}={results[name]:.4f}")
    print("RESULT " + " ".join(out))


if __name__ == "__main__":
    main()
