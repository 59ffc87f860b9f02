import pytest
import torch

from trainables.errors import ConfigError, UserError
from trainables.models import ALIASES, create_model, resolve_name, save_checkpoint


def test_aliases_map_to_the_papers_families():
    import timm

    assert set(ALIASES) == {"xception", "efficientnet", "mobilenet"}  # the paper's three families
    for family in ALIASES:
        timm_name = resolve_name(family)
        assert family in timm_name and timm.is_model(timm_name)  # a real timm model of that family
    assert resolve_name("test_resnet") == "test_resnet"  # a timm name is taken as it is


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'"):
        resolve_name("resnet9000")


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "mobilenetv3_small_050"])
def test_forward_gives_features_and_two_logits(name):
    model = create_model(name).eval()
    z, logits = model(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, model.feature_dim) and logits.shape == (2, 2)
    # logits are the classifier applied to z (z is the representation, not the logits)
    assert torch.allclose(model.backbone.get_classifier()(z), logits)


def test_weights_round_trip_and_bad_files(tmp_path):
    a = create_model("test_resnet")
    path = tmp_path / "a.pt"
    digest = save_checkpoint(a, path)
    b = create_model("test_resnet", weights=path)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k
    assert len(digest) == 64
    # a timm backbone checkpoint with an ImageNet head: head skipped, rest loaded
    backbone = {k.removeprefix("backbone."): v for k, v in a.state_dict().items()}
    backbone["fc.weight"] = torch.zeros(1000, backbone["fc.weight"].shape[1])
    backbone["fc.bias"] = torch.zeros(1000)
    torch.save({"state_dict": backbone}, tmp_path / "timm.pth")
    c = create_model("test_resnet", weights=tmp_path / "timm.pth")
    assert torch.equal(c.backbone.conv1[0].weight, a.backbone.conv1[0].weight)

    with pytest.raises(UserError, match="does not fit architecture"):
        create_model("test_efficientnet", weights=path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt cannot be loaded"):
        create_model("test_resnet", weights=tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UserError, match="does not hold a state dict"):
        create_model("test_resnet", weights=tmp_path / "list.pt")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="weights_only=True"):
        create_model("test_resnet", weights=tmp_path / "evil.pt")
