"""FitNet hints: the weight lambda of the hint loss (RepDistiller's beta), plus the optimiser."""
from search_spaces import register_paper, register_space, suggest_common

FITNET_LAM = 100.0  # RepDistiller's beta for FitNet (its hint loss is an MSE over every entry of the map)


@register_paper("fitnet")
def fitnet_paper(volume: int | None) -> dict:
    return {"lam": FITNET_LAM}


@register_space("fitnet", methods=("fitnet",))
def fitnet_space(trial, method: str = "fitnet", volume: int | None = None) -> dict:
    trial.suggest_float("lam", FITNET_LAM / 100, FITNET_LAM * 10, log=True)
    suggest_common(trial)
    return {"method": "fitnet"}
