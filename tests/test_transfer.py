"""An unlabeled transfer set (students.transfer): drawn apart from the subset and the evaluation
videos, seen by the distillation terms only, its labels never part of training."""
import pytest
import torch

import trainables.losses.ensemble as ensemble
from study.config import TRANSFER_SOURCES, parse_config
from study.plan import grid_cells
from trainables.data.index import check_no_video_leak
from trainables.data.subsets import balanced_subset
from trainables.data.transfer import SOURCES, TransferSpec, sbi_set, transfer_set, unlabeled_frame
from trainables.engine import ImageSet, train_student
from trainables.errors import ConfigError, DataError
from trainables.hparams import HParams
from trainables.losses import UNLABELED
from trainables.losses.kd import KD
from trainables.models import create_model
from trainables.trial import TeacherRef, TrialSpec, dataset_index, frame_images

SIZE = 32
TEACHERS = {("synthetic", "r"): TeacherRef("test_resnet", "/teacher.pt")}  # (source, name) -> checkpoint


def synthetic(root) -> dict:
    return {"kind": "synthetic", "root": str(root), "num_images": 480, "size": SIZE, "seed": 0}


@pytest.fixture
def index(synthetic_root):
    return dataset_index(synthetic(synthetic_root))


def load(frame):
    return frame_images(frame, SIZE)[0]


def toy(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 255, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)


def train(method: str, subset: ImageSet, transfer, teacher, **hp) -> dict[str, torch.Tensor]:
    """The student's final weights after a few steps of `method`."""
    torch.manual_seed(7)
    student = create_model("test_resnet")
    hp = HParams.from_dict({"method": method, "epochs": 1, "min_steps": 3, "batch_size": 8, "lr": 3e-3,
                            "seed": 0, **({"k": 4} if method == "ckd" else {}), **hp})
    train_student(student, [teacher] if method != "vt" else [], subset, None, hp, device="cpu",
                  transfer=transfer)
    return {k: v.clone() for k, v in student.state_dict().items()}


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return create_model("test_resnet").eval()


# ---- (a) train_unlabeled: disjoint, deterministic, labels never read -------------------------------

def test_train_unlabeled_avoids_the_subsets_and_the_evaluation_videos_and_is_seeded(index):
    subset = balanced_subset(index, 16, seed=3)
    frame = unlabeled_frame(index, subset, 40, seed=3)
    assert len(frame) == 40 and "label" not in frame.columns
    assert set(frame["split"]) == {"train"}
    assert not set(frame["path"]) & set(subset["path"])
    assert not set(frame["video"]) & set(subset["video"])
    held_out = set(index.loc[index["split"] != "train", "video"])
    assert not set(frame["video"]) & held_out
    assert frame["video"].nunique() == 40  # dealt round-robin: one frame per video first
    assert frame.equals(unlabeled_frame(index, subset, 40, seed=3))
    assert not frame["path"].equals(unlabeled_frame(index, subset, 40, seed=4)["path"])
    check_no_video_leak(index)


def test_train_unlabeled_does_not_read_a_label(index):
    subset = balanced_subset(index, 16, seed=0)
    wrong = index.copy()
    outside = (wrong["split"] == "train") & ~wrong["path"].isin(subset["path"])
    wrong.loc[outside, "label"] = 1 - wrong.loc[outside, "label"]  # every candidate's label flipped
    assert unlabeled_frame(wrong, subset, 30, seed=0).equals(unlabeled_frame(index, subset, 30, seed=0))


def test_too_few_train_images_outside_the_subset_is_an_error_with_the_numbers(index):
    subset = balanced_subset(index, 16, seed=0)
    with pytest.raises(DataError, match=r"size=1000 .* 16 video\(s\) .* only 272 exist"):
        unlabeled_frame(index, subset, 1000, seed=0)


# ---- (b) the transfer images' labels never change training --------------------------------------

@pytest.mark.parametrize("method", ["ckd", "kd"])
def test_wrong_labels_on_the_transfer_images_give_identical_training(index, teacher, method):
    """From the index to the final weights: every transfer candidate's label flipped, or made
    nonsense, trains the same student bit for bit (CKD reads labels: its opposite-class
    negatives; the transfer rows get none)."""
    frame = balanced_subset(index, 16, seed=0)
    subset = ImageSet(load(frame), torch.tensor(frame["label"].to_numpy()))
    spec = TransferSpec("train_unlabeled", 16)
    outside = (index["split"] == "train") & ~index["path"].isin(frame["path"])
    flipped, nonsense = index.copy(), index.copy()
    flipped.loc[outside, "label"] = 1 - flipped.loc[outside, "label"]
    nonsense.loc[outside, "label"] = 7
    weights = [train(method, subset, transfer_set(spec, idx, frame, subset.images, 0, load).images, teacher)
               for idx in (index, flipped, nonsense)]
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
    without = train(method, subset, None, teacher)
    assert not all(torch.equal(weights[0][k], without[k]) for k in without)  # the set is used


