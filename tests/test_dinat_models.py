"""Hierarchical DiNAT / NAT: parity with the original code and transformers, both checkpoint
formats through timm's real pretrained machinery (offline), and the native timm model API."""
import json

import pytest
import timm
import torch
from _helpers import FIXTURES, fixture, put_in_hf_cache, serialized
from timm.data import create_transform, resolve_data_config

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.models._checkpoint import CheckpointMismatchError
from dinat_timm.models.dinat import checkpoint_filter_fn
from dinat_timm.ops.backends import BACKENDS
from dinat_timm.ops.chooser import why_not

UPSTREAM = fixture("upstream_dinat_small.pt")


HF = fixture("hf_dinat_small.pt")


MANIFEST_UP = json.loads((FIXTURES / "manifests_upstream.json").read_text())["models"]


MANIFEST_HF = json.loads((FIXTURES / "manifests_hf.json").read_text())["models"]


ARCH_OF = {"dinat_large_21k": "dinat_large", "dinat_large_21k_11x11": "dinat_large_384_11x11"}


HIERARCHICAL = [n for n in MANIFEST_UP if n.startswith(("dinat_", "nat_")) and not n.startswith(("dinat_s_", "dinat_isotropic", "nat_isotropic"))]


def small_kwargs(config):
    layer_scale = config.get("layer_scale", config.get("layer_scale_init_value"))
    return dict(
        embed_dim=config["embed_dim"], depths=config["depths"], num_heads=config["num_heads"],
        mlp_ratio=config["mlp_ratio"], kernel_size=config["kernel_size"], dilations=config["dilations"],
        layer_scale=layer_scale, num_classes=10,
    )


