"""Full splits streamed from disk by DataLoader workers give what the in-memory path gives."""
import dataclasses
import multiprocessing

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data.images import load_images
from trainables.data.stream import BatchStream, FileSet
from trainables.engine import ImageSet, evaluate, predict, train_student, train_teacher
from trainables.errors import DataError
from trainables.hparams import HParams
from trainables.models import create_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """40 PNGs at 40 px (resized to 32 on decode); fakes carry a bright square."""
    root = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(40):
        img = rng.integers(0, 120, (40, 40, 3), dtype=np.uint8)
        if i % 2:
            img[10:25, 10:25] = 250
        path = root / f"{i:03d}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
        labels.append(i % 2)
    return paths, torch.tensor(labels)


def in_memory(paths, labels) -> ImageSet:
    return ImageSet(load_images(paths, 32), labels)


def test_stream_decodes_the_requested_batches_in_order(files):
    paths, labels = files
    expected = load_images(paths, 32)
    order = [torch.tensor([5, 0, 7]), torch.tensor([39]), torch.tensor([1, 2])]
    for workers in (0, 2):
        with BatchStream(FileSet(paths, labels, 32, workers=workers)) as stream:
            for _ in range(2):  # a second pass reuses the same workers
                got = list(stream.batches(order))
                assert [tuple(b.shape) for b in got] == [(3, 3, 32, 32), (1, 3, 32, 32), (2, 3, 32, 32)]
                for idx, batch in zip(order, got):
                    assert batch.dtype == torch.uint8 and torch.equal(batch, expected[idx])


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_training_equals_in_memory_training(files, workers):
    paths, labels = files
    hp = HParams(epochs=2, batch_size=8, lr=3e-3, seed=5, flip=True)
    torch.manual_seed(0)
    a = create_model("test_resnet")
    b = create_model("test_resnet")
    b.load_state_dict(a.state_dict())
    res_mem = train_teacher(a, in_memory(paths, labels), None, hp)
    rng_mem = torch.get_rng_state()
    res_stream = train_teacher(b, FileSet(paths, labels, 32, workers=workers),
                               FileSet(paths[:10], labels[:10], 32, workers=workers), hp)
    rng_stream = torch.get_rng_state()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert [h["train_loss"] for h in res_mem.history] == [h["train_loss"] for h in res_stream.history]
    assert "val_auc" in res_stream.history[0]
    # the loader draws nothing from the global RNG (a resumed run's numbers depend on it)
    assert torch.equal(rng_mem, rng_stream)
    # and the loader's worker processes are gone once training returns
    assert not [p for p in multiprocessing.active_children() if "worker" in p.name.lower()]


def test_streamed_run_resumes_bit_identically(files):
    paths, labels = files
    data = FileSet(paths, labels, 32, workers=1)
    hp = HParams(epochs=3, batch_size=8, lr=3e-3, seed=2)
    torch.manual_seed(1)
    undisturbed = create_model("test_resnet")
    init = {k: v.clone() for k, v in undisturbed.state_dict().items()}
    saved = {}
    train_teacher(undisturbed, data, None, hp,
                  on_epoch=lambda e, m, state: saved.update(state()) if e == 0 else None)
    resumed = create_model("test_resnet")
    resumed.load_state_dict(init)
    torch.manual_seed(99)
    train_teacher(resumed, data, None, hp, resume=saved)
    for k, v in undisturbed.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_predict_and_evaluate_stream_in_order(files):
    paths, labels = files
    model = create_model("test_resnet").eval()
    mem = predict(model, in_memory(paths, labels), batch_size=16)
    streamed = predict(model, FileSet(paths, labels, 32, workers=2), batch_size=16)
    np.testing.assert_allclose(streamed, mem, rtol=0, atol=1e-6)
    assert evaluate(model, FileSet(paths, labels, 32, workers=0)) == evaluate(model, in_memory(paths, labels))


def test_a_bad_file_fails_the_stream_naming_the_file(files, tmp_path):
    paths, labels = files
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    data = FileSet(paths[:7] + [str(bad)], labels[:8], 32, workers=2)
    with pytest.raises(DataError, match="broken.png"):
        train_teacher(create_model("test_resnet"), data, None, HParams(epochs=1, batch_size=4))
    assert not [p for p in multiprocessing.active_children() if "worker" in p.name.lower()]


def test_distillation_refuses_a_streamed_subset(files):
    paths, labels = files
    teacher = create_model("test_resnet").eval()
    with pytest.raises(ValueError, match="in memory"):
        train_student(create_model("test_resnet"), [teacher], FileSet(paths, labels, 32, workers=0), None,
                      HParams(method="kd", epochs=1))


def test_fileset_checks_its_arguments(files):
    paths, labels = files
    with pytest.raises(ValueError, match="labels"):
        FileSet(paths, labels[:3], 32)
    with pytest.raises(ValueError, match="workers"):
        FileSet(paths, labels, 32, workers=-1)


def test_a_streamed_teacher_trial_equals_an_in_memory_one(synthetic_root):
    from trainables.trial import TrialSpec, run_trial

    data = {"kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32, "seed": 0}
    hp = HParams(epochs=1, batch_size=32, seed=0)
    outcomes = [run_trial(TrialSpec(role="teacher", arch="test_resnet", data=data, image_size=32,
                                    stream=stream, loader_workers=1), hp) for stream in (True, False)]
    assert outcomes[0].metrics == outcomes[1].metrics and "test_auc" in outcomes[0].metrics
    assert outcomes[0].result.history == outcomes[1].result.history


def test_auto_streams_only_splits_too_big_for_memory(monkeypatch):
    from trainables import trial
    from trainables.trial import TrialSpec, streams

    spec = TrialSpec(role="teacher", arch="test_resnet", data={}, image_size=299, stream="auto")
    # 299 px: 268,203 bytes an image; FaceForensics++ c23 train frames are far above 2 GiB
    assert not streams(spec, 8000) and streams(spec, 8008)
    monkeypatch.setattr(trial, "STREAM_ABOVE_BYTES", 10**6)
    assert streams(spec, 4) and not streams(dataclasses.replace(spec, stream=False), 10**6)
    with pytest.raises(Exception, match="stream='maybe'"):
        TrialSpec.from_dict({"role": "teacher", "arch": "x", "data": {}, "stream": "maybe"})
