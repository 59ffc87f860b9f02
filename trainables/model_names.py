"""Model aliases: the paper's families and the timm models that stand for them (the paper
leaves the variant open). Torch-free, so that reading a study's results needs no torch."""
ALIASES = {
    "xception": "legacy_xception",
    "efficientnet": "efficientnet_b0",
    "mobilenet": "mobilenetv3_large_100",
}


def timm_models() -> frozenset[str]:
    """Every model name the installed timm registers, read from a list cached per timm version
    (`~/.cache/ckd-study/timm-<version>-models.txt`, or under $XDG_CACHE_HOME), so that checking a
    config's model names imports neither timm nor torch; the first call makes the list (a few
    seconds: it imports timm)."""
    import importlib.metadata
    import os
    from pathlib import Path

    version = importlib.metadata.version("timm")
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ckd-study"
    path = root / f"timm-{version}-models.txt"
    try:
        names = path.read_text().split()
        if names:
            return frozenset(names)
    except OSError:
        pass
    import timm

    names = timm.list_models()
    try:  # written whole, then renamed: a reader never sees half a list
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(names) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # a read-only home: the next call imports timm again
    return frozenset(names)


def is_timm_model(name: str) -> bool:
    """timm's `is_model`, torch-free: `name` (an alias, or a timm name with an optional `.tag`
    suffix) is a registered architecture."""
    arch = ALIASES.get(name, name).split(".")[0]
    return arch in timm_models()
