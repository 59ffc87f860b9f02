"""timm model factory: a 2-class detector returning (pooled penultimate features, logits).

`create_model(name)` is the only constructor. Nothing is fetched from a hub: weights
come from a local file, loaded with `weights_only=True`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import timm
import torch
from torch import Tensor, nn

from trainables.errors import ConfigError, UserError
from trainables.model_names import ALIASES

NUM_CLASSES = 2  # real = 0, fake = 1


def resolve_name(name: str) -> str:
    """Map an alias to its timm name; raise ConfigError for an unknown model."""
    timm_name = ALIASES.get(name, name)
    if not timm.is_model(timm_name):
        raise ConfigError(
            f"unknown model {name!r}: use an alias {sorted(ALIASES)} or a timm model name "
            f"(see timm.list_models())"
        )
    return timm_name


class Detector(nn.Module):
    """A timm backbone whose forward gives both the representation z and the logits."""

    def __init__(self, name: str, backbone: nn.Module):
        super().__init__()
        self.name = name
        self.backbone = backbone
        # pre_logits output width: after conv_head for MobileNetV3, num_features elsewhere
        self.feature_dim = int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.backbone.forward_features(x)
        z = self.backbone.forward_head(feats, pre_logits=True)  # (B, D)
        logits = self.backbone.get_classifier()(z)  # (B, 2)
        return z, logits

    @property
    def num_stages(self) -> int:
        """The stages timm's `feature_info` lists (the maps a method may read, 0 the earliest)."""
        return len(self.backbone.feature_info)

    def stage_index(self, stage: int) -> int:
        """`stage` (negative: from the last) as an index into `feature_info`; ConfigError if out of range."""
        n = self.num_stages
        if not -n <= stage < n:
            raise ConfigError(f"stage {stage} is not one of {self.name}'s {n} stages "
                              f"(0..{n - 1}, or -1..-{n} from the last)")
        return stage % n

    def forward_maps(self, x: Tensor, stages: Sequence[int]) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """(z, logits, maps): `forward`'s outputs and the feature maps (B, C, H, W) at `stages`
        (indices into `feature_info`, negative from the last), from one pass of timm's
        `forward_intermediates` (the same z and logits as `forward`)."""
        wanted = [self.stage_index(s) for s in stages]
        take = sorted(set(wanted))
        final, maps = self.backbone.forward_intermediates(x, indices=take)
        z = self.backbone.forward_head(final, pre_logits=True)
        logits = self.backbone.get_classifier()(z)
        at = dict(zip(take, maps))
        return z, logits, tuple(at[i] for i in wanted)


def create_model(name: str, weights: str | Path | None = None, **timm_kwargs) -> Detector:
    timm_name = resolve_name(name)
    backbone = timm.create_model(timm_name, pretrained=False, num_classes=NUM_CLASSES, **timm_kwargs)
    model = Detector(timm_name, backbone)
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: Detector, path: str | Path) -> str:
    """Load a local state dict (ours, a timm backbone's, or wrapped in 'state_dict'/'model').

    A classifier of another shape (e.g. ImageNet's 1000 classes) is skipped; any other
    mismatch is an error naming the file and the architecture. Returns the file's SHA-256.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle with code, corrupt file, not a torch file
        raise UserError(
            f"weights file {path} cannot be loaded as a plain state dict "
            f"(weights_only=True): {exc.__class__.__name__}: {str(exc)[:200]}"
        ) from None
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                state = obj[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"weights file {path} does not hold a state dict of tensors")
    own = model.state_dict()
    if not any(k.startswith("backbone.") for k in state):
        state = {f"backbone.{k}": v for k, v in state.items()}
    classifier = {f"backbone.{n}" for n in _classifier_param_names(model)}
    state = {
        k: v for k, v in state.items()
        if not (k in classifier and k in own and own[k].shape != v.shape)
    }
    missing = [k for k in own if k not in state and k not in classifier]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in state if k in own and own[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        raise UserError(
            f"weights file {path} does not fit architecture {model.name}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}), {len(wrong_shape)} of another shape (e.g. {wrong_shape[:3]}). "
            f"Was it saved for another model?"
        )
    model.load_state_dict(state, strict=False)
    return sha256_file(path)


def _classifier_param_names(model: Detector) -> list[str]:
    clf = model.backbone.get_classifier()
    for mod_name, mod in model.backbone.named_modules():
        if mod is clf:
            return [f"{mod_name}.{p}" for p, _ in mod.named_parameters()]
    return []


def save_checkpoint(model: Detector, path: str | Path) -> str:
    """Save the model's state dict (plain tensors only) and return its SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    return sha256_file(path)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
