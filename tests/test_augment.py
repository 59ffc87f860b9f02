"""Consistent teaching: each augmentation alone, its options, and in a step the one view the
student and the teachers share, the teacher cache used exactly when flips are all there is,
mixup's targets by hand, and a resumed augmented run."""
import math

import pytest
import torch
import torch.nn.functional as F

from trainables import augment
from trainables.engine import ImageSet, TeacherCache, _plan_epoch, batches, to_input, train_student
from trainables.errors import ConfigError
from trainables.hparams import HParams
from trainables.losses import LossContext, Mix, Outputs, build_loss
from trainables.losses.kd import kd_loss
from trainables.models import create_model

CPU = torch.device("cpu")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def toy_set(n: int = 16, size: int = 32, seed: int = 0) -> ImageSet:
    images = torch.randint(0, 255, (n, 3, size, size), generator=gen(seed), dtype=torch.uint8)
    return ImageSet(images, torch.arange(n) % 2)


def float_batch(b: int = 6, size: int = 16) -> torch.Tensor:
    return torch.randint(0, 255, (b, 3, size, size), generator=gen(9)).float()  # (B, 3, S, S) on [0, 255]


# --- each augmentation alone ---------------------------------------------------------------

def test_flips_draw_as_before_and_flip_only_marked_rows():
    """The flip draws of a run are those of earlier code (rand < 0.5 per image, after each index
    batch): old results reproduce."""
    plan = _plan_epoch(10, HParams(batch_size=4), 3, gen(3))
    g = gen(3)
    before = [(idx, torch.rand(len(idx), generator=g) < 0.5) for idx in batches(10, 4, 3, g)]
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(plan, before))
    x = torch.arange(2 * 3, dtype=torch.uint8).view(2, 1, 1, 3)
    out = augment.flip_batch(x, torch.tensor([True, False]))
    assert out.dtype == torch.uint8 and out[0, 0, 0].tolist() == [2, 1, 0] and out[1, 0, 0].tolist() == [3, 4, 5]
    assert torch.equal(augment.draw_flips(50, gen(1)), augment.draw_flips(50, gen(1)))


def test_crop_keeps_the_size_and_zooms_within_the_scale_range(monkeypatch):
    x = float_batch()
    out = augment.random_resized_crop(x, 0.5, gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, augment.random_resized_crop(x, 0.5, gen(1)))  # a generator decides
    assert not torch.allclose(out, augment.random_resized_crop(x, 0.5, gen(2)))
    assert out.min() >= x.min() and out.max() <= x.max()  # bilinear: no value outside the image's
    monkeypatch.setattr(augment, "CROP_RATIO", (1.0, 1.0))  # square crops: width = sqrt(area)
    assert torch.allclose(augment.random_resized_crop(x, 1.0, gen(1)), x, atol=1e-3)  # the whole image
    ramp = torch.arange(64.0).view(1, 1, 1, 64).expand(200, 3, 64, 64)  # value = column
    zoomed = augment.random_resized_crop(ramp, 0.25, gen(4))
    slope = zoomed[:, 0, 32, 1:-1].diff(dim=-1).mean(-1)  # (B,) the crop's width, a share of the image
    assert slope.min() >= 0.5 - 1e-4 and slope.max() <= 1.0 + 1e-4  # sqrt of area share in [0.25, 1]
    assert slope.min() < 0.6 and slope.max() > 0.9  # and the range is used
    assert zoomed.std(dim=(1, 2, 3)).std() > 0  # each image its own crop


