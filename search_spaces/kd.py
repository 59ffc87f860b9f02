"""Hinton KD: temperature T and the weight lambda of the KD term, plus the optimiser."""
from search_spaces import register_paper, register_space, suggest_common


@register_paper("kd")
def kd_paper(volume: int | None) -> dict:
    return {"kd_t": 4.0, "lam": 1.0}  # Hinton's T; the paper gives no weight


@register_space("kd", methods=("kd",))
def kd_space(trial, method: str = "kd", volume: int | None = None) -> dict:
    trial.suggest_float("kd_t", 1.0, 8.0)
    trial.suggest_float("lam", 0.1, 10.0, log=True)
    suggest_common(trial)
    return {"method": "kd"}
