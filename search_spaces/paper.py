"""The paper's fixed hyperparameters as a space of constants (nothing is searched).

Batch 24 (10 with 10 training images), and each method's own values as its space file
registers them (`register_paper`): CKD tau 0.05, lambda 0.1, K 32 (10 with 10 images).
The paper gives no KD or RKD weights: Hinton's T = 4 with lambda 1, RKD's own 25/50
weights with lambda 1 (CRD's and Park et al.'s defaults).
"""
from search_spaces import PAPER, SMALL_VOLUME, register_space


@register_space("paper", methods=tuple(PAPER))  # widened by every register_paper
def paper_space(trial, method: str, volume: int | None = None) -> dict:
    small = volume is not None and volume <= SMALL_VOLUME
    return {"method": method, "batch_size": 10 if small else 24, **PAPER[method](volume)}
