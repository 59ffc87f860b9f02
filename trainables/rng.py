"""Every RNG a trial draws from, seeded at its start and saved in its resumable state, so a
run resumed from an epoch checkpoint draws what an undisturbed run would have drawn."""
from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # the CPU and every CUDA device


def rng_state(device: torch.device) -> dict:
    """The process-wide RNG states a trial draws from, as values a `torch.load(...,
    weights_only=True)` accepts (tensors, ints, floats, strings, None, lists, dicts):
    torch's CPU RNG, numpy's and python's global RNGs, and, on a CUDA run, every CUDA
    device's RNG (CKD draws its negatives on the run's device)."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state = {
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python_rng": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next},
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state_all()  # one ByteTensor per device
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what `rng_state` saved; a key that is absent (an older checkpoint) is left
    as it is, and the CUDA states are restored only on a CUDA run."""
    if state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"])
    if state.get("numpy_rng") is not None:
        s = state["numpy_rng"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), int(s["pos"]),
                             int(s["has_gauss"]), float(s["cached_gaussian"])))
    if state.get("python_rng") is not None:
        s = state["python_rng"]
        random.setstate((int(s["version"]), tuple(int(v) for v in s["internal"].tolist()), s["gauss_next"]))
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        for i, s in enumerate(state["cuda_rng"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
