"""Contrastive KD: tau, lambda, K (Fig. 4 goes to 128), Z mode, negatives, symmetric term."""
from search_spaces import K_CHOICES, register_space, suggest_common


@register_space("ckd", methods=("ckd",))
def ckd_space(trial, method: str = "ckd", volume: int | None = None) -> dict:
    trial.suggest_float("tau", 0.01, 1.0, log=True)
    trial.suggest_float("lam", 0.01, 10.0, log=True)
    trial.suggest_categorical("k", K_CHOICES)
    trial.suggest_categorical("z_mode", ["first_batch", "none", "running"])
    trial.suggest_categorical("negatives", ["opposite_class", "instance"])
    trial.suggest_categorical("symmetric", [False, True])
    suggest_common(trial)
    return {"method": "ckd"}
