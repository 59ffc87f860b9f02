"""The cross-dataset table and the transfer-set cells, on runs frames made by hand (MLflow-shaped
runs through `analysis.runs.runs_frame`: no store, no training); every number computed here."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
from scipy import stats as sps

from analysis import cross, report
from analysis.render import markdown_table
from analysis.runs import StudyRuns, runs_frame
from analysis.tables import build_cells, comparisons, views

XX, XE = "xception->xception", "xception->efficientnet"
ARCH = {"xception": "legacy_xception", "efficientnet": "efficientnet_b0"}


def _run(stage, method, volume, seed, metrics, *, pair=XX, source="Deepfakes", params=None, tags=None):
    """One finished trial as MLflow returns it: string tags and params, float metrics."""
    teachers, student = pair.rsplit("->", 1)
    distils = method != "vt"
    rid = f"{stage}-{source}-{pair}-{method}-{volume}-{seed}-{sorted((params or {}).items())}"
    all_tags = {"stage": stage, "source": source, "method": method, "student": student, "seed": str(seed),
                "volume": str(volume), "cell": rid, "teachers": teachers if distils else "", "pair": pair,
                "trial_id": rid, "test_rows": "rows-in", **(tags or {})}
    all_params = {"arch": ARCH[student], **(params or {})}
    _run.clock += 1
    return SimpleNamespace(info=SimpleNamespace(run_id=rid, status="FINISHED", start_time=_run.clock,
                                                end_time=_run.clock + 1),
                           data=SimpleNamespace(tags=all_tags, params={k: str(v) for k, v in all_params.items()},
                                                metrics=metrics))


_run.clock = 0
EVAL = {"evaluate": "celebdf", "video_rule": "mean", "frames_per_video": 32}


def _scored(test_auc, auc, video_auc, dataset="celebdf"):
    return {"test_auc": test_auc, f"cross_{dataset}_auc": auc, f"cross_{dataset}_video_auc": video_auc,
            f"cross_{dataset}_n": 500.0}


def _cross_runs(pair=XX, source="Deepfakes", dataset="celebdf", params=EVAL):
    """VT [.66 .71 .60] and KD [.70 .74] on the evaluation set (frame AUC), seeds 0-2 / 0-1, and the
    teacher of the student's architecture."""
    rows = {"cross_" + dataset + "_rows": "rows-x"}
    student = pair.rsplit("->", 1)[1]
    return runs_frame([
        _run("teachers", "vt", "full", 0, _scored(0.99, 0.75, 0.78, dataset), pair=f"->{student}", source=source,
             params=params, tags={**rows, "teacher_name": student}),
        *(_run("grid", "vt", 100, s, _scored(t, a, v, dataset), pair=pair, source=source, params=params, tags=rows)
          for s, (t, a, v) in enumerate([(0.90, 0.66, 0.70), (0.91, 0.71, 0.75), (0.80, 0.60, 0.61)])),
        *(_run("grid", "kd", 100, s, _scored(t, a, v, dataset), pair=pair, source=source, params=params, tags=rows)
          for s, (t, a, v) in enumerate([(0.90, 0.70, 0.72), (0.92, 0.74, 0.80)])),
    ])


