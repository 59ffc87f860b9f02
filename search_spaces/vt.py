"""Vanilla training: the optimiser's knobs every space searches (batch size, lr, weight
decay), so that VT is tuned on the same budget and footing as the distillation methods."""
from search_spaces import register_paper, register_space, suggest_common


@register_paper("vt")
def vt_paper(volume: int | None) -> dict:
    return {}  # nothing of its own


@register_space("vt", methods=("vt",))
def vt_space(trial, method: str = "vt", volume: int | None = None) -> dict:
    suggest_common(trial)
    return {"method": "vt"}
