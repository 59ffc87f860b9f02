import math
import random

import numpy as np
import pytest
import torch

from trainables.engine import (
    ImageSet, TeacherCache, TrainingDiverged, batches, evaluate, flip_batch, rng_state, set_rng_state,
    steps_per_epoch, train_student, train_teacher,
)
from trainables.hparams import HParams
from trainables.models import create_model


def toy_set(n: int, size: int = 32, seed: int = 0) -> ImageSet:
    """Fakes carry a bright square: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 120, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 2
    images[labels == 1, :, 8:20, 8:20] = 250
    return ImageSet(images, labels, [f"v{i // 2}" for i in range(n)])


def test_batches_cover_every_image_each_pass():
    g = torch.Generator().manual_seed(0)
    seen = torch.cat(list(batches(10, 4, 5, g)))  # 20 indices = two full passes
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))


def test_steps_per_epoch_respects_min_steps():
    assert steps_per_epoch(100, HParams(batch_size=24, epochs=10)) == 5
    assert steps_per_epoch(10, HParams(batch_size=24, epochs=10)) == 1  # batch clamps to 10
    assert steps_per_epoch(10, HParams(batch_size=10, epochs=10, min_steps=60)) == 6


def test_flip_batch_flips_only_marked_rows():
    x = torch.arange(2 * 1 * 1 * 3, dtype=torch.uint8).view(2, 1, 1, 3)
    out = flip_batch(x, torch.tensor([True, False]))
    assert out[0, 0, 0].tolist() == [2, 1, 0] and out[1, 0, 0].tolist() == [3, 4, 5]


def test_teacher_then_ckd_student_end_to_end():
    train, val = toy_set(64), toy_set(32, seed=1)
    teacher = create_model("test_resnet")
    hp_t = HParams(epochs=4, batch_size=16, lr=3e-3, seed=0)
    train_teacher(teacher, train, val, hp_t)
    t_metrics = evaluate(teacher, val)
    assert t_metrics["acc"] > 0.8, t_metrics

    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    history = []
    student = create_model("test_efficientnet")
    hp = HParams.from_dict(dict(method="ckd", epochs=3, batch_size=8, k=4, lr=3e-3, seed=0))
    subset = ImageSet(train.images[:16], train.labels[:16])
    result = train_student(student, [teacher], subset, val, hp, on_epoch=lambda e, m, s: history.append(m))
    assert len(history) == 3 and all(math.isfinite(m["train_loss"]) for m in history)
    assert "train_distill" in history[0] and "val_auc" in history[0]
    # the teacher is frozen: not a single weight moved
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert result.images_seen == 3 * 16


def test_teacher_cache_holds_flipped_outputs():
    data = toy_set(6)
    teacher = create_model("test_resnet").eval()
    cache = TeacherCache.compute(teacher, data.images, torch.device("cpu"), HParams(flip=True))
    assert cache.logits.shape == (2, 6, 2)
    out = cache.lookup(torch.tensor([3]), torch.tensor([True]))
    from trainables.engine import to_input
    with torch.no_grad():
        _, expected = teacher(to_input(data.images[3:4].flip(-1), torch.device("cpu")))
    assert torch.allclose(out.logits, expected, atol=1e-5)


CPU = torch.device("cpu")


def draws() -> tuple:
    """One value from each global RNG a trial may use (normal draws too: numpy and python
    cache the second value of a Gaussian pair, which is part of their state)."""
    return (torch.rand(3).tolist(), torch.randn(1).item(), np.random.rand(3).tolist(),
            np.random.randn(), random.random(), random.gauss(0.0, 1.0))


def test_rng_state_round_trip_on_cpu():
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    np.random.randn(), random.gauss(0.0, 1.0)  # leave a cached Gaussian in both states
    state = rng_state(CPU)
    first = draws()
    assert draws() != first  # the streams moved on
    set_rng_state(state, CPU)
    assert draws() == first


def test_rng_state_survives_a_weights_only_load(tmp_path):
    torch.manual_seed(6), np.random.seed(6), random.seed(6)
    np.random.randn(), random.gauss(0.0, 1.0)
    torch.save(rng_state(CPU), tmp_path / "state.pt")
    first = draws()
    loaded = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    assert set(loaded) == {"torch_rng", "numpy_rng", "python_rng"}
    set_rng_state(loaded, CPU)
    assert draws() == first


def test_rng_state_holds_cuda_states_only_on_cuda():
    assert "cuda_rng" not in rng_state(CPU)
    assert "cuda_rng" not in rng_state(torch.device("cpu", 0))
    # a CUDA state in a checkpoint is ignored on a CPU run (never touches torch.cuda)
    state = {**rng_state(CPU), "cuda_rng": [torch.zeros(16, dtype=torch.uint8)]}
    first = draws()
    set_rng_state(state, CPU)
    assert draws() == first


def test_set_rng_state_accepts_an_older_checkpoint():
    """Checkpoints written before numpy's and python's states were saved hold only torch_rng."""
    torch.manual_seed(7)
    old = {"torch_rng": torch.get_rng_state()}
    first = torch.rand(4)
    set_rng_state(old, CPU)
    assert torch.equal(torch.rand(4), first)
    set_rng_state({}, CPU)  # nothing to restore: no error


def test_resume_gives_the_same_model_as_an_undisturbed_run(tmp_path):
    train = toy_set(24)
    hp = HParams.from_dict(dict(method="ckd", epochs=3, batch_size=8, k=4, lr=3e-3, seed=3))
    torch.manual_seed(0)
    teacher = create_model("test_resnet").eval()
    torch.manual_seed(1)
    undisturbed = create_model("test_resnet")
    saved = {}

    def grab(epoch, metrics, state):
        if epoch == 0:
            saved.update(state())
    train_student(undisturbed, [teacher], train, None, hp, on_epoch=grab)
    assert {"generator", "torch_rng", "numpy_rng", "python_rng"} <= set(saved) and "cuda_rng" not in saved
    # through the disk as trainables/tune.py does: every value must pass a weights_only load
    torch.save(saved, tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)

    resumed = create_model("test_resnet")  # other initial weights: the state must replace them
    torch.manual_seed(123)  # and another process RNG state must not matter either
    result = train_student(resumed, [teacher], train, None, hp, resume=saved)
    for k, v in undisturbed.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    # the curve is whole after a resume (the convergence diagnostic reads all of it)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.history[0] == saved["history"][0]


def test_diverging_loss_raises_with_the_reason():
    train = toy_set(8)
    model = create_model("test_resnet")
    with pytest.raises(TrainingDiverged, match="loss is"):
        train_student(model, [], train, None, HParams(epochs=2, batch_size=4, lr=1e12, optimizer="sgd"))


def test_scoring_batches_hold_a_bounded_number_of_pixels_on_the_cpu():
    from trainables.engine import eval_batch_size

    cpu = torch.device("cpu")
    assert eval_batch_size(cpu, 64) == 128 and eval_batch_size(cpu, 32) == 128
    assert eval_batch_size(cpu, 299) == 8 and eval_batch_size(cpu, 128) == 32
    assert eval_batch_size(torch.device("cuda"), 299) == 128  # device memory, not the host's
