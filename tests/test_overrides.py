"""`study run CONFIG --set KEY=VALUE`: dotted keys into the YAML, YAML values, applied before
validation; errors name the override and exit 2; the parent run records the effective config
and `--resume` refuses another one, naming each difference."""
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from study.cli import main
from study.config import SECTIONS, check_same_config, load_config, recorded_text
from study.config_reader import ABSENT, apply_overrides, config_diff, parse_override
from trainables.errors import ConfigError


def write(tmp_path: Path, root: Path, **students) -> Path:
    raw = {
        "name": "ov",
        "data": {"kind": "synthetic", "root": str(root), "num_images": 480, "size": 32, "seed": 0,
                 "image_size": 32},
        "teachers": [{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 1}}],
        "students": {"pairs": ["r->test_resnet"], "methods": ["vt", "ckd"], "volumes": [10], "seeds": [0],
                     "hparams": {"epochs": 1}, **students},
        "grid": {"hparams": "paper"},
    }
    path = tmp_path / "ov.yaml"
    path.write_text("# a study for the override tests\n" + yaml.safe_dump(raw, sort_keys=False))
    return path


# --- parsing and applying ----------------------------------------------------------------------

@pytest.mark.parametrize("text,key,value", [
    ("students.seeds=[0,1,2]", ("students", "seeds"), [0, 1, 2]),
    ("data.root=/data/ffpp", ("data", "root"), "/data/ffpp"),
    ("students.hparams.tau=0.1", ("students", "hparams", "tau"), 0.1),
    ("grid.enabled=false", ("grid", "enabled"), False),
    ("sweep.max_eval_per_class=", ("sweep", "max_eval_per_class"), None),
    ("description=a=b", ("description",), "a=b"),  # the first '=' ends the key
    ("students.hparams={lr: 0.01, epochs: 3}", ("students", "hparams"), {"lr": 0.01, "epochs": 3}),
])
def test_a_value_is_read_as_yaml(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("text,match", [
    ("students.seeds", "write --set KEY=VALUE"),
    ("=3", "write --set KEY=VALUE"),
    ("students..seeds=[0]", "write --set KEY=VALUE"),
    ("students.seeds=[0,1", "the value is not valid YAML"),
    ("name=!!python/object/apply:os.system ['echo hi']", "not valid YAML"),
    ("students.hparams={lr: 1, lr: 2}", "duplicate key 'lr'"),
])
def test_a_malformed_override_is_named(text, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse_override(text)
    assert str(err.value).startswith(f"--set {text}: ")


def test_overrides_set_nested_keys_in_a_copy_in_order():
    raw = {"name": "a", "students": {"seeds": [0], "hparams": {"lr": 0.1}}}
    out = apply_overrides(raw, ["students.seeds=[0,1,2]", "students.hparams.tau=0.5", "name=b", "name=c",
                                "resources.gpu=0.5"], SECTIONS)
    assert out == {"name": "c", "students": {"seeds": [0, 1, 2], "hparams": {"lr": 0.1, "tau": 0.5}},
                   "resources": {"gpu": 0.5}}  # a section the file leaves out is created
    assert raw == {"name": "a", "students": {"seeds": [0], "hparams": {"lr": 0.1}}}  # untouched
    assert apply_overrides(raw, [], SECTIONS) is raw


@pytest.mark.parametrize("text,match", [
    ("studnets.seeds=[0]", r"'studnets' is not a section of a study config; sections are \["),
    ("seeds=[0]", "'seeds' is not a section"),
    ("students.hparams.tau=0.1", "the config has no mapping 'students.hparams' to set 'tau' in"),
    ("data.extra.depth=2", "the config has no mapping 'data.extra'"),
    ("students.seeds.first=1", "students.seeds is a list, not a mapping: set it whole"),
    ("name.first=x", "name is the value 'a', not a mapping"),
])
def test_a_path_outside_the_config_is_an_error_naming_the_override(text, match):
    raw = {"name": "a", "data": {"kind": "synthetic"}, "students": {"seeds": [0]}}
    with pytest.raises(ConfigError, match=match) as err:
        apply_overrides(raw, [text], SECTIONS)
    assert str(err.value).startswith(f"--set {text}: ")


# --- through validation ------------------------------------------------------------------------

def test_the_config_is_validated_with_its_overrides(tmp_path):
    path = write(tmp_path, tmp_path / "d")
    plain = load_config(path, tmp_path)
    cfg = load_config(path, tmp_path, ["students.seeds=[0,1,2]", f"data.root={tmp_path / 'e'}",
                                       "students.hparams.lr=0.01", "students.hparams.ckd.tau=0.2"])
    assert cfg.students.seeds == (0, 1, 2) and cfg.data["root"] == str(tmp_path / "e")
    # a method's section the file leaves out is made by --set
    assert cfg.students.hparams == {"epochs": 1, "lr": 0.01, "ckd": {"tau": 0.2}}
    assert cfg.raw["students"]["seeds"] == [0, 1, 2] and cfg.overrides[0] == "students.seeds=[0,1,2]"
    assert cfg.config_hash != plain.config_hash and plain.overrides == ()
    assert load_config(path, tmp_path, ["students.seeds=[0]"]).config_hash == plain.config_hash


@pytest.mark.parametrize("override,match", [
    ("students.seeds=[-1]", r"^--set students.seeds=\[-1\]: .*ov.yaml: students.seeds\[0\]=-1: must be a non-negative"),
    ("students.seedz=[1]", r"^--set students.seedz=\[1\]: .*unknown key\(s\) \['students.seedz'\]"),
    ("students.hparams.ckd.tau=-0.5", r"^--set students.hparams.ckd.tau=-0.5: .*students.hparams.ckd: tau=-0.5 must be > 0"),
    ("students.hparams.ckd.tauu=1", r"^--set students.hparams.ckd.tauu=1: .*unknown option\(s\) \['tauu'\] of method 'ckd'"),
    ("students.hparams.tau=0.5", r"^--set students.hparams.tau=0.5: .*give it in the method's own section.*"
                                 r"--set students.hparams.ckd.tau=0.5"),
    ("students.methods=[vt, dkd]", r"^--set students.methods=\[vt, dkd\]: .*students.methods\[1\]='dkd'"),
    ("resources.gpu=-1", r"^--set resources.gpu=-1: .*resources.gpu=-1"),
    ("name=a b", r"^--set name=a b: .*name='a b'"),
])
def test_a_bad_value_fails_validation_naming_the_override(override, match, tmp_path):
    path = write(tmp_path, tmp_path / "d")
    with pytest.raises(ConfigError, match=match):
        load_config(path, tmp_path, ["students.seeds=[0,1]", override])


def test_an_error_of_the_file_alone_names_no_override(tmp_path):
    path = write(tmp_path, tmp_path / "d", volumes=[11])
    with pytest.raises(ConfigError) as err:
        load_config(path, tmp_path, ["students.seeds=[0,1]"])
    assert "--set" not in str(err.value) and r"students.volumes[0]=11" in str(err.value)
    cfg = load_config(path, tmp_path, ["students.volumes=[10]"])  # and an override can fix it
    assert cfg.students.volumes == (10,)


@pytest.mark.parametrize("overrides,match", [
    (["studnets.seeds=[0,1]"], "--set studnets.seeds=[0,1]: 'studnets' is not a section"),
    (["students.seeds=[0,1"], "--set students.seeds=[0,1: the value is not valid YAML"),
    (["data.root=/data/ffpp", "students.seeds=[-3]"], "--set students.seeds=[-3]: "),
    (["students.seeds"], "--set students.seeds: write --set KEY=VALUE"),
])
def test_cli_exits_2_naming_the_override_and_writes_nothing(overrides, match, tmp_path):
    path = write(tmp_path, tmp_path / "d")
    work = tmp_path / "work"
    args = ["run", str(path), "--workdir", str(work)]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"error: {match}" in result.output
    assert not work.exists()


# --- what the parent run records, and --resume ---------------------------------------------------

def test_the_parent_run_records_the_effective_config(tmp_path):
    path = write(tmp_path, tmp_path / "d")
    plain = load_config(path, tmp_path)
    assert recorded_text(plain) == path.read_text()  # the file as written, comments and all
    cfg = load_config(path, tmp_path, ["students.seeds=[0,1,2]", "data.root=/data/ffpp x"])
    text = recorded_text(cfg)
    assert yaml.safe_load(text) == cfg.raw
    assert text.splitlines()[0] == f"# {path} with --set 'students.seeds=[0,1,2]' --set 'data.root=/data/ffpp x'"


def test_config_diff_names_each_leaf_by_its_dotted_key():
    old = {"name": "a", "students": {"seeds": [0], "hparams": {"lr": 0.1}}, "sweep": {"trials": 4}}
    new = {"name": "a", "students": {"seeds": [0, 1, 2], "hparams": {"lr": 0.1, "tau": 0.5}}, "grid": {}}
    assert config_diff(old, new) == [
        ("grid", ABSENT, {}),
        ("students.hparams.tau", ABSENT, 0.5),
        ("students.seeds", [0], [0, 1, 2]),
        ("sweep", {"trials": 4}, ABSENT),
    ]
    assert config_diff(old, old) == []


def test_resume_with_other_overrides_shows_the_difference(tmp_path):
    path = write(tmp_path, tmp_path / "d")
    started = load_config(path, tmp_path, ["students.seeds=[0,1,2]"])
    recorded = yaml.safe_load(recorded_text(started))
    check_same_config(load_config(path, tmp_path, ["students.seeds=[0,1,2]"]), recorded, started.config_hash, "p1")
    now = load_config(path, tmp_path, ["students.seeds=[0,1]", "students.hparams.lr=0.01"])
    with pytest.raises(ConfigError) as err:
        check_same_config(now, recorded, started.config_hash, "p1")
    text = str(err.value)
    assert "parent run p1" in text and "Resume with the same file and --set options" in text
    assert "  students.hparams.lr: (absent) -> 0.01" in text
    assert "  students.seeds: [0, 1, 2] -> [0, 1]" in text
    # a parent run without a readable config: its config_hash tag decides
    check_same_config(started, None, started.config_hash, "p1")
    with pytest.raises(ConfigError, match=r"\(config hash\): '[0-9a-f]{16}' -> '[0-9a-f]{16}'"):
        check_same_config(now, None, started.config_hash, "p1")
    check_same_config(now, None, None, "p1")  # nothing recorded to compare with


def test_cli_resume_with_other_overrides_exits_2_before_any_trial(tmp_path, synthetic_root):
    """Against a parent run recorded as `study run` records it; no Ray is started."""
    from study.tracking import Tracking

    path = write(tmp_path, synthetic_root)
    work = tmp_path / "work"
    started = load_config(path, work, ["students.seeds=[0,1,2]"])
    tracking = Tracking(started.tracking_uri, started.name)
    tracking.start_parent(started.config_hash, recorded_text(started), "test")
    (work / "ray").mkdir(parents=True)

    result = CliRunner().invoke(main, ["run", str(path), "--workdir", str(work), "--resume",
                                       "--set", "students.seeds=[0,1]"])
    assert result.exit_code == 2, result.output
    assert "students.seeds: [0, 1, 2] -> [0, 1]" in result.output
    # the same overrides pass the check (and everything before Ray: the data serves every volume)
    from study.runner import RunOptions, StudyRunner

    StudyRunner(load_config(path, work, ["students.seeds=[0,1,2]"]),
                RunOptions(workdir=work, resume=True)).check()
    # without --resume the message gives the command to continue, with the same overrides
    refused = CliRunner().invoke(main, ["run", str(path), "--workdir", str(work), "--set", "students.seeds=[0,1,2]"])
    assert refused.exit_code == 2 and "--resume --workdir" in refused.output
    assert "--set 'students.seeds=[0,1,2]'" in refused.output
    assert not list((work / "ray").iterdir())  # no trial was started


@pytest.mark.slow
def test_a_real_run_records_its_overrides_and_resume_holds_to_them(tmp_path, synthetic_root):
    """One tiny VT trial on a real local Ray: the parent run's study.yaml is the effective
    config; --resume with other overrides is refused, with the same ones it finds nothing to do."""
    import subprocess
    import sys

    from analysis.store import downloaded, open_existing
    from study.tracking import Tracking

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "data": {"kind": "synthetic", "root": str(synthetic_root), "num_images": 480, "size": 32,
                                 "seed": 0, "image_size": 32},
        "students": {"pairs": ["test_resnet"], "methods": ["vt"], "volumes": [10], "seeds": [0],
                     "hparams": {"epochs": 1}},
        "grid": {"hparams": "paper"}, "resources": {"cpu": 1}}))
    work = tmp_path / "w"

    def study(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "study.cli", "run", str(path), "--workdir", str(work),
                               "--quiet", *args], capture_output=True, text=True, timeout=600)

    first = study("--set", "students.seeds=[1]", "--set", "students.hparams.min_steps=2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    client = open_existing(f"sqlite:///{work / 'mlflow.db'}")
    parent = Tracking(client.tracking_uri, "tiny").parent_run()
    with downloaded(client, parent.info.run_id, "study.yaml") as recorded:
        effective = yaml.safe_load(recorded.read_text())
    assert effective["students"]["seeds"] == [1] and effective["students"]["hparams"]["min_steps"] == 2
    assert parent.data.tags["config_hash"] == load_config(
        path, work, ["students.seeds=[1]", "students.hparams.min_steps=2"]).config_hash

    other = study("--resume", "--set", "students.seeds=[1]")
    assert other.returncode == 2, other.stderr[-3000:]
    assert "students.hparams.min_steps: 2 -> (absent)" in other.stderr
    same = study("--resume", "--set", "students.seeds=[1]", "--set", "students.hparams.min_steps=2")
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
