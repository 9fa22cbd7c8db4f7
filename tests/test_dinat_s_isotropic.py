"""DiNAT_s and the isotropic NAT / DiNAT / ViT-rpb models: parity with the original code,
the real architectures key for key, offline pretrained loading, and the timm API."""
import json

import pytest
import timm
import torch

import dinat_timm  # noqa: F401
from dinat_timm.models import dinat_s, isotropic
from dinat_timm.models._checkpoint import CheckpointMismatchError

from _helpers import FIXTURES, fixture, serialized

SWIN_SHAPED = fixture("upstream_dinat_s_small.pt")
ISOTROPIC = fixture("upstream_isotropic_small.pt")
MANIFEST = json.loads((FIXTURES / "manifests_upstream.json").read_text())["models"]
FILTER = {"dinat_s_": dinat_s.checkpoint_filter_fn, "isotropic": isotropic.checkpoint_filter_fn}


def dinat_s_kwargs(cfg=SWIN_SHAPED["config"]):
    keys = ("embed_dim", "depths", "num_heads", "kernel_size", "dilations")
    return dict({k: cfg[k] for k in keys}, num_classes=10)


def isotropic_kwargs(cfg=ISOTROPIC["config"]):
    keys = ("embed_dim", "depth", "num_heads", "kernel_size", "dilation", "mlp_ratio", "patch_size")
    return dict({k: cfg[k] for k in keys}, num_classes=10)


def test_dinat_s_parity_via_torch_hub_cache(torch_hub_dir):
    (torch_hub_dir / "checkpoints" / "dinat_s_tiny_in1k_224.pth").write_bytes(serialized(SWIN_SHAPED["state_dict"]))
    model = timm.create_model(
        "dinat_s_tiny", pretrained=True, pretrained_cfg_overlay=dict(num_classes=10), **dinat_s_kwargs()
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(SWIN_SHAPED["input"]), SWIN_SHAPED["logits"], atol=1e-4, rtol=0)
        features = model.forward_head(model.forward_features(SWIN_SHAPED["input"]), pre_logits=True)
    torch.testing.assert_close(features, SWIN_SHAPED["features"], atol=1e-4, rtol=0)


