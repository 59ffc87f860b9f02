"""Feature maps in the trial contract: a method whose options name `map_stages()` gets the
student's and every teacher's stage outputs (timm's `forward_intermediates`, one pass, the
same embedding and logits as the plain forward); its teachers run live (a teacher cache holds
logits and embeddings only); a method that reads no maps never asks for them."""
from __future__ import annotations

import pytest
import torch

from trainables.engine import ImageSet, train_student
from trainables.errors import ConfigError
from trainables.hparams import HParams
from trainables.models import Detector, create_model

TINY = ("test_resnet", "test_efficientnet", "mobilenetv3_small_050")


@pytest.mark.parametrize("arch", TINY)
def test_forward_maps_gives_the_plain_forwards_outputs_and_the_asked_stages(arch):
    torch.manual_seed(0)
    model = create_model(arch).eval()
    x = torch.randn(2, 3, 64, 64)
    z, logits = model(x)
    z2, logits2, maps = model.forward_maps(x, (3, 1, -1))
    assert torch.allclose(z, z2, atol=1e-5) and torch.allclose(logits, logits2, atol=1e-5)
    info = model.backbone.feature_info
    for got, stage in zip(maps, (3, 1, len(info) - 1)):  # in the order asked, -1 the last stage
        assert got.shape[:2] == (2, info[stage]["num_chs"])
        assert got.shape[-1] == 64 // info[stage]["reduction"]
    with pytest.raises(ConfigError, match=rf"stage 5 is not one of {arch}'s 5 stages"):
        model.forward_maps(x, (5,))


def _train(method: str, monkeypatch, **options):
    """One epoch of `method` with a test_resnet student and a test_efficientnet teacher; which
    models ran `forward_maps` (with which stages), and the history."""
    calls = []
    original = Detector.forward_maps

    def spy(self, x, stages):
        calls.append((self.name, tuple(stages)))
        return original(self, x, stages)

    monkeypatch.setattr(Detector, "forward_maps", spy)
    torch.manual_seed(0)
    train = ImageSet(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8) % 2)
    student, teacher = create_model("test_resnet"), create_model("test_efficientnet")
    hp = HParams.from_dict({"method": method, "epochs": 1, "batch_size": 4, **options})
    result = train_student(student, [teacher], train, None, hp, device="cpu")
    return calls, result


@pytest.mark.parametrize("method,options,stages", [
    ("at", {"stages": [1, 3]}, (1, 3)), ("fitnet", {"stage": 2}, (2,)), ("sp", {"reads": "map"}, (-1,)),
])
def test_a_method_that_reads_maps_gets_both_models_maps_and_live_teachers(method, options, stages, monkeypatch):
    calls, result = _train(method, monkeypatch, **options)
    steps = 2  # 8 images, batch 4, one epoch
    probes = {("test_resnet", stages), ("test_efficientnet", stages)}  # the shapes, once each, before training
    assert set(calls) == probes
    assert calls.count(("test_resnet", stages)) == steps + 1  # every step's student forward
    assert calls.count(("test_efficientnet", stages)) == steps + 1  # the teacher, live on every step
    assert result.history[0]["train_distill"] > 0


@pytest.mark.parametrize("method", ["vt", "kd", "ckd", "sp", "crd"])
def test_a_method_that_reads_no_maps_pays_nothing_for_them(method, monkeypatch):
    calls, result = _train(method, monkeypatch)
    assert calls == [] and result.history


def test_a_map_method_refuses_a_teacher_cache():
    from trainables.engine import TeacherCache
    train = ImageSet(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4) % 2)
    teacher = create_model("test_resnet")
    cache = TeacherCache.compute(teacher.eval(), train.images, torch.device("cpu"), HParams(method="kd"))
    hp = HParams.from_dict({"method": "at", "epochs": 1, "batch_size": 4})
    assert not hp.teachers_cached and HParams.from_dict({"method": "kd"}).teachers_cached
    with pytest.raises(ValueError, match="reads feature maps .* which a teacher cache does not hold"):
        train_student(create_model("test_resnet"), [], train, None, hp, device="cpu", teacher_caches=[cache])
