"""Contrastive KD: tau, lambda, K (Fig. 4 goes to 128), Z mode, negatives, symmetric term."""
from search_spaces import K_CHOICES, SMALL_VOLUME, register_paper, register_space, suggest_common


@register_paper("ckd")
def ckd_paper(volume: int | None) -> dict:
    small = volume is not None and volume <= SMALL_VOLUME
    return {"tau": 0.05, "lam": 0.1, "k": 10 if small else 32}


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
