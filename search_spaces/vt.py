"""Vanilla training: only the optimiser's knobs."""
from search_spaces import register_space, suggest_common


@register_space("vt", methods=("vt",))
def vt_space(trial, method: str = "vt", volume: int | None = None) -> dict:
    suggest_common(trial)
    return {"method": "vt"}
