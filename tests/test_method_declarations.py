"""A method is one checked declaration. A toy method written here, in a temporary package of its
own (declaration, loss, paper values and space; no file of this project changed), is planned by
`study plan`, trained for a step by the engine and reported with its own column; declarations
that clash with a common key, or lack a piece, are exit 2 from `study plan` before anything runs;
option types come from the annotations; and no module outside a method's own files names a
method."""
from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

import search_spaces
from study.cli import main
from study.config import parse_config
from test_study_config import tiny
from trainables.errors import ConfigError
from trainables.hparams import HParams
from trainables.losses import LOSSES
from trainables.methods import METHODS, check_method, method_names

ROOT = Path(__file__).resolve().parents[1]

TOY = {
    "__init__.py": "",
    "method.py": '''
        from dataclasses import dataclass, field
        from typing import Literal

        from trainables.hparams import check
        from trainables.methods import declare_method


        @dataclass(frozen=True)
        class ToyOptions:
            gain: float | None = field(default=None, metadata={"label": "toy gain"})  # None: 1
            mode: Literal["mse", "l1"] = "mse"
            stages: tuple[int, ...] = ()

            def validate(self, where):
                if self.gain is not None:
                    check(self, where, positive=("gain",))


        declare_method("toy", options=ToyOptions, unlabeled_rows=True, ablatable=("gain", "lam"),
                       loss="{pkg}.loss", space="{pkg}.space")
        ''',
    "loss.py": '''
        import torch.nn.functional as F

        from trainables.losses.base import DistillTerm
        from trainables.losses.registry import register_loss


        @register_loss("toy")
        class Toy(DistillTerm):
            """The student's logits against the teacher's, times `gain`."""

            def forward(self, student, teacher, labels, index):
                target = teacher.logits.detach() * (self.opt.gain or 1.0)
                fn = F.mse_loss if self.opt.mode == "mse" else F.l1_loss
                return fn(student.logits, target)
        ''',
    "space.py": '''
        from search_spaces import register_paper, register_space, suggest_common


        @register_paper("toy")
        def toy_paper(volume):
            return {"lam": 0.5, "gain": 2.0}


        @register_space("toy", methods=("toy",))
        def toy_space(trial, method="toy", volume=None):
            trial.suggest_float("lam", 0.1, 1.0, log=True)
            suggest_common(trial)
            return {"method": "toy"}
        ''',
}


def _forget(name: str, package: str) -> None:
    """Undo a test package's declarations, so that the registries are as the project has them."""
    METHODS.pop(name, None)
    LOSSES.pop(name, None)
    search_spaces.PAPER.pop(name, None)
    for space in [s for s, ms in search_spaces.SPACE_METHODS.items() if ms == (name,)]:
        search_spaces.SPACES.pop(space, None)
        search_spaces.SPACE_METHODS.pop(space, None)
    search_spaces.SPACE_METHODS["paper"] = tuple(search_spaces.PAPER)
    for module in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[module]