def test_original_checkpoint_parity_via_torch_hub_cache(torch_hub_dir):
    """The original repo's .pth, fetched by timm from its URL source (here: already cached)."""
    (torch_hub_dir / "checkpoints" / "dinat_large_in22k_224.pth").write_bytes(serialized(UPSTREAM["state_dict"]))
    model = timm.create_model(
        "dinat_large.in22k", pretrained=True, pretrained_cfg_overlay=dict(num_classes=10),
        **small_kwargs(UPSTREAM["config"]),
    ).eval()
    with torch.no_grad():
        logits = model(UPSTREAM["input"])
        features = model.forward_head(model.forward_features(UPSTREAM["input"]), pre_logits=True)
    torch.testing.assert_close(logits, UPSTREAM["logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(features, UPSTREAM["features"], atol=1e-4, rtol=0)


def test_transformers_checkpoint_parity_via_hf_cache(hf_cache):
    """A shi-labs/dinat-* Hub repo's pytorch_model.bin, found by timm in the (offline) HF cache."""
    put_in_hf_cache(hf_cache, "shi-labs/dinat-tiny-in1k-224", "pytorch_model.bin", serialized(HF["state_dict"]))
    model = timm.create_model(
        "dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(num_classes=10), **small_kwargs(HF["config"])
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(HF["input"]), HF["logits"], atol=1e-4, rtol=0)
        # 64x64: maps of 16, 8, 4, 2 take the zero-pad-then-crop path of transformers / NATTEN <= 0.15
        torch.testing.assert_close(model(HF["input_small"]), HF["logits_small"], atol=1e-4, rtol=0)


def test_custom_config_loads_through_the_same_filter_fn():
    model = timm.create_model("nat_tiny", **small_kwargs(UPSTREAM["config"])).eval()
    model.load_state_dict(checkpoint_filter_fn(UPSTREAM["state_dict"], model))
    with torch.no_grad():
        torch.testing.assert_close(model(UPSTREAM["input"]), UPSTREAM["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", ["tiled", "gather", "flex"])
def test_model_parity_on_every_pure_pytorch_backend(backend):
    model = timm.create_model("dinat_tiny", attn_backend=backend, **small_kwargs(UPSTREAM["config"])).eval()
    model.load_state_dict(checkpoint_filter_fn(UPSTREAM["state_dict"], model))
    with torch.no_grad():
        torch.testing.assert_close(model(UPSTREAM["input"][:1]), UPSTREAM["logits"][:1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", HIERARCHICAL)
def test_original_layout_converts_exactly(name):
    entry = MANIFEST_UP[name]
    model = timm.create_model(ARCH_OF.get(name, name), device="meta")
    converted = checkpoint_filter_fn({k: torch.empty(s, device="meta") for k, s in entry["state_dict"].items()}, model)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) == entry["params"]


@pytest.mark.parametrize("name", list(MANIFEST_HF))
def test_transformers_layout_converts_exactly(name):
    entry = MANIFEST_HF[name]
    model = timm.create_model(name, device="meta")
    converted = checkpoint_filter_fn({k: torch.empty(s, device="meta") for k, s in entry["state_dict"].items()}, model)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) == entry["params"]
    # and the architecture hyper-parameters are transformers' (= the original registered functions')
    cfg = entry["hf_config"]
    assert model.dilations == cfg["dilations"] and list(model.depths) == cfg["depths"]
    assert model.kernel_size == cfg["kernel_size"]
    assert model.stages[0].blocks[0].attn.num_heads == cfg["num_heads"][0]
    assert model.patch_embed.norm.normalized_shape[0] == cfg["embed_dim"]
    mlp_hidden = model.stages[0].blocks[0].mlp.fc1.out_features
    assert mlp_hidden == int(cfg["embed_dim"] * cfg["mlp_ratio"])
    has_ls = any(k.endswith("ls1.gamma") for k in model.state_dict())
    assert has_ls == bool(cfg.get("layer_scale_init_value", 0.0))


def test_every_registered_hierarchical_variant_has_a_manifest():
    registered = set(timm.list_models("dinat_*")) - set(timm.list_models("dinat_s_*")) - set(timm.list_models("dinat_isotropic*"))
    registered |= set(timm.list_models("nat_*")) - set(timm.list_models("nat_isotropic*"))
    assert registered <= set(MANIFEST_UP)


def test_rpb_is_resized_for_another_kernel():
    model = timm.create_model("dinat_tiny", **dict(small_kwargs(UPSTREAM["config"]), kernel_size=5)).eval()
    converted = checkpoint_filter_fn(UPSTREAM["state_dict"], model)
    assert converted["stages.0.blocks.0.attn.rpb"].shape == (1, 9, 9)
    model.load_state_dict(converted)


@pytest.mark.parametrize("tag", timm.list_pretrained("dinat*") + timm.list_pretrained("nat_*"))
def test_pretrained_cfgs(tag):
    arch = tag.split(".")[0]
    if arch.startswith(("dinat_s_", "dinat_isotropic", "nat_isotropic")):
        pytest.skip("other family")
    model = timm.create_model(tag, device="meta")
    cfg = model.pretrained_cfg
    assert cfg["interpolation"] == "bicubic" and cfg["license"] == "mit" and cfg["origin_url"]
    assert cfg["url"].startswith("https://shi-labs.com/projects/")
    model.get_submodule(cfg["first_conv"]) and model.get_submodule(cfg["classifier"])
    assert cfg["crop_pct"] == (1.0 if cfg["input_size"][-1] == 384 else 0.875)
    data = resolve_data_config({}, model=model)
    assert data["interpolation"] == "bicubic" and data["mean"] == (0.485, 0.456, 0.406)
    transform = create_transform(**data)
    assert "Resize" in repr(transform) and "CenterCrop" in repr(transform)
    if "in22k" == tag.split(".")[1]:
        assert cfg["num_classes"] == 21841 and model.num_classes == 21841


def test_hf_repos_are_the_published_ones():
    ids = {t: timm.models.get_pretrained_cfg(t).hf_hub_id for t in timm.list_pretrained("*") if t.split(".")[0] in timm.list_models("*nat*")}
    assert ids["dinat_tiny.in1k"] == "shi-labs/dinat-tiny-in1k-224"
    assert ids["dinat_large_384_11x11.in22k_ft_in1k"] == "shi-labs/dinat-large-11x11-in22k-in1k-384"
    assert ids["nat_base.in1k"] == "shi-labs/nat-base-in1k-224"
    assert not ids["dinat_large.in22k"]  # no Hub repo: loads from the original URL


@pytest.fixture(scope="module")
def tiny():
    return timm.create_model("dinat_tiny", **small_kwargs(UPSTREAM["config"])).eval()


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(1, 1, 64, 64), "expected 3 input channels, got 1"),
        (torch.randn(3, 64, 64), "4-D image tensor"),
        (torch.randn(1, 3, 16, 16), "16x16 is smaller than this model's minimum 32x32"),
    ],
)
def test_bad_input(tiny, x, match):
    with pytest.raises(ValueError, match=match):
        tiny(x)


def test_corrupt_checkpoint(hf_cache):
    path = put_in_hf_cache(hf_cache, "shi-labs/dinat-mini-in1k-224", "pytorch_model.bin", b"not a checkpoint" * 100)
    with pytest.raises(RuntimeError, match=rf"checkpoint {path} is not a checkpoint: neither a torch.save archive"):
        timm.create_model("dinat_mini", pretrained=True)