def _cell(cells, method, metric, volume="100", pair=XX):
    sel = cells[(cells["method"] == method) & (cells["metric"] == metric) & (cells["volume"] == volume)
                & (cells["pair"] == pair)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_cross_cell_mean_std_over_two_seeds():
    ct = cross.cross_tables(_cross_runs())
    assert ct.datasets == ["celebdf"]
    kd = _cell(ct.cells, "kd", "cross_celebdf_auc")
    assert kd["n"] == 2 and kd["mean"] == pytest.approx(0.72)
    assert kd["std"] == pytest.approx(math.sqrt(2 * 0.02 ** 2))  # (0.70, 0.74): deviations ±0.02, ddof 1
    video = _cell(ct.cells, "kd", "cross_celebdf_video_auc")
    assert video["mean"] == pytest.approx(0.76) and video["std"] == pytest.approx(math.sqrt(2 * 0.04 ** 2))
    assert _cell(ct.cells, "kd", "test_auc")["mean"] == pytest.approx(0.91)
    full = _cell(ct.cells, "vt", "cross_celebdf_auc", volume="full")  # the teacher of the student's arch
    assert full["n"] == 1 and full["mean"] == pytest.approx(0.75)
    long = cross.long_frame(ct).set_index(["method", "volume", "dataset", "metric"])
    assert list(cross.long_frame(ct).columns)[:10] == ["source", "pair", "method", "volume", "dataset", "metric",
                                                        "n", "mean", "std", "published"]
    assert long.loc[("kd", "100", "celebdf", "auc"), "mean"] == pytest.approx(0.72)
    assert long.loc[("kd", "100", "celebdf", "video_auc"), "n"] == 2
    assert long.loc[("kd", "100", "Deepfakes", "test_auc"), "mean"] == pytest.approx(0.91)  # in domain
    md = "\n".join(cross.markdown(ct))
    # the published column sits beside the frame AUC (legacy_xception, FF++ Deepfakes -> celebdf)
    assert "| 100 | xception→xception | KD | 0.910 ± 0.014 (2) | 0.720 ± 0.028 (2) | 0.7365 (Δ -0.017) " \
           "| 0.760 ± 0.057 (2) |" in md


def test_paired_kd_minus_vt_on_cross_auc():
    ct = cross.cross_tables(_cross_runs())
    comp = cross.comparisons_frame(ct).set_index(["dataset", "metric", "a", "b"])
    row = comp.loc[("celebdf", "auc", "kd", "vt")]
    diffs = [0.70 - 0.66, 0.74 - 0.71]  # seeds 0 and 1; VT's seed 2 has no KD partner
    mean = sum(diffs) / 2
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs)) / math.sqrt(2)  # sample sd (ddof 1) / √2
    assert row["n"] == 2 and row["mean_diff"] == pytest.approx(0.035)
    half = sps.t.ppf(0.975, 1) * se
    assert row["low"] == pytest.approx(mean - half) and row["high"] == pytest.approx(mean + half)
    assert row["p"] == pytest.approx(2 * sps.t.sf(mean / se, 1))
    # a family of its own per dataset and level: the one frame-AUC comparison is not adjusted
    assert row["p_holm"] == pytest.approx(row["p"])
    video = comp.loc[("celebdf", "video_auc", "kd", "vt")]
    assert video["mean_diff"] == pytest.approx(((0.72 - 0.70) + (0.80 - 0.75)) / 2)
    assert set(comp.index.get_level_values("metric")) == {"auc", "video_auc"}  # no in-domain comparison
    assert "0.035" in "\n".join(cross.markdown(ct))


def test_published_number_only_for_xception_ffpp_to_celebdf():
    ct = cross.cross_tables(pd.concat([_cross_runs(XX), _cross_runs(XE)], ignore_index=True))
    long = cross.long_frame(ct)
    auc = long[long["metric"] == "auc"].set_index(["pair", "method", "volume"])
    assert auc.loc[(XX, "kd", "100"), "published"] == 0.7365
    assert auc.loc[(XX, "vt", "full"), "published"] == 0.7365  # the legacy_xception teacher
    assert math.isnan(auc.loc[(XE, "kd", "100"), "published"])  # an efficientnet_b0 student
    assert long[long["metric"] != "auc"]["published"].isna().all()  # frame AUC only
    md = "\n".join(cross.markdown(ct))
    assert "celebdf AUC, DeepfakeBench (Δ ours)" in md and "| 0.7365 (Δ -0.080) |" in md  # VT: 0.6567 - 0.7365
    # another source, or another evaluation dataset: no published column
    for runs in (_cross_runs(XX, source="synthetic"),
                 _cross_runs(XX, dataset="dfdc", params={**EVAL, "evaluate": "dfdc"})):
        other = cross.cross_tables(runs)
        assert cross.long_frame(other)["published"].isna().all()
        assert "DeepfakeBench (Δ ours)" not in "\n".join(cross.markdown(other))
    assert [cross.arch_family(a) for a in ("xception41", "legacy_xception", "tf_efficientnet_b4_ns",
                                           "efficientnet_b4.ra2_in1k", "efficientnet_b0")] == \
        ["xception", "xception", "efficientnet_b4", "efficientnet_b4", "efficientnet_b0"]
    assert cross.published("FF++", "tf_efficientnet_b4", "celeb_df_v2") == 0.7487


