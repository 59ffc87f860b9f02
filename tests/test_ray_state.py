"""study.ray_state: a stage's Ray state cut short by a full disk is put back from its last good copy."""
import json
import pickle

import pytest

from study.ray_state import GOOD, damaged, keep_good_copy, readable, repair
from trainables.errors import UserError


def stage(folder, session="2026-01-01_00-00-00", trials=3):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tuner.pkl").write_bytes(pickle.dumps({"param_space": {"cell": list(range(trials))}}))
    (folder / f"experiment_state-{session}.json").write_text(json.dumps({"trial_data": list(range(trials))}))
    # Tune writes the variant generator's state as a pickle under a .json name
    (folder / f"basic-variant-state-{session}.json").write_bytes(pickle.dumps({"counter": trials}))
    return folder


def cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_readable_tells_whole_files_from_cut_ones(tmp_path):
    folder = stage(tmp_path / "grid")
    files = sorted(folder.iterdir())
    assert all(readable(f) for f in files)
    for f in files:
        cut(f)
        assert not readable(f), f.name
    (folder / "empty.json").write_text("")
    assert not readable(folder / "empty.json")


def test_a_cut_state_file_is_replaced_by_the_last_good_set_and_set_aside(tmp_path):
    folder = stage(tmp_path / "grid")
    assert keep_good_copy(folder)
    assert sorted(p.name for p in (folder / GOOD).iterdir()) == sorted(p.name for p in folder.iterdir() if p.is_file())
    stage(folder, session="2026-01-01_00-05-00", trials=5)  # a later session of the same stage...
    cut(folder / "experiment_state-2026-01-01_00-05-00.json")  # ...whose save the full disk cut short
    assert not keep_good_copy(folder)  # a damaged set never replaces the good copy
    assert [p.name for p in damaged(folder)] == ["experiment_state-2026-01-01_00-05-00.json"]

    note = repair(str(folder))
    assert "experiment_state-2026-01-01_00-05-00.json" in note and "last good copy" in note
    assert not damaged(folder)
    # every state file of the damaged set went aside, so Tune restores the good set, not a mix
    assert json.loads((folder / "experiment_state-2026-01-01_00-00-00.json").read_text()) == {"trial_data": [0, 1, 2]}
    assert not (folder / "experiment_state-2026-01-01_00-05-00.json").exists()
    assert not (folder / "basic-variant-state-2026-01-01_00-05-00.json").exists()
    aside = [p for p in folder.iterdir() if p.name.startswith(".damaged-")]
    assert len(aside) == 1 and (aside[0] / "experiment_state-2026-01-01_00-05-00.json").exists()
    assert repair(str(folder)) is None  # whole now: nothing to do


def test_damage_without_a_good_copy_is_an_error_naming_the_file(tmp_path):
    folder = stage(tmp_path / "grid")
    cut(folder / "basic-variant-state-2026-01-01_00-00-00.json")
    with pytest.raises(UserError, match="basic-variant-state-2026-01-01_00-00-00.json is damaged"):
        repair(str(folder))
    assert (folder / "basic-variant-state-2026-01-01_00-00-00.json").exists()  # nothing moved


def test_a_stage_without_saved_state_or_a_remote_one_is_left_alone(tmp_path):
    assert repair(str(tmp_path / "nothing")) is None
    assert repair("s3://bucket/study/grid") is None
    assert not keep_good_copy(tmp_path)