def test_color_jitter_scales_brightness_within_its_strength():
    x = float_batch()
    out = augment.color_jitter(x, 0.4, gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype and out.min() >= 0 and out.max() <= 255
    assert torch.equal(out, augment.color_jitter(x, 0.4, gen(1)))
    assert torch.allclose(augment.color_jitter(x, 0.0, gen(1)), x, atol=1e-3)  # strength 0: unchanged
    gray = torch.full((300, 3, 4, 4), 100.0)  # contrast and saturation leave a flat gray image alone
    factor = augment.color_jitter(gray, 0.4, gen(2))[:, 0, 0, 0] / 100.0  # (B,) brightness factors
    assert factor.min() >= 0.6 - 1e-5 and factor.max() <= 1.4 + 1e-5
    assert factor.min() < 0.65 and factor.max() > 1.35
    saturated = augment.color_jitter(x, 0.4, gen(3))
    assert not torch.allclose(saturated[:, 0], saturated[:, 1])  # colour survives


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_draws_are_reproducible_and_beta_distributed(alpha):
    g = gen(5)
    lams = torch.tensor([augment.beta(alpha, g) for _ in range(4000)], dtype=torch.float64)
    again = gen(5)
    assert [augment.beta(alpha, again) for _ in range(3)] == lams[:3].tolist()
    assert lams.min() >= 0 and lams.max() <= 1
    assert lams.mean().item() == pytest.approx(0.5, abs=0.02)
    assert lams.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.1)  # Beta(a, a)'s variance


