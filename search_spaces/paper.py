"""The paper's fixed hyperparameters as a space of constants (nothing is searched).

tau 0.05, lambda 0.1, batch 24, K 32; with 10 training images batch 10 and K 10.
KD and RKD weights are not given by the paper: Hinton's T = 4 with lambda 1, RKD's
own 25/50 weights with lambda 1 (CRD's and Park et al.'s defaults).
"""
from search_spaces import register_space

SMALL_VOLUME = 10  # at and below this the paper uses batch 10 and K 10


@register_space("paper", methods=("vt", "kd", "rkd", "ckd"))
def paper_space(trial, method: str = "ckd", volume: int | None = None) -> dict:
    small = volume is not None and volume <= SMALL_VOLUME
    out = {"method": method, "batch_size": 10 if small else 24}
    if method == "ckd":
        out.update(tau=0.05, lam=0.1, k=10 if small else 32)
    elif method == "kd":
        out.update(kd_t=4.0, lam=1.0)
    elif method == "rkd":
        out.update(rkd_distance_w=25.0, rkd_angle_w=50.0, lam=1.0)
    return out
