"""Fig. 3: GradCAM++ heatmaps of a recorded checkpoint on real and fake images.

The run's `model/model.pt` artifact (grid and teacher runs keep one) is loaded into
`create_model(param arch)`; GradCAM++ (`pytorch_grad_cam`, PyPI `grad-cam`) sees the
logits only, at the last convolutional block of the backbone (one rule per timm family,
else the last Conv2d whose output is still spatial at the run's image size).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from trainables.data.images import load_images
from trainables.engine import pick_device, to_input
from trainables.errors import UserError
from trainables.models import Detector, create_model

MODEL_ARTIFACT = "model/model.pt"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
LABELS = {"real": 0, "fake": 1}
TARGETS = ("label", "predicted", "fake", "real")
# timm model class -> its last conv blocks, preferred first ("x.*": the children of x, last first);
# the first whose output is still spatial (H, W > 1) at the run's image size is used
FAMILY_LAYERS = {
    "ResNet": ("layer4", "layer3", "layer2", "layer1"),  # resnet*, resnext*, test_resnet
    "EfficientNet": ("conv_head", "blocks.*"),  # efficientnet_*, test_efficientnet: conv_head before pooling
    "MobileNetV3": ("blocks.*",),  # its conv_head comes after pooling (1x1)
    "Xception": ("conv4", "block12", "block11"),  # legacy_xception
    "ConvNeXt": ("stages.*",),
    "RegNet": ("s4", "s3", "s2", "s1"),
}


class LogitsOnly(nn.Module):
    """GradCAM wants `model(x) -> logits`; a Detector returns (features, logits)."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, x: Tensor) -> Tensor:
        return self.detector(x)[1]