def test_weights_not_cached_offline(hf_cache, torch_hub_dir):
    with pytest.raises(RuntimeError, match=r"no pretrained weights for 'nat_mini': offline .*not in a local cache"):
        timm.create_model("nat_mini", pretrained=True)


def test_checkpoint_with_missing_and_unexpected_keys_names_them(tiny):
    sd = dict(UPSTREAM["state_dict"])
    del sd["levels.1.blocks.0.attn.rpb"]
    sd["levels.1.blocks.0.attn.extra"] = torch.zeros(1)
    sd["levels.2.blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointMismatchError) as err:
        checkpoint_filter_fn(sd, tiny)
    message = str(err.value)
    assert "missing keys (1): stages.1.blocks.0.attn.rpb" in message
    assert "unexpected keys (1): stages.1.blocks.0.attn.extra" in message
    assert "stages.2.blocks.0.mlp.fc1.weight: checkpoint (3, 3)" in message


def test_unknown_kwargs_raise_type_error():
    with pytest.raises(TypeError):
        timm.create_model("dinat_mini", windw_size=7)


@pytest.mark.parametrize("size", [(32, 32), (96, 96), (128, 160), (224, 224)])
def test_any_input_from_32_pixels(tiny, size):
    with torch.no_grad():
        assert tiny(torch.randn(1, 3, *size)).shape == (1, 10)


def test_features_only_and_feature_info():
    model = timm.create_model("dinat_mini", features_only=True, out_indices=(1, 2, 3), embed_dim=32, depths=(1, 1, 2, 1),
                              num_heads=(1, 2, 4, 8), dilations=[[1], [1], [1, 2], [1]])
    assert model.feature_info.channels() == [64, 128, 256]
    assert model.feature_info.reduction() == [8, 16, 32]
    feats = model(torch.randn(2, 3, 128, 96))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 16, 12), (2, 128, 8, 6), (2, 256, 4, 3)]


def test_forward_intermediates_and_pruning(tiny):
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inters = tiny.forward_intermediates(x)
        assert [t.shape[1] for t in inters] == [32, 64, 128, 256] and final.shape == (1, 2, 2, 256)
        torch.testing.assert_close(final, tiny.forward_features(x))
        nhwc = tiny.forward_intermediates(x, indices=[0, 2], output_fmt="NHWC", intermediates_only=True)
        assert [tuple(t.shape) for t in nhwc] == [(1, 16, 16, 32), (1, 4, 4, 128)]
        early = tiny.forward_intermediates(x, indices=1, stop_early=True, intermediates_only=True)
        assert len(early) == 1 and early[0].shape == (1, 256, 2, 2)
    pruned = timm.create_model("dinat_tiny", **small_kwargs(UPSTREAM["config"]))
    kept = pruned.prune_intermediate_layers(indices=[1])
    assert kept == [1] and len(pruned.stages) == 2 and pruned.num_features == 64


def test_inference_mode_then_training():
    """Index/mask caches first built under inference_mode must still serve autograd later."""
    model = timm.create_model("dinat_mini", embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                              dilations=[[1], [1], [1, 2], [1]], num_classes=3)
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        model.eval()(x)
    model.train()(x).sum().backward()
    assert model.stages[2].blocks[1].attn.rpb.grad is not None


def test_optimizer_helpers():
    from timm.optim import create_optimizer_v2, param_groups_layer_decay

    model = timm.create_model("dinat_mini", embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                              dilations=[[1], [1], [1, 2], [1]])
    assert all(n.endswith(".rpb") for n in model.no_weight_decay()) and len(model.no_weight_decay()) == 5
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.75)
    assert len(groups) > 4
    create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)


