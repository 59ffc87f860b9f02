"""`study report` / `study explain` through click's CliRunner, on the small store."""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from PIL import Image

from study.report_cli import explain, report
from test_analysis_store import store  # noqa: F401  (fixture)


def _invoke(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_report_writes_everything(store, tmp_path):
    out = tmp_path / "rep"
    res = _invoke(report, ["--workdir", store["root"], "--study", "demo", "--out", out, "--curves", store["curve"]])
    assert res.exit_code == 0, res.output
    assert "study 'demo': 34 trial run(s), 6 table cell(s), 33 paper cell(s) missing" in res.output
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "tables.tex", "cells.csv", "comparisons.csv", "paper_missing.csv", "runs.csv",
            "fig2_data_efficiency.png", "fig4_k.png", "fig2_data_efficiency.pdf", "fig4_k.pdf", "study.yaml"} <= names
    assert any(n.startswith("curves_") for n in names)
    md = (out / "report.md").read_text()
    for text in ("# Study report: demo", "code version: `deadbee`", "### Table I: FaceForensics++ Deepfakes (test ACC)",
                 "### Table I: FaceForensics++ Deepfakes (test AUC)", "33 cell(s):", "RuntimeError: boom",
                 "+0.047 [+0.032, +0.061] (n=3)", "+0.050, n/a (1 seed)",
                 "![Ablation of CKD's K (negatives): test accuracy, mean and 95 % interval over seeds (dotted: "
                 "the paper's value, 32); vector version fig4_k.pdf](fig4_k.png)",
                 "```yaml\nname: demo", "git checkout deadbee", f"study report --workdir {store['root']} --study demo"):
        assert text in md, text
    for target in [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]:
        assert (out / target).is_file()
    assert "\\begin{tabular}{llccc}" in (out / "tables.tex").read_text()


def test_report_formats_and_other_sources(store, tmp_path):
    out = tmp_path / "quick"
    res = _invoke(report, ["--tracking-uri", store["uri"], "--study", "quick", "--out", out, "--format", "md"])
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == {"report.md", "study.yaml"}
    md = (out / "report.md").read_text()
    table = md.split("### Table I-like: synthetic (test ACC)")[1].split("###")[0]
    assert "| 100 | resnet→test_efficientnet | 0.720 ± 0.028 (2) | **0.775 ± 0.035 (2)** |" in table
    assert "paper" not in table
    assert "The study ran none of the paper's datasets (sources: synthetic)" in md


def test_unknown_or_empty_study_exits_2(store, tmp_path):
    res = _invoke(report, ["--workdir", store["root"], "--study", "nope", "--out", tmp_path])
    assert res.exit_code == 2
    assert f"error: study 'nope' not found at tracking URI {store['uri']}" in res.output
    res = _invoke(report, ["--workdir", store["root"], "--study", "empty", "--out", tmp_path])
    assert res.exit_code == 2 and "has no trial runs" in res.output
    res = _invoke(report, ["--workdir", tmp_path / "none", "--out", tmp_path])
    assert res.exit_code == 2 and "error: no MLflow store at" in res.output
    res = _invoke(report, ["--workdir", store["root"], "--study", "demo", "--out", tmp_path, "--format", "pdf"])
    assert res.exit_code == 2 and "--format 'pdf'" in res.output


def test_explain_cli(store, tmp_path):
    for label in ("real", "fake"):
        (tmp_path / "img" / label).mkdir(parents=True)
        Image.fromarray(np.full((40, 40, 3), 90 if label == "real" else 160, np.uint8)).save(
            tmp_path / "img" / label / "a.png")
    out = tmp_path / "cam"
    res = _invoke(explain, ["--workdir", store["root"], "--run", store["teacher"], "--images", tmp_path / "img",
                            "--out", out, "--target", "fake"])
    assert res.exit_code == 0, res.output
    assert "test_resnet at 32 px, layer layer3, 2 heatmap(s)" in res.output
    assert (out / "fig3_gradcam.png").is_file() and len(list(out.glob("0*_*.png"))) == 2
    res = _invoke(explain, ["--workdir", store["root"], "--run", "0" * 32, "--images", tmp_path / "img",
                            "--out", out])
    assert res.exit_code == 2 and f"error: run {'0' * 32} not found" in res.output
