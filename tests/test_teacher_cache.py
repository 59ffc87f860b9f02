"""Teacher outputs shared across trials: keyed, atomic, verified, and the same numbers."""
import pytest
import torch

import trainables.teacher_cache as tc
from trainables.engine import (
    ImageSet, TeacherCache, flip_batch, prepare_teacher, teacher_forward, to_input, train_student,
)
from trainables.hparams import HParams
from trainables.models import create_model, save_checkpoint
from trainables.trial import (
    TrialSpec, dataset_index, image_set, run_trial, teacher_outputs, training_frame,
)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_memory():
    tc.clear_memory()
    yield
    tc.clear_memory()


@pytest.fixture
def teacher_ckpt(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "teacher.pt"
    save_checkpoint(create_model("test_resnet"), path)
    return path


def toy_images(n: int = 6, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 255, (n, 3, size, size), generator=g, dtype=torch.uint8)


def student_spec(root, ckpt, cache_dir) -> TrialSpec:
    data = {"kind": "synthetic", "root": str(root), "num_images": 480, "size": 32, "seed": 0}
    return TrialSpec.from_dict({
        "role": "student", "arch": "test_efficientnet", "data": data, "image_size": 32, "volume": 16,
        "teachers": [{"arch": "test_resnet", "checkpoint": str(ckpt)}], "eval_splits": [],
        "cache_dir": None if cache_dir is None else str(cache_dir),
    })


def test_key_changes_with_checkpoint_subset_order_flip_and_numerics(tmp_path, teacher_ckpt):
    paths = ["a.png", "b.png", "c.png"]
    hp = HParams(flip=True)
    base = tc.make_key("test_resnet", teacher_ckpt, paths, 32, hp, CPU)
    assert tc.make_key("test_resnet", teacher_ckpt, list(paths), 32, hp, CPU) == base
    other_ckpt = tmp_path / "other.pt"
    save_checkpoint(create_model("test_resnet"), other_ckpt)
    variants = [
        tc.make_key("test_resnet", other_ckpt, paths, 32, hp, CPU),
        tc.make_key("test_resnet", teacher_ckpt, paths[::-1], 32, hp, CPU),
        tc.make_key("test_resnet", teacher_ckpt, paths[:2], 32, hp, CPU),
        tc.make_key("test_resnet", teacher_ckpt, paths, 64, hp, CPU),
        tc.make_key("test_resnet", teacher_ckpt, paths, 32, HParams(flip=False), CPU),
        tc.make_key("test_resnet", teacher_ckpt, paths, 32, hp, torch.device("cuda")),
    ]
    assert len({k.digest for k in [base, *variants]}) == len(variants) + 1
    # on the CPU, amp is a no-op: the same numbers, the same cache
    assert tc.make_key("test_resnet", teacher_ckpt, paths, 32, HParams(amp=False), CPU) == base
    assert tc.numerics_tag(torch.device("cuda"), HParams(amp=True)) != tc.numerics_tag(
        torch.device("cuda"), HParams(amp=False))

    store = tc.TeacherStore(tmp_path / "cache")
    cache = TeacherCache(torch.zeros(2, 3, 2), torch.zeros(2, 3, 8))
    store.put(base, cache)
    tc.clear_memory()
    assert store.get(base) is not None  # from the file
    assert all(store.get(k) is None for k in variants)


def test_stored_outputs_equal_a_fresh_computation(tmp_path, teacher_ckpt):
    images = toy_images()
    hp = HParams(flip=True)
    key = tc.make_key("test_resnet", teacher_ckpt, [f"{i}.png" for i in range(6)], 32, hp, CPU)
    teacher = create_model("test_resnet", weights=teacher_ckpt).eval()
    store = tc.TeacherStore(tmp_path / "cache")
    store.get_or_compute(key, lambda: TeacherCache.compute(teacher, images, CPU, hp))
    tc.clear_memory()
    obj = torch.load(tmp_path / "cache" / key.filename, weights_only=True)
    fresh = TeacherCache.compute(create_model("test_resnet", weights=teacher_ckpt), images, CPU, hp)
    assert obj["logits"].shape == (2, 6, 2)
    assert torch.equal(obj["logits"], fresh.logits) and torch.equal(obj["features"], fresh.features)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [key.filename]  # no temporary file left behind


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_key"])
def test_a_corrupt_cache_file_is_recomputed(tmp_path, teacher_ckpt, damage):
    images = toy_images()
    hp = HParams()
    paths = [f"{i}.png" for i in range(6)]
    key = tc.make_key("test_resnet", teacher_ckpt, paths, 32, hp, CPU)
    teacher = create_model("test_resnet", weights=teacher_ckpt).eval()
    good = TeacherCache.compute(teacher, images, CPU, hp)
    store = tc.TeacherStore(tmp_path)
    path = tmp_path / key.filename
    if damage == "garbage":
        path.write_bytes(b"not a torch file")
    elif damage == "truncated":
        store.put(key, good)
        path.write_bytes(path.read_bytes()[:200])
    else:  # a valid file of another key under this name
        other = tc.make_key("test_resnet", teacher_ckpt, paths[::-1], 32, hp, CPU)
        store.put(other, good)
        (tmp_path / other.filename).rename(path)
    tc.clear_memory()
    assert store.get(key) is None
    calls = []
    out = store.get_or_compute(key, lambda: calls.append(1) or good)
    assert calls == [1] and torch.equal(out.logits, good.logits)
    tc.clear_memory()
    assert torch.equal(store.get(key).features, good.features)  # the file was repaired


def test_warm_cache_trial_builds_no_teacher_and_gives_the_same_model(
        synthetic_root, tmp_path, teacher_ckpt, monkeypatch):
    hp = HParams(method="kd", epochs=1, batch_size=8, seed=0)
    spec = student_spec(synthetic_root, teacher_ckpt, tmp_path / "cache")
    cold = run_trial(spec, hp).result.model.state_dict()
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    def boom(*a, **k):
        raise AssertionError("a teacher model was built although its outputs are cached")

    monkeypatch.setattr("trainables.trial.load_teachers", boom)
    for fresh_worker in (False, True):  # the in-process copy, then the file alone
        if fresh_worker:
            tc.clear_memory()
        warm = run_trial(spec, hp).result.model.state_dict()
        for k, v in cold.items():
            assert torch.equal(v, warm[k]), k

    # without cache_dir, trials still work and build the teacher once
    tc.clear_memory()
    monkeypatch.undo()
    nodisk = run_trial(student_spec(synthetic_root, teacher_ckpt, None), hp).result.model.state_dict()
    assert all(torch.equal(v, nodisk[k]) for k, v in cold.items())


def test_cached_outputs_match_the_training_subset(synthetic_root, tmp_path, teacher_ckpt):
    spec = student_spec(synthetic_root, teacher_ckpt, tmp_path)
    hp = HParams(method="kd", flip=True)
    frame = training_frame(spec, dataset_index(spec.data))
    train = image_set(frame, 32)
    (cache,) = teacher_outputs(spec, hp, frame, train, CPU)
    fresh = TeacherCache.compute(create_model("test_resnet", weights=teacher_ckpt), train.images, CPU, hp)
    assert torch.equal(cache.logits, fresh.logits) and torch.equal(cache.features, fresh.features)


def test_a_cached_lookup_equals_a_live_teacher_forward_on_the_same_flipped_images():
    """What a step reads from the cache is what the live teacher gives for the same images and
    flips, to float32 rounding (the cache runs the teacher on other batch shapes, and the CPU's
    kernels do not promise bit-equal sums across batch shapes)."""
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    torch.manual_seed(0)
    teacher = prepare_teacher(create_model("test_resnet"), CPU, HParams())
    cache = TeacherCache.compute(teacher, images, CPU, HParams(flip=True), batch_size=5)
    idx = torch.tensor([3, 0, 11, 7, 15, 2])
    flips = torch.tensor([True, False, True, True, False, False])
    cached = cache.lookup(idx, flips)
    live = teacher_forward(teacher, to_input(flip_batch(images[idx], flips), CPU), CPU, HParams())
    assert torch.allclose(cached.logits, live.logits, rtol=1e-4, atol=1e-5)
    assert torch.allclose(cached.features, live.features, rtol=1e-4, atol=1e-5)
    # and a flipped row really is the flipped image's output, not the plain one's
    plain = teacher_forward(teacher, to_input(images[idx], CPU), CPU, HParams())
    assert not torch.allclose(cached.features[flips], plain.features[flips], atol=1e-3)


@pytest.mark.parametrize("method", ["kd", "ckd"])
def test_uncached_training_gives_the_cached_first_step_loss(method):
    """Cached and live teachers give the same first-step loss, to rounding. Weights after
    many steps are not compared: Adam's first steps are close to lr * sign(g), so 1e-8
    differences in the teacher's outputs grow to 1e-2 in the weights after two epochs."""
    g = torch.Generator().manual_seed(1)
    data = ImageSet(torch.randint(0, 255, (16, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(16) % 2)
    torch.manual_seed(0)
    teacher = create_model("test_resnet").eval()
    hp = HParams.from_dict({"method": method, "epochs": 1, "batch_size": 16, "lr": 3e-3, "seed": 0,
                             "flip": True, **({"k": 4} if method == "ckd" else {})})  # one step
    first = {}
    for cached in (True, False):
        torch.manual_seed(5)
        student = create_model("test_efficientnet")
        result = train_student(student, [teacher], data, None, hp, device="cpu", cache_teachers=cached)
        assert len(result.history) == 1 and result.images_seen == 16
        first[cached] = result.history[0]
    distill = "train_distill"
    assert distill in first[True] and first[True][distill] > 0
    for key in ("train_loss", distill):
        assert first[False][key] == pytest.approx(first[True][key], rel=1e-5, abs=1e-6), key


def test_caches_that_do_not_fit_the_run_are_refused():
    data = ImageSet(toy_images(4), torch.arange(4) % 2)
    wrong = TeacherCache(torch.zeros(1, 4, 2), torch.zeros(1, 4, 8))  # one flip state, flip on
    with pytest.raises(ValueError, match="flip"):
        train_student(create_model("test_resnet"), [], data, None, HParams(method="kd", epochs=1),
                      device="cpu", teacher_caches=[wrong])
