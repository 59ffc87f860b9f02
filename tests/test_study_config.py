from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from study.cli import CONFIG_DIR, main
from study.config import load_config, parse_config
from study.plan import grid_cells, paper_hparams, teacher_cells
from trainables.errors import ConfigError
from trainables.trial import TeacherRef

SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def tiny(root: Path, **overrides) -> dict:
    cfg = {
        "name": "t",
        "data": {"kind": "synthetic", "root": str(root), "num_images": 480, "size": 32, "seed": 0,
                 "image_size": 32},
        "teachers": [{"name": "r", "arch": "test_resnet", "hparams": {"epochs": 2}}],
        "students": {"pairs": ["r->test_efficientnet"], "methods": ["vt", "ckd"], "volumes": [10],
                     "seeds": [0], "hparams": {"epochs": 2}},
        "sweep": {"spaces": {"ckd": "ckd"}, "trials": 2, "volumes": [10]},
        "grid": {"untuned": ["vt"]},  # VT takes the paper's values beside the swept CKD (marked in tables)
    }
    for key, value in overrides.items():
        section, _, sub = key.partition(".")
        if sub:
            cfg[section][sub] = value
        else:
            cfg[section] = value
    return cfg


def test_shipped_configs_are_the_expected_set():
    assert {p.stem for p in SHIPPED} >= {"quickstart", "ffpp_table1", "celebdf_table2",
                                          "celebdf_ensemble_table3", "ablation_k", "data_efficiency"}


def shipped_raw(path: Path, tmp_path: Path) -> dict:
    """A shipped config's YAML; real datasets are not here: their root is an empty folder."""
    raw = yaml.safe_load(path.read_text())
    for data in [raw["data"], *raw.get("evaluate", {}).get("datasets", [])]:
        if data["kind"] != "synthetic":
            data["root"] = str(tmp_path)
        if "json" in data:
            data["json"] = str(tmp_path / Path(data["json"]).name)
            Path(data["json"]).write_text("{}")
    return raw


def shipped_config(path: Path, tmp_path: Path):
    """A shipped config, parsed (`shipped_raw`)."""
    return parse_config(shipped_raw(path, tmp_path), str(path), tmp_path)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_validates(path, tmp_path):
    cfg = shipped_config(path, tmp_path)
    assert cfg.name == path.stem
    assert teacher_cells(cfg) or not cfg.teachers


def test_paper_configs_use_the_papers_hyperparameters(tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "ffpp_table1.yaml").read_text())
    raw["data"]["root"] = str(tmp_path)
    cfg = parse_config(raw, "ffpp_table1.yaml", tmp_path)
    assert cfg.image_size == 299 and cfg.grid.hparams == "paper"
    teachers = {(s, t.name): TeacherRef(t.arch, "x.pt") for s, _ in cfg.source_specs() for t in cfg.teachers}
    cells = grid_cells(cfg, teachers, {})
    # 4 sources x (3 pairs x 3 distillation methods + 3 VT students (one per distinct student)) x 3 volumes x 5 seeds
    assert len(cells) == 4 * (3 * 3 + 3) * 3 * 5
    ckd10 = next(c for c in cells if c.tags.method == "ckd" and c.tags.volume == 10)
    assert (ckd10.hparams["tau"], ckd10.hparams["lam"], ckd10.hparams["batch_size"], ckd10.hparams["k"]) == (0.05, 0.1, 10, 10)
    assert paper_hparams("ckd", 1000)["k"] == 32


