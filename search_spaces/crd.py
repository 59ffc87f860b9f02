"""CRD as published: tau, lambda (RepDistiller's beta) and K, plus the optimiser."""
from search_spaces import K_CHOICES, register_paper, register_space, suggest_common

CRD_LAM = 0.8  # RepDistiller's beta for CRD


@register_paper("crd")
def crd_paper(volume: int | None) -> dict:
    return {"tau": 0.07, "lam": CRD_LAM, "k": 4096}


@register_space("crd", methods=("crd",))
def crd_space(trial, method: str = "crd", volume: int | None = None) -> dict:
    trial.suggest_float("tau", 0.02, 0.5, log=True)
    trial.suggest_float("lam", 0.08, 8.0, log=True)
    trial.suggest_categorical("k", [*K_CHOICES, 1024, 4096])
    suggest_common(trial)
    return {"method": "crd"}
