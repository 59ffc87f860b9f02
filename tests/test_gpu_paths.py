"""The CUDA-only speed paths (bf16 autocast, channels_last, cudnn.benchmark, pinned memory,
GPU fractions per trial) exist and fall back to plain CPU behaviour here."""
import contextlib
from types import SimpleNamespace

import pytest
import torch

from study.config import Resources, parse_config
from trainables.errors import ConfigError
from study.runner import trial_resources
from trainables import engine
from trainables.data.stream import FileSet
from trainables.engine import autocast, configure_device, memory_format, pick_device, to_input
from trainables.hparams import HParams

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_autocast_is_bf16_on_cuda_only():
    assert isinstance(autocast(CPU, HParams(amp=True)), contextlib.nullcontext)
    assert isinstance(autocast(CUDA, HParams(amp=False)), contextlib.nullcontext)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext():
        ctx = autocast(CUDA, HParams(amp=True))  # built here without CUDA (it disables itself)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16 and ctx.device == "cuda"


def test_channels_last_on_cuda_only():
    assert memory_format(CPU, HParams(channels_last=True)) == torch.contiguous_format
    assert memory_format(CUDA, HParams(channels_last=True)) == torch.channels_last
    assert memory_format(CUDA, HParams(channels_last=False)) == torch.contiguous_format
    x = to_input(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), CPU, memory_format(CPU, HParams()))
    assert x.is_contiguous()


NEW_TF32_API = hasattr(torch.backends, "fp32_precision")  # torch >= 2.9; mixing the two raises


def backend_flags() -> dict:
    """The global flags `configure_device` may touch, by value (on current torch the TF32
    ones are served by `__getattr__`: monkeypatch cannot restore them)."""
    if NEW_TF32_API:
        return {"benchmark": torch.backends.cudnn.benchmark,
                "matmul": torch.backends.cuda.matmul.fp32_precision,
                "conv": torch.backends.cudnn.conv.fp32_precision}
    return {"benchmark": torch.backends.cudnn.benchmark,
            "matmul": torch.backends.cuda.matmul.allow_tf32, "conv": torch.backends.cudnn.allow_tf32}


def restore_backend_flags(flags: dict) -> None:
    torch.backends.cudnn.benchmark = flags["benchmark"]
    if NEW_TF32_API:
        torch.backends.cuda.matmul.fp32_precision = flags["matmul"]
        torch.backends.cudnn.conv.fp32_precision = flags["conv"]
    else:
        torch.backends.cuda.matmul.allow_tf32 = flags["matmul"]
        torch.backends.cudnn.allow_tf32 = flags["conv"]


@pytest.fixture
def saved_backend_flags():
    saved = backend_flags()
    try:
        yield saved
    finally:
        restore_backend_flags(saved)
    assert backend_flags() == saved


def test_cudnn_and_tf32_flags_are_left_alone_on_cpu(saved_backend_flags):
    restore_backend_flags({"benchmark": False, **({"matmul": "ieee", "conv": "ieee"} if NEW_TF32_API
                                                  else {"matmul": False, "conv": False})})
    before = backend_flags()
    configure_device(CPU)
    assert backend_flags() == before
    configure_device(CUDA)  # only flags: safe without a GPU
    after = backend_flags()
    assert after["benchmark"] is True
    assert (after["matmul"], after["conv"]) == (("tf32", "tf32") if NEW_TF32_API else (True, True))


def test_older_torch_gets_the_allow_tf32_flags():
    """torch < 2.9 has no `fp32_precision`: a stand-in for its `torch.backends`."""
    old = SimpleNamespace(cudnn=SimpleNamespace(benchmark=False, allow_tf32=False),
                          cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=False)))
    configure_device(CPU, backends=old)
    assert (old.cudnn.benchmark, old.cudnn.allow_tf32, old.cuda.matmul.allow_tf32) == (False, False, False)
    configure_device(CUDA, backends=old)
    assert (old.cudnn.benchmark, old.cudnn.allow_tf32, old.cuda.matmul.allow_tf32) == (True, True, True)


def test_auto_device_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == CUDA
    assert pick_device("cpu") == CPU


def test_streamed_batches_are_pinned_for_cuda_only(monkeypatch):
    seen = []

    class Recorder:
        def __init__(self, data, pin_memory=False):
            seen.append(pin_memory)

        def batches(self, order):
            return iter(())

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(engine, "BatchStream", Recorder)
    data = FileSet(["a.png"], torch.tensor([0]), 8, workers=0)
    list(engine.image_batches(data, [torch.tensor([0])], CPU))
    list(engine.image_batches(data, [torch.tensor([0])], CUDA))
    assert seen == [False, True]


def test_gpu_fractions_reach_the_trials(tmp_path):
    raw = {
        "name": "g", "data": {"kind": "synthetic", "root": str(tmp_path / "d"), "num_images": 480, "size": 32},
        "students": {"pairs": ["test_resnet"], "methods": ["vt"], "volumes": [10], "seeds": [0]},
        "resources": {"cpu": 2, "gpu": 0.25},
    }
    cfg = parse_config(raw, "g.yaml", tmp_path)
    assert trial_resources(cfg.resources) == {"cpu": 2.0, "gpu": 0.25}  # 4 students share one GPU
    assert trial_resources(Resources()) == {"cpu": 1.0, "gpu": 0.0}


def test_teachers_may_take_their_own_cpus_and_gpus(tmp_path):
    """A teachers' stage runs one long trial per teacher: resources.teacher_cpu / teacher_gpu give
    it a node's cores (or a whole GPU) while students keep sharing them; unset, teachers ask what
    students ask."""
    raw = {
        "name": "g", "data": {"kind": "synthetic", "root": str(tmp_path / "d"), "num_images": 480, "size": 32},
        "students": {"pairs": ["test_resnet"], "methods": ["vt"], "volumes": [10], "seeds": [0]},
        "resources": {"cpu": 1, "gpu": 0.25, "teacher_cpu": 2, "teacher_gpu": 1},
    }
    cfg = parse_config(raw, "g.yaml", tmp_path)
    assert trial_resources(cfg.resources) == {"cpu": 1.0, "gpu": 0.25}
    assert trial_resources(cfg.resources.for_teachers()) == {"cpu": 2.0, "gpu": 1.0}
    raw["resources"] = {"cpu": 3, "gpu": 0.5}
    same = parse_config(raw, "g.yaml", tmp_path).resources
    assert trial_resources(same.for_teachers()) == trial_resources(same) == {"cpu": 3.0, "gpu": 0.5}
    raw["resources"] = {"teacher_gpu": 1.5}
    with pytest.raises(ConfigError, match="resources.teacher_gpu=1.5"):
        parse_config(raw, "g.yaml", tmp_path)