def test_head_kwargs_and_reset():
    model = timm.create_model("nat_mini", num_classes=0, embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 256)
    model.reset_classifier(5, "avg")
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    gray = timm.create_model("nat_mini", in_chans=1, embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
    assert gray(torch.randn(1, 1, 64, 64)).shape == (1, 1000)


def test_device_and_dtype_kwargs():
    meta = timm.create_model("dinat_large", device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())
    bf16 = timm.create_model("dinat_mini", dtype=torch.bfloat16, embed_dim=32, depths=(1, 1, 2, 1),
                             num_heads=(1, 2, 4, 8), dilations=[[1], [1], [1, 2], [1]])
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    assert bf16(torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("backend", [name for name, b in BACKENDS.items() if b.COMPILES and name != "window"])
def test_torch_compile_fullgraph_on_every_backend_that_claims_it(backend, compile_backend):
    """Each backend that says it compiles (``COMPILES``) gives one graph and the eager logits.
    At 64 px the maps are 16 (dilations 1 and 2), 8, 4 and 2: direct, dilated and zero-padded paths."""
    probe = torch.empty(1, 1, 16, 16, 16)
    if why_not(backend, probe, torch.empty(1, 13, 13), needs_grad=False) is not None:
        pytest.skip(why_not(backend, probe, torch.empty(1, 13, 13), needs_grad=False))
    model = timm.create_model("dinat_tiny", attn_backend=backend, embed_dim=16, depths=(2, 1, 1, 1),
                              num_heads=(1, 2, 2, 4), dilations=[[1, 2], [1], [1], [1]], num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    torch._dynamo.reset()
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, fullgraph=True, backend=compile_backend)(x)
        model.set_attn_backend("gather")
        reference = model(x)
    torch.testing.assert_close(eager, reference, atol=1e-4, rtol=0)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


def test_auto_under_compile_picks_only_backends_that_compile():
    from dinat_timm.ops.chooser import preference

    for device in ("cpu", "cuda"):
        assert all(BACKENDS[name].COMPILES for name in preference(device, compiling=True))
    assert preference("cuda", compiling=True)[0] == "triton"


def test_offline_without_weights_fails_at_once_naming_files_caches_urls_and_the_file_option(hf_cache, torch_hub_dir):
    import time

    from dinat_timm.models._weights import PretrainedWeightsUnavailable

    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        timm.create_model("dinat_tiny", pretrained=True)
    assert time.perf_counter() - start < 5  # no retries against an unreachable Hub
    message = str(info.value)
    assert "offline" in message
    assert str(hf_cache / "models--shi-labs--dinat-tiny-in1k-224") in message and "pytorch_model.bin" in message
    assert str(torch_hub_dir / "checkpoints" / "dinat_tiny_in1k_224.pth") in message
    assert "https://huggingface.co/shi-labs/dinat-tiny-in1k-224/resolve/main/pytorch_model.bin" in message
    assert "https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/dinat_tiny_in1k_224.pth" in message
    assert "pretrained_cfg_overlay=dict(file=" in message
    # the Hub's current command line (huggingface_hub no longer installs huggingface-cli)
    assert "(hf download shi-labs/dinat-tiny-in1k-224 pytorch_model.bin)" in message and "huggingface-cli" not in message


def test_offline_the_original_pth_is_the_fallback_for_a_tag_whose_first_source_is_the_hub(hf_cache, torch_hub_dir):
    """dinat_tiny.in1k names a Hub repo first; with only the original .pth cached, that is what loads."""
    (torch_hub_dir / "checkpoints" / "dinat_tiny_in1k_224.pth").write_bytes(serialized(UPSTREAM["state_dict"]))
    model = timm.create_model("dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(num_classes=10),
                              **small_kwargs(UPSTREAM["config"])).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(UPSTREAM["input"]), UPSTREAM["logits"], atol=1e-4, rtol=0)


def test_a_named_file_is_loaded_whatever_the_caches_hold(tmp_path, hf_cache, torch_hub_dir):
    path = tmp_path / "mine.pth"
    path.write_bytes(serialized(HF["state_dict"]))  # transformers layout, any file name
    model = timm.create_model("dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                              **small_kwargs(HF["config"])).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(HF["input"]), HF["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("features_only", [False, True])
def test_the_loaded_weights_are_not_kept_a_second_time_in_the_cfg(tmp_path, features_only):
    """The checkpoint is read here and handed to timm as a state dict; once in the model, no cfg (the
    features_only wrapper's inner model's included) keeps that copy, only the file's name."""
    path = tmp_path / "weights.pth"
    path.write_bytes(serialized(UPSTREAM["state_dict"]))
    model = timm.create_model("dinat_tiny", pretrained=True, features_only=features_only,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=10), **small_kwargs(UPSTREAM["config"]))
    cfgs = [getattr(m, a) for m in model.modules() for a in ("pretrained_cfg", "default_cfg") if isinstance(getattr(m, a, None), dict)]
    assert cfgs and not any("state_dict" in cfg for cfg in cfgs)
    assert model.pretrained_cfg["file"] == str(path)


def test_set_attn_backend_refuses_unknown_names_at_once():
    model = timm.create_model("nat_mini", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))
    with pytest.raises(ValueError, match=r"unknown attention backend 'does_not_exist'.*'gather'.*'tiled'.*'triton'"):
        model.set_attn_backend("does_not_exist")
    with pytest.raises(ValueError, match="unknown attention backend 'cudnn'"):
        timm.create_model("nat_mini", attn_backend="cudnn")
    model.set_attn_backend("gather")
    assert {m.backend for m in model.modules() if hasattr(m, "backend")} == {"gather"}
