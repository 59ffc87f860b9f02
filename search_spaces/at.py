"""Attention transfer: its weight lambda (the authors' beta) and the power p, plus the optimiser."""
from search_spaces import register_paper, register_space, suggest_common

# the authors' and RepDistiller's beta = 1000. The AT term is a mean over B * H * W entries of the
# squared differences of unit-norm maps, so it is small: at 64 px, for untrained test_resnet,
# test_efficientnet and mobilenetv3_small_050 students against a test_resnet teacher, its sum
# over stages 1-4 was 0.004-0.05 (0.0003-0.04 a stage, batch 24), so lambda * AT is 4-50 at init
# against CE 0.7: RepDistiller's CIFAR maps (32 px) give terms of the same size.
AT_LAM = 1000.0


@register_paper("at")
def at_paper(volume: int | None) -> dict:
    return {"lam": AT_LAM, "p": 2.0}


@register_space("at", methods=("at",))
def at_space(trial, method: str = "at", volume: int | None = None) -> dict:
    trial.suggest_float("lam", AT_LAM / 30, AT_LAM * 10, log=True)
    trial.suggest_categorical("p", [1.0, 2.0, 4.0])
    suggest_common(trial)
    return {"method": "at"}