def test_video_rule_line_under_the_table():
    md = "\n".join(cross.markdown(cross.cross_tables(_cross_runs())))
    assert "- video rule: mean, frames per video: 32\n" in md
    assert "- celebdf: 500 frames scored, rows digest `rows-x`" in md
    mixed = pd.concat([_cross_runs(), _cross_runs(XE, params={**EVAL, "video_rule": "max", "frames_per_video": 8})],
                      ignore_index=True)
    md = "\n".join(cross.markdown(cross.cross_tables(mixed)))
    assert "- video rule: mean, frames per video: 32 (6 runs)" in md
    assert "- video rule: max, frames per video: 8 (6 runs)" in md


def _study(runs: pd.DataFrame) -> StudyRuns:
    return StudyRuns("sqlite:////nowhere/mlflow.db", "hand", "1", runs, None)


def _report(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "load_study", lambda uri, study: _study(runs))
    rep = report.build_report("sqlite:////nowhere/mlflow.db", "hand", tmp_path, formats=("md", "csv", "tex"))
    return rep, (tmp_path / "report.md").read_text(), {p.name for p in tmp_path.iterdir()}


def test_no_section_without_cross_metrics(tmp_path, monkeypatch):
    plain = runs_frame([_run("grid", m, 100, s, {"test_auc": 0.8 + 0.01 * s, "test_acc": 0.7})
                        for m in ("vt", "kd") for s in (0, 1)])
    assert cross.cross_tables(plain) is None
    rep, md, files = _report(plain, tmp_path / "plain", monkeypatch)
    assert "Cross-dataset" not in md and not any(f.startswith("cross_") for f in files)
    assert "transfer" not in rep.cells  # no transfer column either: cells.csv as before
    rep, md, files = _report(_cross_runs(), tmp_path / "cross", monkeypatch)
    assert "## Cross-dataset evaluation" in md
    assert {"cross_dataset.csv", "cross_comparisons.csv", "cross_dataset.tex"} <= files
    tex = (tmp_path / "cross" / "cross_dataset.tex").read_text()
    assert r"0.720 $\pm$ 0.028 (2)" in tex and r"xception$\to$xception" in tex


def test_transfer_runs_form_their_own_marked_cell(tmp_path, monkeypatch):
    transfer = {"transfer": "train_unlabeled:2000"}
    runs = runs_frame([
        *(_run("grid", "vt", 100, s, {"test_acc": a}, pair=XE) for s, a in enumerate([0.80, 0.82])),
        *(_run("grid", "kd", 100, s, {"test_acc": a}, pair=XE) for s, a in enumerate([0.81, 0.84])),
        *(_run("grid", "kd", 100, s, {"test_acc": a}, pair=XE, params=transfer) for s, a in enumerate([0.90, 0.94])),
        _run("grid", "kd", 100, 0, {"test_acc": 0.50}, pair=XE, params={"transfer": "sbi:200"}),
    ])
    cells = build_cells(runs)
    kd = _cell(cells, "kd", "acc", pair=XE)
    assert kd["values"] == pytest.approx((0.81, 0.84)) and kd["transfer"] == ""  # never pooled with the others
    assert kd["paper"] == 0.865  # the paper's setting (Table I, FF++ Deepfakes)
    own = _cell(cells, "kd+train_unlabeled:2000", "acc", pair=XE)
    assert own["n"] == 2 and own["mean"] == pytest.approx(0.92) and own["transfer"] == "train_unlabeled:2000"
    assert math.isnan(own["paper"])  # not the paper's setting: no paper number beside it
    assert _cell(cells, "kd+sbi:200", "acc", pair=XE)["values"] == pytest.approx((0.50,))
    view = views(cells)[0]
    assert view.methods == ["vt", "kd", "kd+train_unlabeled:2000", "kd+sbi:200"]
    md = markdown_table(view)
    assert "| KD+train_unlabeled:2000 |" in md and "**0.920 ± 0.028 (2)** §" in md
    assert "0.825 ± 0.021 (2) · paper" in md and "0.825 ± 0.021 (2) §" not in md
    comp = comparisons(cells).set_index(["a", "b"])
    tv = comp.loc[("kd+train_unlabeled:2000", "vt")]
    assert tv["n"] == 2 and tv["mean_diff"] == pytest.approx(((0.90 - 0.80) + (0.94 - 0.82)) / 2)
    assert comp.loc[("kd", "vt")]["mean_diff"] == pytest.approx(((0.81 - 0.80) + (0.84 - 0.82)) / 2)
    _, report_md, _ = _report(runs, tmp_path, monkeypatch)
    assert "§ distilled with an unlabeled transfer set (train_unlabeled:2000, sbi:200)" in report_md
    assert "KD+train_unlabeled:2000 - VT" in report_md
