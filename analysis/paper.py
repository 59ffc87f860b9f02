"""The paper's numbers (Tables I-III, frame-level accuracy) and how a study's cells map onto them.

`data/paper_tables.csv` is a copy of the paper's tables kept in the package. A cell is
(dataset, subset, volume, METHOD, teachers, student): our `source` tag gives dataset and
subset, methods are upper case there, teachers and students are the family aliases the
shipped configs use.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

FFPP = "FaceForensics++"
CELEBDF = "Celeb-DF"
FFPP_SOURCES = ("FaceSwap", "Face2Face", "Deepfakes", "NeuralTextures")  # the paper's column order
KEY = ["dataset", "subset", "volume", "method", "teachers", "student"]


@lru_cache(maxsize=1)
def paper_table() -> pd.DataFrame:
    """table, dataset, subset, volume ('full' or '10'...), method (lower case), teachers, student, acc."""
    with resources.files("analysis").joinpath("data/paper_tables.csv").open() as f:
        frame = pd.read_csv(f, dtype={"volume": str, "subset": str}, keep_default_na=False)
    frame["method"] = frame["method"].str.lower()
    frame["acc"] = frame["acc"].astype(float)
    return frame


def dataset_of(source: str) -> tuple[str, str] | None:
    """The paper's (dataset, subset) of one of our sources, or None if the paper has no such data."""
    if source in FFPP_SOURCES:
        return FFPP, source
    if source == CELEBDF:
        return CELEBDF, ""
    return None


def table_name(source: str) -> str:
    ds = dataset_of(source)
    if ds is None:
        return f"Table I-like: {source}"
    return f"Table I: {FFPP} {source}" if ds[0] == FFPP else f"Table II: {CELEBDF}"


def paper_cells(sources) -> pd.DataFrame:
    """The paper's cells on the datasets of `sources` (empty if the study ran none of them)."""
    wanted = {dataset_of(s) for s in sources} - {None}
    table = paper_table()
    mask = [(d, s) in wanted for d, s in zip(table["dataset"], table["subset"])]
    return table[mask].reset_index(drop=True)


def paper_lookup() -> dict[tuple, float]:
    """(dataset, subset, volume, method, teachers, student) -> acc (Table III repeats some of II)."""
    table = paper_table()
    return {tuple(row[k] for k in KEY): row["acc"] for _, row in table.iterrows()}