def test_vanilla_training_ignores_a_transfer_set(teacher):
    subset = ImageSet(toy(16, 0), torch.arange(16) % 2)
    with_set, without = train("vt", subset, toy(12, 1), teacher), train("vt", subset, None, teacher)
    assert all(torch.equal(with_set[k], without[k]) for k in without)


# ---- (c) CE sees the labelled rows, the distillation term all rows ------------------------------

@pytest.mark.parametrize("augment", [("flip",), ("flip", "crop")], ids=["cached", "live"])
def test_the_task_term_sees_labelled_rows_and_the_distillation_term_both(monkeypatch, teacher, augment):
    seen = {"ce": [], "kd": []}
    ce = ensemble.cross_entropy

    def record_ce(logits, labels, mix=None):
        seen["ce"].append((tuple(logits.shape), labels.clone()))
        return ce(logits, labels, mix)

    kd = KD.forward

    def record_kd(self, student, teacher_out, labels, index):
        seen["kd"].append((tuple(student.logits.shape), tuple(teacher_out.features.shape), labels.clone(),
                           index.clone()))
        return kd(self, student, teacher_out, labels, index)

    monkeypatch.setattr(ensemble, "cross_entropy", record_ce)
    monkeypatch.setattr(KD, "forward", record_kd)
    subset = ImageSet(toy(16, 0), torch.arange(16) % 2)
    train("kd", subset, toy(12, 1), teacher, augment=list(augment))
    assert len(seen["ce"]) == len(seen["kd"]) == 3
    for (ce_shape, ce_labels), (s_shape, t_shape, labels, index) in zip(seen["ce"], seen["kd"]):
        assert ce_shape == (8, 2) and set(ce_labels.tolist()) <= {0, 1}
        assert s_shape == (16, 2) and t_shape[0] == 16  # 8 labelled rows, then 8 transfer rows
        assert torch.equal(labels[:8], ce_labels) and (labels[8:] == UNLABELED).all()
        assert (index[:8] < 16).all() and ((index[8:] >= 16) & (index[8:] < 28)).all()


def test_ckd_banks_hold_the_transfer_rows(teacher):
    torch.manual_seed(7)
    student = create_model("test_resnet")
    hp = HParams.from_dict({"method": "ckd", "epochs": 1, "batch_size": 8, "k": 4, "seed": 0})
    result = train_student(student, [teacher], ImageSet(toy(16, 0), torch.arange(16) % 2), None, hp,
                           device="cpu", transfer=toy(12, 1))
    assert result.images_seen == 16  # the volume counts labelled images
    assert result.history[0]["train_distill"] > 0


# ---- (d) the config ------------------------------------------------------------------------------

def study(root, transfer=None, methods=("vt", "kd")) -> dict:
    students = {"pairs": ["r->test_resnet"], "methods": list(methods), "volumes": [16], "seeds": [0],
                "hparams": {"epochs": 1}}
    if transfer is not None:
        students["transfer"] = transfer
    return {"name": "t", "data": {**synthetic(root), "image_size": SIZE},
            "teachers": [{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 1}}],
            "students": students, "grid": {"hparams": "paper"}}


