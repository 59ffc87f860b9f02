"""The decoded-image cache: decoded once, mapped read-only, atomic, checked on every open."""
import json
import os
import threading

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from trainables.data import decoded
from trainables.data.decoded import DecodedStore
from trainables.data.held import HeldSets
from trainables.data.images import load_images


@pytest.fixture
def pngs(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def files_of(store: DecodedStore, paths, size):
    return store.files(decoded.set_key(paths, size))


def test_a_set_is_decoded_once_and_mapped_after(tmp_path, pngs):
    first = DecodedStore(tmp_path / "cache")
    images = first.get(pngs, 32).images
    assert torch.equal(images, load_images(pngs, 32)) and len(first.decoded) == 1
    again = DecodedStore(tmp_path / "cache")  # another trial on the node
    assert torch.equal(again.get(pngs, 32).images, images) and again.decoded == [] and again.rebuilt == []
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_a_mapped_set_is_private_to_the_trial(tmp_path, pngs):
    store = DecodedStore(tmp_path / "cache")
    images = store.get(pngs, 32).images
    images[0].fill_(7)  # a stray write changes this process's copy only
    assert torch.equal(DecodedStore(tmp_path / "cache").get(pngs, 32).images, load_images(pngs, 32))


def test_a_replaced_image_gives_a_new_key(tmp_path, pngs):
    key = decoded.set_key(pngs, 32)
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(pngs[3])
    os.utime(pngs[3], ns=(1, 1))  # even with a same-size file, the mtime differs
    assert decoded.set_key(pngs, 32) != key and decoded.set_key(pngs, 16) != decoded.set_key(pngs, 32)
    store = DecodedStore(tmp_path / "cache")
    assert int(store.get(pngs, 32).images[3].sum()) == 0


def damage_truncate(array, meta):
    with open(array, "r+b") as f:
        f.truncate(array.stat().st_size - 100)


def damage_header(array, meta):
    with open(array, "r+b") as f:
        f.write(b"\x00garbage")


def damage_block(array, meta):
    offset = json.loads(meta.read_text())["offset"]  # the first data bytes are in the first sampled block
    with open(array, "r+b") as f:
        f.seek(offset + 5)
        byte = f.read(1)
        f.seek(offset + 5)
        f.write(bytes([byte[0] ^ 0xFF]))


def damage_sidecar(array, meta):
    meta.unlink()


@pytest.mark.parametrize("damage", [damage_truncate, damage_header, damage_block, damage_sidecar])
def test_a_damaged_file_is_rebuilt_never_used(tmp_path, pngs, damage):
    DecodedStore(tmp_path / "cache").get(pngs, 32)
    array, meta = files_of(DecodedStore(tmp_path / "cache"), pngs, 32)
    damage(array, meta)
    store = DecodedStore(tmp_path / "cache")
    assert torch.equal(store.get(pngs, 32).images, load_images(pngs, 32))
    assert len(store.rebuilt) == 1 and len(store.decoded) == 1
    assert DecodedStore(tmp_path / "cache")._problem(decoded.set_key(pngs, 32), (12, 3, 32, 32)) is None


def race(tmp_path, pngs, n=4):
    """n trials (threads, each with its own store and lock file handle) ask for one set at once."""
    stores = [DecodedStore(tmp_path / "cache") for _ in range(n)]
    start = threading.Barrier(n)
    results, errors = [None] * n, []

    def trial(i):
        try:
            start.wait()
            results[i] = stores[i].get(pngs, 32).images
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    return stores, results


def test_racing_trials_decode_once(tmp_path, pngs):
    stores, results = race(tmp_path, pngs)
    assert sum(len(s.decoded) for s in stores) == 1
    assert all(torch.equal(r, load_images(pngs, 32)) for r in results)
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_racing_trials_without_locks_still_get_a_whole_file(tmp_path, pngs, monkeypatch):
    monkeypatch.setattr(decoded, "fcntl", None)
    stores, results = race(tmp_path, pngs)
    assert sum(len(s.decoded) for s in stores) >= 1
    assert all(torch.equal(r, load_images(pngs, 32)) for r in results)
    assert not list((tmp_path / "cache").glob("*.tmp"))
    assert DecodedStore(tmp_path / "cache")._problem(decoded.set_key(pngs, 32), (12, 3, 32, 32)) is None


def test_a_scoring_pass_over_a_mapped_split_keeps_resident_memory_flat(tmp_path, pngs):
    from trainables.engine import ImageSet, eval_batches

    paths = pngs * 100  # 1,200 images of 128 px: 59 MB mapped
    mapped = DecodedStore(tmp_path / "cache").get(paths, 128)
    data = ImageSet(mapped.images, torch.zeros(len(paths)), mapped=mapped)
    proc = psutil.Process()
    before, peak, total = proc.memory_info().rss, 0, 0
    for batch in eval_batches(data, 100, torch.device("cpu")):
        total += int(batch[:, 0, 0, 0].sum())  # the consumer reads every batch
        torch.add(batch, 0)  # every page of it
        peak = max(peak, proc.memory_info().rss)
    assert total == int(load_images(pngs, 128)[:, 0, 0, 0].sum()) * 100
    assert peak - before < 25 * 2**20, f"resident memory grew by {(peak - before) / 2**20:.0f} MiB"


def test_held_sets_stay_within_their_byte_budget():
    held = HeldSets(budget=3000)
    made = []

    def make(n):
        return lambda: made.append(n) or torch.zeros(n, dtype=torch.uint8)

    held.get("a", make(1000))
    held.get("b", make(1500))
    held.get("a", make(1000))  # kept: not made again, and now the most recent
    held.get("c", make(1000))  # b is the least recently used: forgotten
    assert made == [1000, 1500, 1000] and held.bytes == 2000 and len(held) == 2
    held.get("b", make(1500))
    assert made[-1] == 1500 and held.bytes <= 3000
    held.get("huge", make(4000))  # larger than the budget: returned, never kept
    assert "huge" not in held._sets


def test_a_trial_on_mapped_splits_scores_what_an_in_memory_one_does(tmp_path, synthetic_root):
    from trainables.hparams import HParams
    from trainables.trial import TrialSpec, run_trial

    data = {"kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32, "seed": 0}
    hp = HParams(epochs=1, batch_size=10, seed=0)
    spec = TrialSpec(role="student", arch="test_resnet", data=data, image_size=32, volume=20)
    held = run_trial(spec, hp)
    mapped = run_trial(TrialSpec(**{**spec.__dict__, "decode_dir": str(tmp_path / "decoded")}), hp)
    assert mapped.metrics == held.metrics and "test_auc" in mapped.metrics
    assert len(list((tmp_path / "decoded").glob("*.npy"))) == 3  # subset, val, test
    assert set(mapped.system) == {"sys_data_prep_s", "sys_data_prep_start", "sys_peak_rss_mb"}
    assert mapped.system["sys_peak_rss_mb"] > 10