def test_mixup_blends_each_row_with_its_partner():
    x = float_batch()
    out, mix = augment.mixup(x, 1.0, gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert sorted(mix.partner.tolist()) == list(range(len(x))) and 0 <= mix.lam <= 1
    assert torch.allclose(out, mix.lam * x + (1 - mix.lam) * x[mix.partner])
    again, mix2 = augment.mixup(x, 1.0, gen(1))
    assert torch.equal(out, again) and mix2.lam == mix.lam and torch.equal(mix2.partner, mix.partner)
    assert augment.mixup(x, 1.0, gen(2))[1].lam != mix.lam


def test_cutmix_pastes_a_box_whose_area_is_one_minus_lam():
    x = float_batch(b=8, size=32)
    for seed in range(5):
        out, mix = augment.cutmix(x, 1.0, gen(seed))
        assert out.shape == x.shape and out.dtype == x.dtype
        moved = mix.partner != torch.arange(len(x))
        own = (out == x).all(1)  # (B, S, S) pixels of the row's own image
        theirs = (out == x[mix.partner]).all(1)
        assert bool((own | theirs).all())  # every pixel from one of the two
        kept = own[moved].float().mean(dim=(1, 2))  # rows with another partner: distinct images
        assert torch.allclose(kept, torch.full_like(kept, mix.lam))
        again, mix2 = augment.cutmix(x, 1.0, gen(seed))
        assert torch.equal(out, again) and mix2.lam == mix.lam


def test_views_apply_what_augment_lists_and_only_that():
    images = toy_set(6).images
    flips = torch.tensor([True, False] * 3)
    flipped = augment.flip_batch(images, flips).float()
    hp = HParams.from_dict({"augment": ["flip"]})
    x, mix = augment.views(images, flips, hp, gen(1))
    assert mix is None and torch.equal(x, flipped)
    for names in (["flip", "crop"], ["color"], ["mixup"], ["cutmix"], ["crop", "color", "mixup", "cutmix"]):
        hp = HParams.from_dict({"augment": names})
        x, mix = augment.views(images, flips, hp, gen(1))
        assert x.shape == images.shape and x.dtype == torch.float32
        assert (mix is not None) == bool({"mixup", "cutmix"} & set(names)), names
        assert not torch.equal(x, flipped), names
        assert torch.equal(x, augment.views(images, flips, hp, gen(1))[0]), names


# --- the options ----------------------------------------------------------------------------

@pytest.mark.parametrize("config,match", [
    ({"augment": ["flip", "blur"]}, r"augment=\['flip', 'blur'\] has unknown augmentation\(s\) \['blur'\]; "
                                    r"allowed: \['flip', 'crop', 'color', 'mixup', 'cutmix'\]"),
    ({"augment": "flip,blur"}, r"augment=.*unknown augmentation\(s\) \['blur'\]"),
    ({"augment": 3}, "augment=3 is not a valid list of names"),
    ({"augment": [1]}, "augment=.* is not a valid list of names"),
    ({"crop_scale": 0.0}, r"crop_scale=0.0 must be in \(0, 1\]"),
    ({"crop_scale": 1.5}, r"crop_scale=1.5 must be in \(0, 1\]"),
    ({"color_strength": 1.0}, r"color_strength=1.0 must be in \[0, 1\)"),
    ({"color_strength": -0.1}, r"color_strength=-0.1 must be in \[0, 1\)"),
    ({"mixup_alpha": 0}, "mixup_alpha=0.0 must be > 0"),
    ({"cutmix_alpha": -1}, "cutmix_alpha=-1.0 must be > 0"),
])
def test_bad_augmentation_options_name_the_key(config, match):
    with pytest.raises(ConfigError, match=match):
        HParams.from_dict(config, where="test")


def test_augment_reads_back_from_yaml_mlflow_and_the_command_line():
    hp = HParams.from_dict({"method": "kd", "augment": ["mixup", "flip", "crop", "crop"], "crop_scale": 0.3})
    assert hp.augment == ("flip", "crop", "mixup")  # one spelling: the order they apply in
    logged = {k: str(v) for k, v in hp.to_dict().items()}  # what MLflow keeps (study/tracking.py)
    assert logged["augment"] == "('flip', 'crop', 'mixup')"
    assert HParams.from_dict(logged) == hp
    assert HParams.from_dict({**hp.to_dict(), "augment": list(hp.augment)}) == hp  # a trial's YAML / JSON
    assert HParams.from_dict({"augment": "flip, crop"}).augment == ("flip", "crop")
    assert HParams.from_dict({"augment": "()"}).augment == HParams.from_dict({"augment": []}).augment == ()
    assert HParams().augment == ("flip",) and HParams().teacher_cacheable


def test_flip_false_removes_flip_from_what_is_applied():
    assert HParams(flip=False).augmentations == () and not HParams(flip=False).flipping
    hp = HParams.from_dict({"flip": False, "augment": ["flip", "crop"]})
    assert hp.augmentations == ("crop",) and not hp.teacher_cacheable
    assert HParams.from_dict({"augment": ["crop"]}).flipping is False  # not listed: not applied
    assert all(not flips.any() for _, flips in _plan_epoch(8, HParams(flip=False, batch_size=4), 2, gen()))
    assert HParams.from_dict({"augment": []}).teacher_cacheable  # nothing to draw: one cached state


# --- in a step -------------------------------------------------------------------------------

class Recorder:
    """Forward pre-hooks: the inputs each model got, in call order."""

    def __init__(self, *models: torch.nn.Module):
        self.calls: list[list[torch.Tensor]] = [[] for _ in models]
        for calls, model in zip(self.calls, models):
            model.register_forward_pre_hook(lambda m, args, calls=calls: calls.append(args[0].detach().clone()))


def test_teacher_and_student_see_the_identical_augmented_tensor_every_step():
    data = toy_set(16)
    torch.manual_seed(0)
    teacher, student = create_model("test_resnet").eval(), create_model("test_efficientnet")
    seen = Recorder(student, teacher)
    hp = HParams.from_dict(dict(method="kd", epochs=2, batch_size=6, seed=1, augment=["flip", "crop", "mixup"]))
    train_student(student, [teacher], data, None, hp, device=CPU)
    students, teachers = seen.calls
    assert len(students) == len(teachers) == 2 * 3  # every step, once each
    for s, t in zip(students, teachers):
        assert torch.equal(s, t)
    plain = to_input(data.images[:6], CPU)  # and they are augmented views, not the stored images
    assert not any(torch.allclose(s, plain[: len(s)]) for s in students)


def test_vt_trains_on_the_same_views_as_a_distilled_student():
    data = toy_set(16)
    inputs = {}
    for method in ("vt", "kd"):
        torch.manual_seed(0)
        teacher, student = create_model("test_resnet").eval(), create_model("test_efficientnet")
        seen = Recorder(student)
        hp = HParams.from_dict(dict(method=method, epochs=2, batch_size=6, seed=1,
                                    augment=["flip", "crop", "color", "cutmix"]))
        train_student(student, [teacher] if method == "kd" else [], data, None, hp, device=CPU)
        inputs[method] = seen.calls[0]
    assert len(inputs["vt"]) == len(inputs["kd"]) == 6
    assert all(torch.equal(a, b) for a, b in zip(inputs["vt"], inputs["kd"]))


def test_mixup_distils_on_the_mixed_image_and_mixes_the_labels(monkeypatch):
    """One step (batch = the whole set): the KD term against the teacher's output on the mixed
    image, the CE term lam * CE(y_a) + (1 - lam) * CE(y_b), each computed here by hand."""
    data = toy_set(8)
    mixes = []
    real_mixup = augment.mixup

    def spy(x, alpha, g):
        out, mix = real_mixup(x, alpha, g)
        mixes.append((x.clone(), mix))
        return out, mix
    monkeypatch.setattr(augment, "mixup", spy)
    torch.manual_seed(0)
    teacher, student = create_model("test_resnet").eval(), create_model("test_efficientnet")
    logits = []
    student.register_forward_hook(lambda m, args, out: logits.append(out[1].detach().clone()))
    seen = Recorder(student)
    hp = HParams.from_dict(dict(method="kd", epochs=1, batch_size=8, seed=2, lam=0.7, augment=["mixup"]))
    result = train_student(student, [teacher], data, None, hp, device=CPU)
    ((before, mix),) = mixes
    assert 0.05 < mix.lam < 0.95 and not torch.equal(mix.partner, torch.arange(8))  # a real mix
    idx = torch.tensor([next(i for i in range(8) if torch.equal(row, data.images[i].float())) for row in before])
    by_hand = to_input(mix.lam * data.images[idx].float() + (1 - mix.lam) * data.images[idx][mix.partner].float(), CPU)
    assert torch.allclose(seen.calls[0][0], by_hand, atol=1e-5)  # the student saw the mixed image
    with torch.no_grad():
        _, t_logits = teacher(by_hand)
    y = data.labels[idx]
    kd = kd_loss(logits[0], t_logits, hp.options.kd_t)
    ce = mix.lam * F.cross_entropy(logits[0], y) + (1 - mix.lam) * F.cross_entropy(logits[0], y[mix.partner])
    logged = result.history[0]
    assert logged["train_distill"] == pytest.approx(kd.item(), rel=1e-4)
    assert logged["train_ce"] == pytest.approx(ce.item(), rel=1e-4)
    assert logged["train_loss"] == pytest.approx(ce.item() + 0.7 * kd.item(), rel=1e-4)


def test_a_mixed_batch_gives_ckd_the_dominant_images_index():
    """CKD's bank row written for a mixed row is that of the image making up most of it."""
    torch.manual_seed(0)
    labels = torch.tensor([0, 1] * 6)
    hp = HParams.from_dict(dict(method="ckd", k=4, embed_dim=8, momentum=0.5))
    loss = build_loss(hp, LossContext(5, (6,), labels))
    term = loss.terms[0]
    index, partner = torch.tensor([0, 3, 8, 11]), torch.tensor([2, 0, 3, 1])
    s, t = Outputs(torch.randn(4, 2), torch.randn(4, 5)), Outputs(torch.randn(4, 2), torch.randn(4, 6))
    v_s = F.normalize(term.embed_s(s.features), dim=1).detach()
    for lam, rows in ((0.3, index[partner]), (0.8, index)):
        old = term.student_bank.bank.clone()
        loss(s, [t], labels[index], index, Mix(partner, lam))
        expected = F.normalize(0.5 * old[rows] + 0.5 * v_s, dim=1)
        assert torch.allclose(term.student_bank.bank[rows], expected, atol=1e-6), lam
    ce = loss(s, [t], labels[index], index, Mix(partner, 0.3))[1]["ce"]
    by_hand = 0.3 * F.cross_entropy(s.logits, labels[index]) + 0.7 * F.cross_entropy(s.logits, labels[index][partner])
    assert ce == pytest.approx(by_hand.item(), rel=1e-6)


def count_teacher_calls(augment_names: list[str]) -> tuple[int, int, int]:
    """(teacher calls before the first step, teacher calls during the steps, steps) of a
    2-epoch KD run of 16 images in batches of 8."""
    data = toy_set(16)
    torch.manual_seed(0)
    teacher, student = create_model("test_resnet").eval(), create_model("test_efficientnet")
    steps, before, during = [], [], []
    student.register_forward_pre_hook(lambda m, a: steps.append(1))
    teacher.register_forward_pre_hook(lambda m, a: (during if steps else before).append(1))
    hp = HParams.from_dict(dict(method="kd", epochs=2, batch_size=8, augment=augment_names))
    train_student(student, [teacher], data, None, hp, device=CPU)
    return len(before), len(during), len(steps)


def test_the_teacher_cache_serves_flip_only_runs_and_no_other(monkeypatch):
    before, during, steps = count_teacher_calls(["flip"])
    assert (before, during, steps) == (2, 0, 4)  # the cache: both flips, once; then never
    monkeypatch.setattr(TeacherCache, "compute", lambda *a, **k: pytest.fail("a cache was computed"))
    before, during, steps = count_teacher_calls(["flip", "crop"])
    assert (before, during, steps) == (0, 4, 4)  # live: once a step
    with pytest.raises(ValueError, match="teacher_caches were given but augment"):
        hp = HParams.from_dict(dict(method="kd", epochs=1, augment=["crop"]))
        train_student(create_model("test_resnet"), [], toy_set(4), None, hp, device=CPU,
                      teacher_caches=[TeacherCache(torch.zeros(1, 4, 2), torch.zeros(1, 4, 8))])


def test_a_trial_with_live_augmentations_writes_no_cache(synthetic_root, tmp_path, monkeypatch):
    from trainables.models import save_checkpoint
    from trainables.trial import TrialSpec, dataset_index, image_set, run_trial, teacher_outputs, training_frame

    torch.manual_seed(0)
    save_checkpoint(create_model("test_resnet"), tmp_path / "teacher.pt")
    data = {"kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32, "seed": 0}
    spec = TrialSpec.from_dict({
        "role": "student", "arch": "test_efficientnet", "data": data, "image_size": 32, "volume": 16,
        "teachers": [{"arch": "test_resnet", "checkpoint": str(tmp_path / "teacher.pt")}], "eval_splits": [],
        "cache_dir": str(tmp_path / "cache")})
    hp = HParams.from_dict(dict(method="kd", epochs=1, batch_size=8, augment=["flip", "crop"]))
    monkeypatch.setattr(TeacherCache, "compute", lambda *a, **k: pytest.fail("a cache was computed"))
    outcome = run_trial(spec, hp)
    assert outcome.result.images_seen == 16 and math.isfinite(outcome.result.history[0]["train_distill"])
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    frame = training_frame(spec, dataset_index(spec.data))
    with pytest.raises(ValueError, match="teachers run live"):
        teacher_outputs(spec, hp, frame, image_set(frame, 32), CPU)


def test_a_resumed_augmented_run_equals_an_undisturbed_one(tmp_path):
    data = toy_set(24)
    hp = HParams.from_dict(dict(method="ckd", epochs=3, batch_size=8, k=4, lr=3e-3, seed=3,
                                augment=["flip", "crop", "color", "mixup", "cutmix"]))
    torch.manual_seed(0)
    teacher = create_model("test_resnet").eval()
    torch.manual_seed(1)
    undisturbed = create_model("test_resnet")
    saved = {}
    train_student(undisturbed, [teacher], data, None, hp, device=CPU,
                  on_epoch=lambda e, m, state: saved.update(state()) if e == 0 else None)
    torch.save(saved, tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    resumed = create_model("test_resnet")
    torch.manual_seed(123)
    train_student(resumed, [teacher], data, None, hp, device=CPU, resume=saved)
    for k, v in undisturbed.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