def _package(tmp_path: Path, package: str, files: dict[str, str]) -> None:
    root = tmp_path / "pkgs" / package
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text).replace("{pkg}", package))
    if str(tmp_path / "pkgs") not in sys.path:
        sys.path.insert(0, str(tmp_path / "pkgs"))


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy method, declared from its own temporary package for one test."""
    _package(tmp_path, "toy_method_pkg", TOY)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    import importlib
    importlib.import_module("toy_method_pkg.method")
    yield "toy"
    _forget("toy", "toy_method_pkg")


def _write(tmp_path: Path, **overrides) -> Path:
    raw = tiny(tmp_path / "d", **overrides)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_toy_method_is_planned_trained_and_reported_with_no_project_file_changed(toy, tmp_path):
    path = _write(tmp_path, **{"students.methods": ["vt", "toy"], "students.hparams": {"epochs": 1, "toy": {"gain": 3}},
                               "sweep": {"spaces": {"toy": "toy"}, "trials": 2, "volumes": [10]},
                               "ablations": {"vary": {"toy.lam": [0.1, 1]}}})
    result = CliRunner().invoke(main, ["plan", str(path), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "r->test_efficientnet / toy / 10 img: a search of 2 trials" in result.output
    assert "r->test_efficientnet / toy / 10 img / lam in [0.1, 1.0]: 6 runs (3 per value)" in result.output
    assert not (tmp_path / "w").exists()  # nothing written
    cfg = parse_config(yaml.safe_load(path.read_text()), str(path), tmp_path / "w")
    from study.plan_view import plan_stages
    grid = dict((s, cells) for s, cells, _ in plan_stages(cfg))["grid"]
    toy_cell = next(c for c in grid if c.tags.method == "toy")
    assert toy_cell.hp.options.gain == 3.0 and toy_cell.hp.lam == 0.5  # user over paper, typed once
    assert "gain" not in next(c for c in grid if c.tags.method == "vt").hparams  # its section reaches it alone

    # trained for a step by the engine, with its own loss term
    from trainables.engine import ImageSet, train_student
    from trainables.models import create_model
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    train = ImageSet(images, torch.arange(8) % 2)
    student, teacher = create_model("test_resnet"), create_model("test_resnet")
    before = [p.detach().clone() for p in student.parameters()]
    hp = HParams.from_dict({"method": "toy", "epochs": 1, "batch_size": 8, "gain": "2.5", "mode": "l1"})
    result = train_student(student, [teacher], train, None, hp, device="cpu")
    assert result.history and all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))

    # reported: its own column, compared with VT
    from analysis.tables import build_cells, comparisons
    rows = [{"run_id": f"{m}{s}", "status": "FINISHED", "stage": "grid", "source": "synthetic", "method": m,
             "volume": "10", "pair": "r->s" if m != "vt" else "->s", "teachers": "r" if m != "vt" else "",
             "student": "s", "seed": s, "arch": "s", "hparams_from": "sweep", "test_rows": "abc",
             "test_acc": 0.6 + 0.1 * (m == "toy") + 0.01 * s, "test_auc": 0.7} for m in ("vt", "toy") for s in range(3)]
    cells = build_cells(pd.DataFrame(rows))
    assert set(cells["method"]) == {"vt", "toy"}
    comp = comparisons(cells)
    row = comp[(comp["a"] == "toy") & (comp["b"] == "vt") & (comp["metric"] == "acc")].iloc[0]
    assert row["mean_diff"] == pytest.approx(0.1)
    from analysis.render import method_name
    assert method_name("toy") == "TOY"


def test_option_types_come_from_the_annotations(toy):
    hp = HParams.from_dict({"method": "toy", "gain": "0.5", "mode": "l1", "stages": "(1, 3)"})
    assert (hp.options.gain, hp.options.mode, hp.options.stages) == (0.5, "l1", (1, 3))
    assert HParams.from_dict({"method": "toy", "gain": None}).options.gain is None
    assert HParams.from_dict({"method": "toy", "gain": "None"}).options.gain is None  # as MLflow logs it
    assert HParams.from_dict({"method": "toy", "stages": [2]}).options.stages == (2,)
    for value, match in (("abc", r"gain='abc' is not a valid float \| None"), ("-1", "gain=-1.0 must be > 0")):
        with pytest.raises(ConfigError, match=match):
            HParams.from_dict({"method": "toy", "gain": value})
    with pytest.raises(ConfigError, match=r"mode='l2' is not one of \['mse', 'l1'\]"):
        HParams.from_dict({"method": "toy", "mode": "l2"})
    with pytest.raises(ConfigError, match=r"stages=\['a'\] is not a valid list of int"):
        HParams.from_dict({"method": "toy", "stages": ["a"]})
    hp = HParams.from_dict({"method": "toy", "gain": 2})
    assert HParams.from_dict({**{k: str(v) for k, v in hp.to_dict().items()}}) == hp  # MLflow's strings read back


BROKEN = {
    "clash": ('''
        from dataclasses import dataclass
        from trainables.methods import declare_method

        @dataclass(frozen=True)
        class Opts:
            lr: float = 0.1

        declare_method("clashy", options=Opts, loss="{pkg}.loss", space="{pkg}.space")
        ''', "clashy", r"option\(s\) \['lr'\] are named like common hyperparameters"),
    "no-loss": ('''
        from trainables.methods import declare_method
        declare_method("lossless", loss="{pkg}.nosuch", space="{pkg}.space")
        ''', "lossless", r"its loss module '.*\.nosuch' does not exist: write it, with @register_loss\('lossless'\)"),
    "no-space": ('''
        from trainables.methods import declare_method
        declare_method("spaceless", loss="{pkg}.loss", space="{pkg}.nosuch")
        ''', "spaceless", r"no paper values or no search space for it in '.*\.nosuch'"),
    "bad-type": ('''
        from dataclasses import dataclass
        from trainables.methods import declare_method

        @dataclass(frozen=True)
        class Opts:
            table: dict = None

        declare_method("typeless", options=Opts, loss="{pkg}.loss", space="{pkg}.space")
        ''', "typeless", r"option 'table' of Opts is annotated .*dict.*which a config cannot give"),
    "bad-ablatable": ('''
        from trainables.methods import declare_method
        declare_method("ablateless", ablatable=("nope",), loss="{pkg}.loss", space="{pkg}.space")
        ''', "ablateless", r"ablatable=\['nope'\] are not options of it"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_an_incomplete_or_clashing_method_is_exit_2_from_plan_before_anything_runs(case, tmp_path, monkeypatch):
    text, name, match = BROKEN[case]
    package = f"broken_{case.replace('-', '_')}"
    _package(tmp_path, package, {"__init__.py": "", "method.py": text, "loss.py": "", "space.py": ""})
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    import importlib
    try:
        importlib.import_module(f"{package}.method")
        with pytest.raises(ConfigError, match=match):
            check_method(name)
        path = _write(tmp_path, **{"students.methods": ["vt", name], "sweep": {}, "grid": {"hparams": "paper"}})
        result = CliRunner().invoke(main, ["plan", str(path), "--workdir", str(tmp_path / "w")])
        assert result.exit_code == 2 and "students.methods[1]" in result.output, result.output
        assert not (tmp_path / "w").exists()
    finally:
        _forget(name, package)


def test_every_project_method_is_complete():
    for name in method_names():
        check_method(name)


# the files a method owns: its declaration, its loss term, its paper values and space
def _own_files(name: str) -> set[Path]:
    spec = METHODS[name]
    return {ROOT / (module.replace(".", "/") + ".py") for module in (spec.module, spec.loss, spec.space)}


def test_no_module_outside_a_methods_own_files_names_a_method():
    """A string literal equal to a method's name, in study/, analysis/, trainables/ or
    search_spaces/ outside that method's own three files, is something knowing the method by
    name; what a method can do is asked of its declaration instead."""
    found = []
    for folder in ("study", "analysis", "trainables", "search_spaces"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in METHODS:
                    if path not in _own_files(node.value):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert found == []