@pytest.mark.parametrize("transfer, match", [
    ({"source": "unlabeled", "size": 10}, r"students\.transfer\.source='unlabeled': must be one of"),
    ({"source": "sbi", "size": 0}, r"students\.transfer\.size=0: must be an integer >= 1"),
    ({"source": "sbi", "size": True}, r"students\.transfer\.size=True: must be int"),
    ({"source": "sbi"}, r"missing key 'students\.transfer\.size'"),
    ({"source": "sbi", "size": 4, "labels": True}, r"unknown key\(s\) \['students\.transfer\.labels'\]"),
    ("sbi", r"students\.transfer='sbi': must be dict"),
])
def test_bad_transfer_settings_name_the_key_and_value(tmp_path, transfer, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(study(tmp_path, transfer), "t.yaml", tmp_path)


def test_a_transfer_set_needs_methods_whose_term_takes_unlabeled_rows(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"students\.transfer=.*only a distillation term sees"):
        parse_config(study(tmp_path, {"source": "sbi", "size": 4}, methods=("vt",)), "t.yaml", tmp_path)
    import study.config as config
    monkeypatch.setattr(config, "takes_unlabeled_rows", lambda m: m != "kd")
    with pytest.raises(ConfigError, match=r"methods \['kd'\] do not declare .*unlabeled_rows"):
        parse_config(study(tmp_path, {"source": "sbi", "size": 4}), "t.yaml", tmp_path)


def test_only_distilling_cells_carry_the_transfer_set_and_absent_changes_nothing(tmp_path):
    assert TRANSFER_SOURCES == SOURCES
    plain = parse_config(study(tmp_path), "t.yaml", tmp_path)
    assert plain.students.transfer is None
    raw = study(tmp_path)
    raw["students"]["transfer"] = None  # as `--set students.transfer=null` writes it
    assert parse_config(raw, "t.yaml", tmp_path).students.transfer is None
    cfg = parse_config(study(tmp_path, {"source": "train_unlabeled", "size": 20}), "t.yaml", tmp_path)
    before = {c.tags.method: c for c in grid_cells(plain, TEACHERS, {})}
    after = {c.tags.method: c for c in grid_cells(cfg, TEACHERS, {})}
    assert after["vt"].spec.transfer is None and after["vt"].config_hash == before["vt"].config_hash
    assert after["kd"].spec.transfer == TransferSpec("train_unlabeled", 20)
    assert after["kd"].config_hash != before["kd"].config_hash
    assert "transfer" not in before["kd"].spec.identity()
    back = TrialSpec.from_dict(after["kd"].config()["spec"])
    assert back == after["kd"].spec and back.transfer.label == "train_unlabeled:20"


def test_a_run_records_its_transfer_set_as_a_param(tmp_path):
    from study.tracking import MLflowTrialCallback

    class Client:
        def log_batch(self, run_id, params):
            self.params.update({p.key: p.value for p in params})

        def log_artifact(self, *args):
            pass

    cfg = parse_config(study(tmp_path, {"source": "sbi", "size": 8}), "t.yaml", tmp_path)
    callback = MLflowTrialCallback("sqlite:///unused.db", "0", "parent", "t")
    for cell in grid_cells(cfg, TEACHERS, {}):
        callback._client = Client()
        callback._client.params = {}
        callback._log_inputs("run", {"cell": cell.config()})
        assert callback._client.params.get("transfer") == ("sbi:8" if cell.tags.method == "kd" else None)


# ---- (e) sbi --------------------------------------------------------------------------------------

def test_sbi_makes_fakes_of_the_subsets_real_images_each_followed_by_its_source(index):
    frame = balanced_subset(index, 8, seed=0)
    images = load(frame)
    reals = images[torch.tensor(frame["label"].to_numpy() == 0)]
    made = transfer_set(TransferSpec("sbi", 11), index, frame, images, 0, load)
    assert made.images.shape == (11, 3, SIZE, SIZE) and made.images.dtype == torch.uint8
    real_paths = list(frame.loc[frame["label"] == 0, "path"])
    for j in range(11):
        r = (j // 2) % 4  # 4 real images, used again after the first 8 images
        if j % 2:
            assert torch.equal(made.images[j], reals[r]) and made.keys[j] == real_paths[r]
        else:  # a blend of that real image: mostly its pixels, never all of them
            diff = (made.images[j].int() - reals[r].int()).abs()
            assert 0 < (diff > 0).float().mean() < 0.9 and real_paths[r] in made.keys[j]
    assert not torch.equal(made.images[0], made.images[8])  # second pass over image 0: a new fake
    again = sbi_set(reals, real_paths, 11, 0)
    assert again.keys == made.keys and torch.equal(again.images, made.images)
    assert not torch.equal(sbi_set(reals, real_paths, 11, 1).images[0], made.images[0])


# ---- the trial and the engine's other paths with a transfer set ----------------------------------

@pytest.mark.parametrize("source", SOURCES)
def test_a_trial_trains_on_its_transfer_set_with_the_teachers_outputs_cached(synthetic_root, tmp_path, source):
    import trainables.teacher_cache as tc
    from trainables.models import save_checkpoint
    from trainables.trial import run_trial

    torch.manual_seed(0)
    save_checkpoint(create_model("test_resnet"), tmp_path / "teacher.pt")
    spec = TrialSpec.from_dict({
        "role": "student", "arch": "test_resnet", "data": synthetic(synthetic_root), "image_size": SIZE,
        "volume": 16, "teachers": [{"arch": "test_resnet", "checkpoint": str(tmp_path / "teacher.pt")}],
        "eval_splits": [], "cache_dir": str(tmp_path / "cache"), "transfer": {"source": source, "size": 12}})
    hp = HParams.from_dict({"method": "kd", "epochs": 1, "min_steps": 2, "batch_size": 8, "seed": 0})
    tc.clear_memory()
    first = run_trial(spec, hp).result
    assert first.images_seen == 16 and len(list((tmp_path / "cache").glob("*.pt"))) == 2  # subset, transfer set
    tc.clear_memory()  # read back from the folder: the same student
    again = run_trial(spec, hp).result.model.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in first.model.state_dict().items())


@pytest.mark.parametrize("method", ["kd", "ckd"])
def test_cached_and_live_teachers_give_the_same_step_on_a_transfer_set(teacher, method):
    subset, extra = ImageSet(toy(16, 0), torch.arange(16) % 2), toy(16, 1)
    hp = HParams.from_dict({"method": method, "epochs": 1, "batch_size": 16, "lr": 3e-3, "seed": 0,
                            **({"k": 4} if method == "ckd" else {})})  # one step
    first = {}
    for cached in (True, False):
        torch.manual_seed(5)
        result = train_student(create_model("test_resnet"), [teacher], subset, None, hp, device="cpu",
                               cache_teachers=cached, transfer=extra)
        first[cached] = result.history[0]
    for key in ("train_loss", "train_distill"):
        assert first[False][key] == pytest.approx(first[True][key], rel=1e-5, abs=1e-6), key


def test_resume_with_a_transfer_set_gives_the_undisturbed_model(teacher, tmp_path):
    subset, extra = ImageSet(toy(24, 0), torch.arange(24) % 2), toy(20, 1)
    hp = HParams.from_dict({"method": "ckd", "epochs": 3, "batch_size": 8, "k": 4, "seed": 3,
                            "augment": ["flip", "color"]})
    torch.manual_seed(1)
    undisturbed, saved = create_model("test_resnet"), {}

    def grab(epoch, metrics, state):
        if epoch == 0:
            saved.update(state())
    train_student(undisturbed, [teacher], subset, None, hp, device="cpu", on_epoch=grab, transfer=extra)
    assert "transfer_generator" in saved
    torch.save(saved, tmp_path / "state.pt")
    saved = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    resumed = create_model("test_resnet")
    train_student(resumed, [teacher], subset, None, hp, device="cpu", resume=saved, transfer=extra)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in undisturbed.state_dict().items())