@pytest.mark.parametrize("override,match", [
    ({"colour": 1}, r"unknown key\(s\) \['colour'\]"),
    ({"students.volumes": [0]}, r"students.volumes\[0\]=0: must be a positive even integer"),
    ({"students.volumes": [11]}, r"students.volumes\[0\]=11"),
    ({"students.methods": ["vt", "dkd"]}, r"students.methods\[1\]='dkd'"),
    ({"students.pairs": ["r->resnet9000"]}, "unknown model 'resnet9000'"),
    ({"students.pairs": ["q->test_resnet"]}, "teacher 'q' is not among teachers"),
    ({"students.hparams": {"ckd": {"k": 0}}}, "k=0 must be > 0"),
    ({"students.hparams": {"ckd": {"tau": -0.1}}}, "tau=-0.1 must be > 0"),
    ({"students.hparams": {"ckd": {"tau": "low"}}}, "tau='low' is not a valid float"),
    # a method's option given flat: refused, with the nested form to write instead
    ({"students.hparams": {"tau": 0.1}}, r"students.hparams.tau: 'tau' is an option of ckd and crd, not a common "
                                         r"hyperparameter: .*students.hparams: \{ckd: \{tau: 0.1\}\} "
                                         r"\(on the command line: --set students.hparams.ckd.tau=0.1\)"),
    ({"students.hparams": {"ckd": {"lr": 0.1}}}, r"unknown option\(s\) \['lr'\] of method 'ckd'.*\['lr'\] are common"),
    ({"students.hparams": {"ckd": {"kd_t": 2.0}}}, r"unknown option\(s\) \['kd_t'\] of method 'ckd'"),
    ({"students.hparams": {"ckd": 3}}, r"students.hparams.ckd: 3 must be a mapping of ckd's options"),
    ({"sweep": {"spaces": {"ckd": "nope"}}}, "unknown search space"),
    ({"sweep": {"spaces": {"kd": "kd"}}}, "method 'kd' is not in students.methods"),
    ({"sweep": {"spaces": {"ckd": "ckd"}, "metric": "test_acc"}}, "select on validation"),
    ({"ablations": {"k_values": [0, 8]}}, "K must be > 0"),
    ({"ablations": {"vary": {"ckd.k": [0, 8]}}}, "k=0 must be > 0"),
    ({"ablations": {"vary": {"ckd.embed_dim": [64, 128]}}}, r"ablations.vary.ckd.embed_dim=.*not an ablatable option"),
    ({"ablations": {"vary": {"nosuch.k": [4]}}}, r"not an ablatable option: write <method>.<option>, one of \[.*'ckd.k'"),
    ({"ablations": {"vary": {"ckd.k": [4], "ckd.tau": []}}}, r"ablations.vary.ckd.tau=\[\]: give a list of values"),
    ({"ablations": {"vary": {"ckd.k": [4, 4]}}}, "a value is given twice"),
    ({"ablations": {"vary": {"ckd.k": [4]}, "k_values": [8]}}, "give ablations.vary or the older k_values, not both"),
    ({"name": "a b"}, "name='a b'"),
    ({"resources": {"gpu": -1}}, "resources.gpu"),
    ({"resources": {"loader_workers": -1}}, r"resources.loader_workers=-1: must be >= 0"),
    ({"resources": {"loader_workers": 1.5}}, r"resources.loader_workers"),
])
def test_config_errors_name_the_key(override, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        parse_config(tiny(tmp_path / "d", **override), "cfg.yaml", tmp_path)


@pytest.mark.parametrize("ablations,key", [
    ({"k_values": [4, 8], "k_seeds": [0]}, r"ablations.k_seeds=\[0\]"),
    ({"k_values": [4], "k_seeds": [0, 0, 0]}, r"ablations.k_seeds=\[0, 0, 0\]"),  # one seed three times
    ({"efficiency_volumes": [10, 20], "efficiency_seeds": [0, 1]}, r"ablations.efficiency_seeds=\[0, 1\]"),
])
def test_an_ablation_with_points_needs_three_seeds(ablations, key, tmp_path):
    with pytest.raises(ConfigError, match=key + ": give at least 3 different seeds.*a single seed cannot show"):
        parse_config(tiny(tmp_path / "d", ablations=ablations), "cfg.yaml", tmp_path)


def test_ablation_seeds_default_to_three_and_matter_only_with_points(tmp_path):
    cfg = parse_config(tiny(tmp_path / "d", ablations={"k_values": [4], "efficiency_volumes": [10]}), "c.yaml", tmp_path)
    assert cfg.ablations.vary_seeds == (0, 1, 2) and cfg.ablations.efficiency_seeds == (0, 1, 2)
    assert [(v.method, v.option, v.values) for v in cfg.ablations.vary] == [("ckd", "k", (4,))]  # the older k_values
    cfg = parse_config(tiny(tmp_path / "d", ablations={"k_seeds": [0]}), "c.yaml", tmp_path)  # no K ablation
    assert cfg.ablations.vary_seeds == (0,) and not cfg.ablations.vary
    cfg = parse_config(tiny(tmp_path / "d", ablations={"vary": {"ckd.tau": ["0.1", 1]}}), "c.yaml", tmp_path)
    assert cfg.ablations.vary[0].values == (0.1, 1.0)  # typed as the option's annotation says


def test_missing_data_root_is_named(tmp_path):
    raw = tiny(tmp_path)
    raw["data"] = {"kind": "folder", "root": str(tmp_path / "nowhere")}
    with pytest.raises(ConfigError, match=r"data.root=.*nowhere.*does not exist"):
        parse_config(raw, "cfg.yaml", tmp_path)


@pytest.mark.parametrize("text,match", [
    ("name: a\nname: b\n", "duplicate key 'name'"),
    ("name: !!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
    ("name: [unclosed\n", "not valid YAML"),
])
def test_yaml_is_plain_data_only(text, match, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, tmp_path)


def test_cli_exits_2_and_writes_nothing(tmp_path):
    raw = tiny(tmp_path / "d", **{"students.hparams": {"ckd": {"k": -3}}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    work = tmp_path / "work"
    result = CliRunner().invoke(main, ["run", str(path), "--workdir", str(work)])
    assert result.exit_code == 2, result.output
    assert "k=-3 must be > 0" in result.output
    assert not (work / "mlflow.db").exists() and not (work / "ray").exists()


def test_cli_volume_larger_than_data_exits_2_before_any_write(tmp_path, synthetic_root):
    raw = tiny(synthetic_root, **{"students.volumes": [2000]})
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(raw))
    work = tmp_path / "work"
    result = CliRunner().invoke(main, ["run", str(path), "--workdir", str(work)])
    assert result.exit_code == 2, result.output
    assert "volume 2000 needs 1000 real training images" in result.output
    assert not (work / "ray").exists()


def test_unknown_shipped_config_lists_the_shipped_ones(tmp_path):
    result = CliRunner().invoke(main, ["run", "nope", "--workdir", str(tmp_path)])
    assert result.exit_code == 2 and "quickstart" in result.output


def test_initial_weights_reach_the_trial_specs(tmp_path):
    from trainables.models import create_model, save_checkpoint

    w = tmp_path / "imagenet.pt"
    save_checkpoint(create_model("test_efficientnet"), w)
    raw = tiny(tmp_path / "d")
    raw["teachers"][0]["weights"] = str(w)
    raw["students"]["weights"] = {"test_efficientnet": str(w)}
    cfg = parse_config(raw, "cfg.yaml", tmp_path)
    assert teacher_cells(cfg)[0].spec.weights == str(w)
    teachers = {("synthetic", "r"): TeacherRef("test_resnet", "t.pt")}
    assert {c.spec.weights for c in grid_cells(cfg, teachers, {("ckd", 10): {}})} == {str(w)}
    raw["students"]["weights"] = {"test_efficientnet": str(tmp_path / "missing.pt")}
    with pytest.raises(ConfigError, match=r"students.weights.test_efficientnet=.*missing.pt.*does not exist"):
        parse_config(raw, "cfg.yaml", tmp_path)


@pytest.mark.parametrize("kind", ["not_a_state_dict", "other_architecture"])
def test_bad_teacher_checkpoint_exits_2_before_any_write(kind, tmp_path, synthetic_root):
    import torch

    from trainables.models import create_model, save_checkpoint

    ckpt = tmp_path / "teacher.pt"
    if kind == "not_a_state_dict":
        torch.save([1, 2, 3], ckpt)
    else:
        save_checkpoint(create_model("test_efficientnet"), ckpt)  # saved for another architecture
    raw = tiny(synthetic_root, sweep={})
    raw["teachers"][0]["checkpoint"] = str(ckpt)
    raw["grid"] = {"hparams": "paper"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    work = tmp_path / "work"
    result = CliRunner().invoke(main, ["run", str(path), "--workdir", str(work)])
    assert result.exit_code == 2, result.output
    assert "teacher 'r'" in result.output and "teacher.pt" in result.output
    assert not (work / "ray").exists()


def test_unreachable_ray_address_exits_2_in_seconds(tmp_path, synthetic_root):
    import time

    raw = tiny(synthetic_root)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    t0 = time.perf_counter()
    result = CliRunner().invoke(main, ["run", str(path), "--workdir", str(tmp_path / "w"), "--address", "127.0.0.1:1"])
    assert result.exit_code == 2 and "cannot reach Ray at '127.0.0.1:1'" in result.output
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "w").exists()  # nothing written, not even the MLflow DB


def test_teachers_stream_their_split_when_asked_and_the_choice_keeps_the_hash(tmp_path):
    auto = teacher_cells(parse_config(tiny(tmp_path / "d", resources={"loader_workers": 3}), "cfg.yaml", tmp_path))[0]
    assert (auto.spec.stream, auto.spec.loader_workers) == ("auto", 3)
    raw = tiny(tmp_path / "d")
    raw["data"]["stream"] = True
    streamed = teacher_cells(parse_config(raw, "cfg.yaml", tmp_path))[0]
    assert streamed.spec.stream is True
    raw["data"]["stream"] = False
    cfg = parse_config(raw, "cfg.yaml", tmp_path)
    in_memory = teacher_cells(cfg)[0]
    assert in_memory.spec.stream is False and "stream" not in cfg.data  # not a reader key
    # the same pixels either way: a teacher trained one way is reused by the other
    assert in_memory.config_hash == streamed.config_hash
    raw["data"]["stream"] = "yes"
    with pytest.raises(ConfigError, match="data.stream='yes': must be true, false or auto"):
        parse_config(raw, "cfg.yaml", tmp_path)


def test_splits_are_decoded_once_per_node_into_the_studys_storage_by_default(tmp_path):
    cfg = parse_config(tiny(tmp_path / "d"), "cfg.yaml", tmp_path)
    assert cfg.decode_cache == f"{cfg.storage_path}/t/decoded" and cfg.memory_budget == 512 * 2**20
    teachers = {("synthetic", "r"): TeacherRef("test_resnet", "x.pt")}
    chosen = {("ckd", 10): {"tau": 0.1}}
    specs = [teacher_cells(cfg)[0].spec] + [c.spec for c in grid_cells(cfg, teachers, chosen)]
    assert {s.decode_dir for s in specs} == {cfg.decode_cache}
    remote = parse_config(tiny(tmp_path / "d", storage_path="s3://bucket/studies"), "cfg.yaml", tmp_path)
    assert remote.decode_cache == "~/.cache/ckd-study/decoded/t"  # node-local when storage is remote
    raw = tiny(tmp_path / "d")
    raw["data"].update(decode_cache=False, memory_budget="1.5GB")
    off = parse_config(raw, "cfg.yaml", tmp_path)
    assert off.decode_cache is None and off.memory_budget == 1_500_000_000 and "decode_cache" not in off.data
    raw["data"].update(decode_cache="{workdir}/dec", memory_budget=2**20)
    assert parse_config(raw, "cfg.yaml", tmp_path).decode_cache == str((tmp_path / "dec").resolve())
    # how trials read the pixels, not which: a cell's identity does not change
    assert teacher_cells(off)[0].config_hash == teacher_cells(cfg)[0].config_hash


@pytest.mark.parametrize("key,value,match", [
    ("data.memory_budget", "lots", r"data.memory_budget='lots': must be a number of bytes"),
    ("data.memory_budget", -5, r"data.memory_budget=-5"),
    ("data.decode_cache", "s3://b/x", r"data.decode_cache='s3://b/x': must be a local folder"),
    ("resources.memory", "2 parsecs", r"resources.memory='2 parsecs'"),
])
def test_byte_and_folder_settings_name_the_key(key, value, match, tmp_path):
    raw = tiny(tmp_path / "d")
    section, sub = key.split(".")
    raw.setdefault(section, {})[sub] = value
    with pytest.raises(ConfigError, match=match):
        parse_config(raw, "cfg.yaml", tmp_path)


def test_a_trials_memory_request_reaches_rays_scheduler(tmp_path):
    from ray import tune

    from study.runner import trial_resources
    from trainables.tune import train_trial

    cfg = parse_config(tiny(tmp_path / "d", resources={"cpu": 2, "memory": "3GiB"}), "cfg.yaml", tmp_path)
    assert cfg.resources.memory == 3 * 2**30
    resources = trial_resources(cfg.resources)
    bundle = tune.with_resources(train_trial, resources)._resources.required_resources
    assert bundle["memory"] == 3 * 2**30 and bundle["CPU"] == 2
    unset = trial_resources(parse_config(tiny(tmp_path / "d"), "cfg.yaml", tmp_path).resources)
    assert "memory" not in unset


def test_the_sweeps_optuna_storage_defaults_beside_mlflow_db_and_is_checked(tmp_path, synthetic_root):
    cfg = parse_config(tiny(tmp_path / "d"), "c.yaml", tmp_path)
    assert cfg.optuna_storage == f"sqlite:///{tmp_path.resolve() / 'optuna.db'}"
    raw = tiny(tmp_path / "d")
    raw["sweep"]["storage"] = "optuna.db"
    with pytest.raises(ConfigError, match=r"sweep.storage='optuna.db': an SQLAlchemy URL"):
        parse_config(raw, "c.yaml", tmp_path)
    raw = tiny(synthetic_root)
    raw["sweep"]["storage"] = "postgresql://nobody@127.0.0.1:1/optuna"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["run", str(path), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2 and "postgresql://nobody@127.0.0.1:1/optuna cannot be reached" in result.output
    assert not (tmp_path / "w" / "ray").exists()
