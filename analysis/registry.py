"""`study report --register`: the best student of each table cell into the MLflow Model Registry.

A cell (source, pair, method, volume) holds one run per seed. The one registered is the run
with the highest validation metric (`SELECT_BY`, val_acc; ties: the lowest seed): choosing
on test would make its test numbers optimistic. Its model version is tagged with the cell's
test metrics as the tables report them, mean and std over the seeds (`test_acc_mean`, …),
and with how it was chosen. Name: `<study>-<source>-<student>-<method>-<volume>`; when two
cells of different teachers would share a name, both get `-<teachers>` after the student.
A VT cell is shared by every pair of its student: registered once. Teachers (`full`) are not
students: left out.

Registering again adds no version for a run already registered under the name: its tags are
brought up to date (a study given more seeds since). Torch-free, as the rest of `analysis/`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from analysis.store import open_existing
from analysis.tables import METRICS
from trainables.errors import UserError
from trainables.record import FULL

SELECT_BY = "val_acc"
COLUMNS = ["name", "version", "run_id", "seed", SELECT_BY, "status", "note"]


@dataclass(frozen=True)
class Candidate:
    name: str
    run_id: str
    seed: int
    selected: float
    tags: dict[str, str]


def _name(*parts: str) -> str:
    """A registered model name: MLflow refuses '/' and ':'."""
    return "-".join(str(p).replace("/", "_").replace(":", "_") for p in parts)


def candidates(study: str, cells: pd.DataFrame, runs: pd.DataFrame) -> list[Candidate]:
    """The run to register for each student cell of the tables (see module docstring)."""
    if cells.empty:
        return []
    acc = cells[(cells["metric"] == "acc") & (cells["volume"] != FULL)].copy()
    acc["runs_key"] = acc["run_ids"].map(lambda ids: tuple(sorted(ids)))
    acc = acc.drop_duplicates(["source", "method", "volume", "runs_key"])  # VT of every pair; Table III's singles
    by_run = runs.set_index("run_id")
    teachers = [str(by_run.at[ids[0], "teachers"]) if ids and ids[0] in by_run.index else ""
                for ids in acc["runs_key"]]
    base = [_name(study, r.source, r.student, r.method, r.volume) for r in acc.itertuples()]
    clash = pd.Series(base).duplicated(keep=False).tolist()
    out = []
    for cell, name, own, clashes in zip(acc.itertuples(), base, teachers, clash):
        if clashes:
            name = _name(study, cell.source, cell.student, own, cell.method, cell.volume)
        pool = by_run.loc[[r for r in cell.runs_key if r in by_run.index]]
        if pool.empty:
            continue
        score = pd.to_numeric(pool[SELECT_BY], errors="coerce") if SELECT_BY in pool else \
            pd.Series(math.nan, index=pool.index)
        order = pd.DataFrame({"score": score.fillna(-math.inf), "seed": pool["seed"]}).sort_values(
            ["score", "seed"], ascending=[False, True], kind="stable")
        run_id = order.index[0]  # no validation metric at all: the lowest seed
        selected = float(score.loc[run_id])
        out.append(Candidate(name, run_id, int(by_run.at[run_id, "seed"]), selected,
                             _tags(study, cell, cells, own, run_id, int(by_run.at[run_id, "seed"]), selected)))
    return out


def _tags(study: str, cell, cells: pd.DataFrame, teachers: str, run_id: str, seed: int,
          selected: float) -> dict[str, str]:
    same = cells[(cells["block"] == cell.block) & (cells["volume"] == cell.volume) & (cells["pair"] == cell.pair)
                 & (cells["method"] == cell.method)]
    tags = {"study": study, "source": cell.source, "pair": cell.pair if teachers else f"->{cell.student}",
            "teachers": teachers, "student": cell.student, "method": cell.method, "volume": str(cell.volume),
            "run_id": run_id, "seed": str(seed),
            "selected_by": f"highest {SELECT_BY} of the cell's seeds (ties: lowest seed)",
            f"selected_{SELECT_BY}": _num(selected), "n_seeds": str(int(cell.n)),
            "seeds": ",".join(str(s) for s in cell.seeds)}
    for row in same.itertuples():
        column = METRICS.get(row.metric, f"test_{row.metric}")
        tags[f"{column}_mean"], tags[f"{column}_std"] = _num(row.mean), _num(row.std)
    return tags


def _num(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.6g}"


def register(uri: str, experiment_id: str, chosen: list[Candidate],
             ensure_model: Callable[[Any, str], str] | None = None) -> pd.DataFrame:
    """Create (or bring up to date) a model version per candidate; one row each (COLUMNS).
    `ensure_model(client, run_id)`, when given, makes the MLflow model of a run that has none
    yet and returns its id (grid trials export theirs when first needed: the caller's
    study.logged_model.ensure_logged_model); an error there skips that candidate, saying why."""
    client = open_existing(uri)
    models = _logged_models(client, experiment_id)
    rows = []
    for c in chosen:
        row = {"name": c.name, "version": "", "run_id": c.run_id, "seed": c.seed, SELECT_BY: c.selected}
        model_id = models.get(c.run_id)
        if model_id is None and ensure_model is not None:
            try:
                model_id = ensure_model(client, c.run_id)
            except Exception as exc:  # noqa: BLE001  (named in the row: the other candidates go on)
                rows.append({**row, "status": "skipped", "note": f"its MLflow model could not be made from "
                                                                f"model/model.pt: {str(exc)[:200]}"})
                continue
        if model_id is None:
            rows.append({**row, "status": "skipped", "note": "the run has no MLflow model (recorded before models "
                                                            "were logged, or its export failed): not registered"})
            continue
        try:
            version, status, note = _register_one(client, uri, c, model_id)
        except Exception as exc:
            raise UserError(f"registering {c.name} (run {c.run_id}) at {uri} failed: {exc.__class__.__name__}: "
                            f"{str(exc)[:300]}") from None
        rows.append({**row, "version": version, "status": status, "note": note})
    return pd.DataFrame(rows, columns=COLUMNS)


def _register_one(client, uri: str, c: Candidate, model_id: str) -> tuple[str, str, str]:
    if not client.search_registered_models(filter_string=f"name = '{_quote(c.name)}'"):
        client.create_registered_model(c.name, description="The best seed (on validation) of a ckd-study table "
                                                           "cell; the cell's mean and std over seeds in its tags.")
    existing = [v for v in client.search_model_versions(f"name = '{_quote(c.name)}'") if v.run_id == c.run_id]
    if existing:
        version = existing[0].version
        for key, value in c.tags.items():
            client.set_model_version_tag(c.name, version, key, value)
        return str(version), "updated", "already registered: tags brought up to date"
    # MLflow's SQL registry looks the logged model up through the *global* tracking URI (a TODO in
    # mlflow/store/model_registry/sqlalchemy_store.py): point it at this store while it does
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(uri):
        v = client.create_model_version(c.name, source=f"models:/{model_id}", run_id=c.run_id, tags=c.tags,
                                        model_id=model_id)
    return str(v.version), "registered", ""


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def _logged_models(client, experiment_id: str) -> dict[str, str]:
    """run id -> model id of its READY logged model (the newest; a run's model is named after its
    cell, study/logged_model.py, or `model` in studies recorded before)."""
    found, token = {}, None
    while True:
        page = client.search_logged_models([experiment_id], page_token=token)
        for m in sorted(page, key=lambda m: m.creation_timestamp):
            if m.source_run_id and str(m.status).endswith("READY"):
                found[m.source_run_id] = m.model_id
        token = page.token
        if not token:
            return found
