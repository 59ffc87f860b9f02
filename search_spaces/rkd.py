"""RKD: the distance and angle weights (Park et al. use 25 and 50), plus the optimiser."""
from search_spaces import register_paper, register_space, suggest_common


@register_paper("rkd")
def rkd_paper(volume: int | None) -> dict:
    return {"rkd_distance_w": 25.0, "rkd_angle_w": 50.0, "lam": 1.0}  # Park et al.'s weights


@register_space("rkd", methods=("rkd",))
def rkd_space(trial, method: str = "rkd", volume: int | None = None) -> dict:
    trial.suggest_float("rkd_distance_w", 1.0, 100.0, log=True)
    trial.suggest_float("rkd_angle_w", 1.0, 200.0, log=True)
    suggest_common(trial)
    return {"method": "rkd", "lam": 1.0}  # the weights already scale the term