def test_isotropic_parity_via_torch_hub_cache(torch_hub_dir):
    (torch_hub_dir / "checkpoints" / "dinat_isotropic_small_in1k_224.pth").write_bytes(serialized(ISOTROPIC["state_dict"]))
    model = timm.create_model(
        "dinat_isotropic_small", pretrained=True, pretrained_cfg_overlay=dict(num_classes=10), **isotropic_kwargs()
    ).eval()
    assert model.dilations == [1, 2, 1, 2]  # "1 on even layers, dilation on odd"
    with torch.no_grad():
        torch.testing.assert_close(model(ISOTROPIC["input"]), ISOTROPIC["logits"], atol=1e-4, rtol=0)
        features = model.forward_head(model.forward_features(ISOTROPIC["input"]), pre_logits=True)
    torch.testing.assert_close(features, ISOTROPIC["features"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", [n for n in MANIFEST if n.startswith("dinat_s_") or "isotropic" in n or "vitrpb" in n])
def test_original_layout_converts_exactly(name):
    entry = MANIFEST[name]
    arch = {"dinat_s_large_21k": "dinat_s_large"}.get(name, name)
    model = timm.create_model(arch, device="meta")
    filter_fn = FILTER["dinat_s_" if name.startswith("dinat_s_") else "isotropic"]
    converted = filter_fn({k: torch.empty(s, device="meta") for k, s in entry["state_dict"].items()}, model)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) == entry["params"]


def test_every_registered_variant_has_a_manifest():
    names = set(timm.list_models("dinat_s_*") + timm.list_models("*isotropic*") + timm.list_models("vitrpb*"))
    assert names == {"dinat_s_tiny", "dinat_s_small", "dinat_s_base", "dinat_s_large", "dinat_s_large_384",
                     "nat_isotropic_small", "nat_isotropic_base", "dinat_isotropic_small", "dinat_isotropic_base",
                     "vitrpb_small", "vitrpb_base"}
    assert names <= set(MANIFEST)


def test_dinat_s_large_tags():
    in22k = timm.create_model("dinat_s_large.in22k", device="meta")
    ft = timm.create_model("dinat_s_large.in22k_ft_in1k", device="meta")
    assert in22k.num_classes == 21841 and ft.num_classes == 1000
    # one default per architecture (the fine-tuning's 0.35); the IN-22K tag says how it was pre-trained
    assert ft.stages[3].blocks[1].drop_path1.drop_prob == pytest.approx(0.35)
    assert any("drop_path_rate=0.2" in note for note in in22k.pretrained_cfg["notes"])
    again = timm.create_model("dinat_s_large.in22k", device="meta", drop_path_rate=0.2)
    assert again.stages[3].blocks[1].drop_path1.drop_prob == pytest.approx(0.2)
    assert "dinat_s_large_1k_224.pth" in ft.pretrained_cfg["notes"][0]  # the markdown's other file name
    big = timm.create_model("dinat_s_large_384.in22k_ft_in1k", device="meta")
    assert big.pretrained_cfg["input_size"] == (3, 384, 384) and big.pretrained_cfg["crop_pct"] == 1.0
    assert big.dilations[0] == [1, 13] and big.dilations[2][:2] == [1, 3]


def test_vitrpb_bias_matches_the_original_flipped_index():
    """The original builds ``relative_position_index`` from (query - key) coordinates and flips it
    on both axes; our direct (key - query) indexing must pick the same table entries."""
    size = 5
    attn = isotropic.GlobalAttentionRPB(8, 2, input_size=size)
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + size - 1
    index = torch.flipud(torch.fliplr(rel[:, :, 0] * (2 * size - 1) + rel[:, :, 1]))
    original = attn.rpb.detach().permute(1, 2, 0).flatten(0, 1)[index.reshape(-1)].view(size**2, size**2, -1).permute(2, 0, 1)
    rows, cols = isotropic._relative_index(size, size, size, None)
    torch.testing.assert_close(attn.rpb.detach()[:, rows, cols], original)


def test_vitrpb_forward_backward_and_too_large_map():
    model = timm.create_model("vitrpb_small", embed_dim=64, depth=2, num_heads=2, num_classes=3, img_size=64)
    out = model(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert model.blocks[0].attn.rpb.grad.abs().sum() > 0
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 3)  # smaller maps index into the same table
    with pytest.raises(ValueError, match="exceeds the 4x4"):
        model(torch.randn(1, 3, 96, 96))


@pytest.mark.parametrize("size", [32, 64, 96, 160])
def test_small_inputs_take_the_padding_path(size):
    swin_shaped = timm.create_model("dinat_s_tiny", **dinat_s_kwargs()).eval()
    iso = timm.create_model("dinat_isotropic_small", **isotropic_kwargs()).eval()
    with torch.no_grad():
        assert swin_shaped(torch.randn(1, 3, size, size + 16)).shape == (1, 10)
        assert iso(torch.randn(1, 3, size, size)).shape == (1, 10)


def test_dinat_s_features_only():
    model = timm.create_model("dinat_s_tiny", features_only=True, **dinat_s_kwargs())
    assert model.feature_info.channels() == [32, 64, 128, 256] and model.feature_info.reduction() == [4, 8, 16, 32]
    feats = model(torch.randn(1, 3, 96, 128))
    assert [tuple(f.shape) for f in feats] == [(1, 32, 24, 32), (1, 64, 12, 16), (1, 128, 6, 8), (1, 256, 3, 4)]


def test_isotropic_intermediates_and_pruning():
    model = timm.create_model("nat_isotropic_small", **isotropic_kwargs()).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        final, inters = model.forward_intermediates(x, indices=2)
        assert len(inters) == 2 and inters[0].shape == (1, 64, 14, 14)
        torch.testing.assert_close(final, model.forward_features(x))
    assert model.prune_intermediate_layers(indices=[1]) == [1] and len(model.blocks) == 2
    features = timm.create_model("nat_isotropic_small", features_only=True, out_indices=(1, 3), **isotropic_kwargs())
    assert [f.shape[1:] for f in features(x)] == [(64, 14, 14), (64, 14, 14)]


HIERARCHICAL_SMALL = dict(embed_dim=32, depths=(2, 2, 3, 2), num_heads=(1, 2, 4, 8), layer_scale=1e-5,
                         dilations=[[1, 8], [1, 4], [1, 2, 1], [1, 1]], num_classes=10)


@pytest.mark.parametrize("arch,kwargs", [("dinat_tiny", HIERARCHICAL_SMALL), ("dinat_s_tiny", dinat_s_kwargs()),
                                         ("dinat_isotropic_small", isotropic_kwargs())])
def test_grad_checkpointing_same_gradients(arch, kwargs):
    torch.manual_seed(0)
    model = timm.create_model(arch, drop_path_rate=0.0, **kwargs)
    x = torch.randn(2, 3, 64, 64)
    model(x).square().mean().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert all(g.abs().sum() > 0 for n, g in ref.items() if n.endswith(".rpb"))
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().mean().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("arch", ["dinat_s_base", "dinat_isotropic_base", "vitrpb_base"])
def test_meta_device_and_param_groups(arch):
    from timm.optim import param_groups_layer_decay

    model = timm.create_model(arch, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.no_weight_decay() and all(n.endswith(".rpb") for n in model.no_weight_decay())
    assert len(param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.75)) > 4


def test_bad_input_and_bad_checkpoint():
    model = timm.create_model("dinat_isotropic_small", **isotropic_kwargs())
    with pytest.raises(ValueError, match="expected 3 input channels, got 4"):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="smaller than this model's minimum 16x16"):
        model(torch.randn(1, 3, 8, 8))
    sd = dict(ISOTROPIC["state_dict"])
    sd.pop("layers.3.mlp.fc2.bias")
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): blocks.3.mlp.fc2.bias"):
        isotropic.checkpoint_filter_fn(sd, model)
    with pytest.raises(ValueError, match="attention must be"):
        timm.create_model("nat_isotropic_small", attention="local")
