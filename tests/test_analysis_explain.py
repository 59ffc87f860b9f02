"""Fig. 3: GradCAM++ heatmaps of a recorded test_resnet checkpoint on a few 32x32 images."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from analysis.explain import find_images, target_layer
from trainables.errors import UserError
from trainables.models import create_model
from test_analysis_store import store  # noqa: F401  (fixture)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        (tmp_path / "faces" / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "faces" / label / f"{i}.png")
    return tmp_path / "faces"


def test_heatmaps_are_written(store, images, tmp_path):
    from analysis.explain import explain_run

    out = tmp_path / "cam"
    result = explain_run(store["uri"], store["teacher"], images, out, per_class=2)
    assert (result.arch, result.image_size) == ("test_resnet", 32)
    assert result.layer == "layer3"  # layer4 is 1x1 at 32 px: the last spatial stage instead
    table = result.table
    assert table["label"].tolist() == ["real", "real", "fake", "fake"]
    assert table["target"].tolist() == ["real", "real", "fake", "fake"]  # --target label
    assert table["p_fake"].between(0, 1).all()
    for name in table["file"]:
        with Image.open(out / name) as img:
            assert img.size == (32, 32) and img.mode == "RGB"
    grid = out / "fig3_gradcam.png"
    assert grid.is_file() and grid.stat().st_size > 5_000
    assert (out / "heatmaps.csv").is_file()


def test_run_without_model_is_a_clear_error(store, images, tmp_path):
    from analysis.explain import explain_run

    with pytest.raises(UserError, match="has no artifact model/model.pt"):
        explain_run(store["uri"], store["curve"], images, tmp_path / "cam")


def test_target_layer_per_family():
    assert target_layer(create_model("test_resnet"), 64)[0] == "layer4"
    assert target_layer(create_model("test_efficientnet"), 64)[0] == "conv_head"
    assert target_layer(create_model("mobilenetv3_small_050"), 64)[0].startswith("blocks.")


def test_find_images_labels_and_errors(images, tmp_path):
    found = find_images(images, per_class=5)
    assert [lab for _, lab in found] == ["real"] * 3 + ["fake"] * 3
    with pytest.raises(UserError, match="holds no image"):
        find_images(_empty(tmp_path), 1)
    with pytest.raises(UserError, match="is not a folder"):
        find_images(tmp_path / "nope", 1)


def _empty(tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"