def _output_shapes(model: Detector, image_size: int) -> dict[str, tuple[int, ...]]:
    """Output shape of every backbone module on one blank image of `image_size`."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module, inputs, output):
            if isinstance(output, Tensor):
                shapes[name] = tuple(output.shape)
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in model.backbone.named_modules() if n]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _candidates(backbone: nn.Module) -> list[str]:
    out = []
    for path in FAMILY_LAYERS.get(type(backbone).__name__, ()):
        if path.endswith(".*"):
            parent = backbone.get_submodule(path[:-2])
            out += [f"{path[:-2]}.{n}" for n, _ in reversed(list(parent.named_children()))]
        elif hasattr(backbone, path):
            out.append(path)
    return out


def target_layer(model: Detector, image_size: int) -> tuple[str, nn.Module]:
    """(name in the backbone, module) of the layer GradCAM++ reads."""
    backbone = model.backbone
    shapes = _output_shapes(model, image_size)

    def spatial(name: str) -> bool:
        shape = shapes.get(name, ())
        return len(shape) == 4 and shape[-1] * shape[-2] > 1

    for name in _candidates(backbone):
        if spatial(name):
            return name, backbone.get_submodule(name)
    convs = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d) and n in shapes]
    if not convs:
        raise UserError(f"model {model.name} has no Conv2d layer: GradCAM++ needs a convolutional backbone")
    name = ([n for n in convs if spatial(n)] or convs)[-1]
    return name, backbone.get_submodule(name)


def find_images(folder: Path, per_class: int) -> list[tuple[Path, str]]:
    """Up to `per_class` images per label (a `real` or `fake` folder on their path), spread evenly."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--images {folder} is not a folder")
    by_label: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        parts = [q.lower() for q in path.relative_to(folder).parts[:-1]] + [folder.name.lower()]
        label = next((q for q in parts if q in LABELS), "")
        by_label.setdefault(label, []).append(path)
    if not by_label:
        raise UserError(f"--images {folder} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    out = []
    for label in sorted(by_label, key=lambda lab: (lab == "", lab != "real")):  # real, fake, unlabelled
        paths = by_label[label]
        idx = np.unique(np.linspace(0, len(paths) - 1, min(per_class, len(paths))).round().astype(int))
        out += [(paths[i], label) for i in idx]
    return out


@dataclass
class Explanation:
    run_id: str
    arch: str
    image_size: int
    layer: str
    out: Path
    table: pd.DataFrame  # image, label, target, p_fake, file
    files: list[Path] = field(default_factory=list)


def load_run_model(uri: str, run_id: str, device: torch.device) -> tuple[Detector, str, int, str]:
    """(model, arch, image_size, run label) of a run with a `model/model.pt` artifact."""
    from analysis.store import downloaded, open_existing

    client = open_existing(uri)
    try:
        run = client.get_run(run_id)
    except Exception:
        raise UserError(f"run {run_id} not found at tracking URI {uri}") from None
    params, label = run.data.params, run.data.tags.get("cell", run_id)
    if "arch" not in params or "image_size" not in params:
        raise UserError(f"run {run_id} ({label}) has no 'arch'/'image_size' params: not a trial run of a study")
    arch, size = params["arch"], int(params["image_size"])
    try:
        with downloaded(client, run_id, MODEL_ARTIFACT) as path:
            model = create_model(arch, weights=path)
    except FileNotFoundError:
        raise UserError(f"run {run_id} ({label}) has no artifact {MODEL_ARTIFACT}: only grid and "
                        "teacher runs keep their model; pick one of those") from None
    return model.to(device).eval(), arch, size, label


def explain_run(uri: str, run_id: str, images: str | Path, out: str | Path, per_class: int = 4,
                target: str = "label", device: str = "cpu") -> Explanation:
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from PIL import Image

    if target not in TARGETS:
        raise UserError(f"--target {target!r}: one of {list(TARGETS)}")
    dev = pick_device(device)
    model, arch, size, label = load_run_model(uri, run_id, dev)
    chosen = find_images(Path(images), per_class)
    pixels = load_images([p for p, _ in chosen], size)  # uint8 (N, 3, S, S)
    x = to_input(pixels, dev)
    wrapped = LogitsOnly(model).eval()
    with torch.no_grad():
        logits = wrapped(x)
    p_fake = torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()
    predicted = logits.argmax(1).cpu().tolist()
    classes = [_target_class(target, lab, pred) for (_, lab), pred in zip(chosen, predicted)]
    layer_name, layer = target_layer(model, size)
    with GradCAMPlusPlus(model=wrapped, target_layers=[layer]) as cam:
        masks = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])  # (N, S, S)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rgb = pixels.permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0  # (N, S, S, 3)
    rows, files = [], []
    for i, ((path, lab), mask) in enumerate(zip(chosen, masks)):
        overlay = show_cam_on_image(rgb[i], mask, use_rgb=True)  # uint8 (S, S, 3)
        file = out / f"{i:02d}_{lab or 'image'}_{path.stem}.png"
        Image.fromarray(overlay).save(file)
        files.append(file)
        rows.append({"image": str(path), "label": lab, "target": "fake" if classes[i] else "real",
                     "p_fake": float(p_fake[i]), "file": file.name})
    table = pd.DataFrame(rows)
    table.to_csv(out / "heatmaps.csv", index=False)
    files.append(out / "heatmaps.csv")
    files.append(_grid(rgb, masks, table, out / "fig3_gradcam.png", f"{label} ({arch}, {layer_name})"))
    return Explanation(run_id, arch, size, layer_name, out, table, files)


def _target_class(target: str, label: str, predicted: int) -> int:
    if target in LABELS:
        return LABELS[target]
    if target == "label" and label in LABELS:
        return LABELS[label]
    return int(predicted)


def _grid(rgb: np.ndarray, masks: np.ndarray, table: pd.DataFrame, path: Path, title: str) -> Path:
    """Fig. 3: per image, the image above its heatmap; titled label and p(fake)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(table)
    fig = Figure(figsize=(1.6 * n + 0.4, 3.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False)
    for i, row in enumerate(table.itertuples()):
        axes[0, i].imshow(rgb[i])
        axes[0, i].set_title(f"{row.label or '?'}\np(fake)={row.p_fake:.2f}", fontsize=7)
        axes[1, i].imshow(rgb[i])
        axes[1, i].imshow(masks[i], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[1, i].set_title(f"CAM: {row.target}", fontsize=7)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle(f"Fig. 3: GradCAM++, {title}", fontsize=8)
    fig.savefig(path)
    return path
