"""SP (Tung & Mori 2019): the weight lambda of the similarity-preserving term, plus the optimiser.

SP has no options of its own. Its authors (and RepDistiller, beta = 3000) weight it
heavily because on CIFAR feature maps it is tiny; on our pooled penultimate features
it is larger, so lambda is set from what it measures here. Measured at init of the
student against a test_resnet teacher trained 150 steps on the synthetic task (32 px,
mean of 6 batches; test_resnet and mobilenetv3_small_050 students):
    batch 10: SP 0.019-0.078; batch 24: 0.013-0.044; batch 32: 0.011-0.035
    (it shrinks about as 1/B; it is at most 4/B), against CE 0.74-1.8,
    KD (lambda 1, T 4) 1.5-3.7 and CKD x 0.1 (its paper lambda) 0.40-0.60.
"""
from search_spaces import register_paper, register_space, suggest_common

# lambda * SP ~ CE at init: at the paper's batch 24, 30 * (0.013 .. 0.044) = 0.41 .. 1.3
# against CE 0.69 (0.56 .. 2.3 at batch 10, 0.33 .. 1.0 at batch 32). Its gradient on the
# student features is then 0.1-0.6x the CE's at batch 24 (30 * 0.0016 / 0.084 for test_resnet,
# 30 * 0.0078 / 2.4 for mobilenetv3; 0.1-1.3x over batches 10-32), as KD's at lambda 1 is 1-2x
# and CKD's at 0.1 is 0.1-0.7x. RepDistiller's 3000 would make it 40-130, all of the loss.
SP_LAM = 30.0
SP_LAM_RANGE = (3.0, 300.0)  # two orders of magnitude around SP_LAM


@register_paper("sp")
def sp_paper(volume: int | None) -> dict:
    return {"lam": SP_LAM}  # measured (above); the authors' beta is for CIFAR feature maps


@register_space("sp", methods=("sp",))
def sp_space(trial, method: str = "sp", volume: int | None = None) -> dict:
    trial.suggest_float("lam", *SP_LAM_RANGE, log=True)
    suggest_common(trial)
    return {"method": "sp"}