def test_transfer_images_that_do_not_fit_the_subset_are_refused(teacher):
    subset = ImageSet(toy(8, 0), torch.arange(8) % 2)
    with pytest.raises(ValueError, match=r"transfer images \(3, 16, 16\) differ"):
        train("kd", subset, torch.zeros(4, 3, 16, 16, dtype=torch.uint8), teacher)
    with pytest.raises(ValueError, match="transfer must be uint8"):
        train("kd", subset, toy(4, 1).float(), teacher)


def test_preflight_refuses_a_train_unlabeled_set_the_train_split_cannot_fill(synthetic_root, tmp_path):
    from study.runner import preflight
    from trainables.errors import UserError

    raw = study(synthetic_root, {"source": "train_unlabeled", "size": 272})
    preflight(parse_config(raw, "t.yaml", tmp_path))  # 84 train videos - 16 = 68 videos of 4 frames
    raw["students"]["transfer"]["size"] = 273
    with pytest.raises(UserError, match=r"t\.yaml: volume 16, draw 0: .*size=273 .* only 272 exist"):
        preflight(parse_config(raw, "t.yaml", tmp_path))


def test_ckd_draws_a_transfer_anchors_negatives_from_every_other_row_and_a_labelled_anchors_by_class():
    from trainables.losses import LOSSES, LossContext

    hp = HParams.from_dict({"method": "ckd", "k": 3, "negatives": "opposite_class"})
    labels = torch.tensor([0, 1, 0, 1])  # M = 4 labelled images, then N = 6 transfer images
    term = LOSSES["ckd"](hp, 8, 8, LossContext(8, (8,), labels, num_transfer=6))
    assert term.student_bank.bank.shape == (10, hp.options.embed_dim)
    torch.manual_seed(0)
    batch_labels = torch.tensor([0, 1, UNLABELED, UNLABELED])
    index = torch.tensor([0, 1, 4, 9])
    drawn = torch.cat([term.sample_negatives(batch_labels, index) for _ in range(50)], dim=1)  # (4, 150)
    assert set(drawn[0].tolist()) == {1, 3} and set(drawn[1].tolist()) == {0, 2}  # labelled: the other class
    assert set(drawn[2].tolist()) == set(range(10)) - {4} and set(drawn[3].tolist()) == set(range(9))
