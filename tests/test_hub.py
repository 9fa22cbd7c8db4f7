"""The zoo in timm's own Hub layout: a published checkpoint (original format, full size, random) is
exported, then loaded back through timm's ``local-dir:`` and ``hf-hub:`` sources (offline, from the
Hub cache) with the logits of the original-format load; the card parses as a Hub model card; no
pickle is written; ``export --all`` dry-runs over every tag; ``push`` refuses clearly offline."""
import json
from pathlib import Path

import pytest
import timm
import torch

import dinat_timm  # noqa: F401
from dinat_timm.hub import FILES, HubError, check_config, create_model, export, pretrained_tags, tag_table
from dinat_timm.hub.__main__ import main

from _helpers import FIXTURES, put_in_hf_cache

MANIFEST = json.loads((FIXTURES / "manifests_upstream.json").read_text())["models"]
# the smallest real architecture of each family, with a tag whose weights are in the original format
FAMILIES = {
    "hierarchical": "dinat_mini.in1k",
    "dinat_s": pytest.param("dinat_s_tiny.in1k", marks=pytest.mark.full),
    "isotropic": pytest.param("nat_isotropic_small.in1k", marks=pytest.mark.full),
    "vitrpb": pytest.param("vitrpb_small.in1k", marks=pytest.mark.full),
}


def original_checkpoint(tag, path):
    """A full-size checkpoint in the original repo's layout (its published key names and shapes),
    random, written with torch.save as the upstream .pth files are."""
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) * 0.05 for k, shape in MANIFEST[tag.split(".")[0]]["state_dict"].items()}
    torch.save({"model": state}, path)
    return path


@pytest.mark.parametrize("tag", list(FAMILIES.values()), ids=list(FAMILIES))
def test_export_then_local_dir_and_hf_hub_give_the_original_formats_logits(tag, tmp_path, hf_cache):
    checkpoint = original_checkpoint(tag, tmp_path / "original.pth")
    out = tmp_path / "export"
    result = export(tag, out, checkpoint=checkpoint)
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES) and result.files["model.safetensors"] > 50e6
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    original = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=dict(file=str(checkpoint))).eval()
    local = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    repo = f"someone/{tag}"
    for name in FILES:
        put_in_hf_cache(hf_cache, repo, name, (out / name).read_bytes())
    hub = timm.create_model(f"hf-hub:{repo}", pretrained=True).eval()
    with torch.no_grad():
        expected = original(x)
        torch.testing.assert_close(local(x), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(hub(x), expected, atol=1e-6, rtol=0)
    assert local.pretrained_cfg["crop_pct"] == original.pretrained_cfg["crop_pct"]
    assert type(local) is type(original) and local.architecture == original.architecture


def test_config_names_the_architecture_its_arguments_and_the_preprocessing(tmp_path):
    result = export("dinat_large_384_11x11.in22k_ft_in1k", dry_run=True)
    config = result.config
    assert config["architecture"] == "dinat_large_384_11x11" and config["num_classes"] == 1000
    args = config["model_args"]
    assert args["kernel_size"] == 11 and args["dilations"][0] == [1, 8, 1] and args["num_classes"] == 1000
    assert args["embed_dim"] == 192 and "layer_scale" in args
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [3, 384, 384] and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bicubic"
    assert not {"url", "hf_hub_id", "file", "state_dict"} & set(cfg)  # where the source came from is not the export's


def test_the_card_is_a_hub_model_card_a_person_would_read(tmp_path):
    from huggingface_hub import ModelCard

    (tmp_path / "README.md").write_text(export("dinat_tiny.in1k", dry_run=True, repo_id="me/dinat").card)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "timm" and card.data.license == "mit" and "imagenet-1k" in card.data.datasets
    text = card.text
    for needed in ("Params (M): 27.9", "GMACs: 4.29", "| paper | 82.7 |", "features_only=True", "forward_intermediates",
                   "hf-hub:me/dinat", "natten_legacy", "@article{hassani2022dilated", "https://arxiv.org/abs/2209.15001",
                   "NVIDIA H200"):
        assert needed in text, needed


@pytest.mark.full  # every tag
def test_export_all_dry_runs_over_every_tag_without_downloading(tmp_path, hf_cache, torch_hub_dir, capsys):
    table = tag_table()
    assert len(table) == len(pretrained_tags()) == 25
    assert set(table["weights_format"]) == {"transformers", "original .pth"}
    assert table.set_index("tag").loc["dinat_large.in22k", "num_classes"] == 21841
    assert main(["export", "--all", str(tmp_path / "zoo"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 25 and all("would write model.safetensors, config.json, README.md" in line for line in lines)
    assert all("not cached: would download from" in line for line in lines)
    assert not (tmp_path / "zoo").exists() and not list(hf_cache.iterdir())  # nothing written, nothing fetched


def test_export_without_weights_offline_says_where_to_put_them(tmp_path, hf_cache, torch_hub_dir, capsys):
    assert main(["export", "dinat_tiny.in1k", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: export: no pretrained weights for 'dinat_tiny.in1k'") or "no pretrained weights" in err
    assert not (tmp_path / "out").exists()
    assert main(["export", "dinat_tinyy.in1k", str(tmp_path / "out")]) == 2
    assert "unknown pretrained tag 'dinat_tinyy.in1k'" in capsys.readouterr().err


def test_push_refuses_offline_or_without_a_token_and_dry_runs(tmp_path, hf_cache, torch_hub_dir, capsys, monkeypatch):
    assert main(["push", "dinat_mini.in1k", "me/dinat_mini"]) == 2
    assert "HF_HUB_OFFLINE is set: pushing to the Hub needs the network" in capsys.readouterr().err
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login either
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    assert main(["push", "dinat_mini.in1k", "me/dinat_mini"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["push", "dinat_mini.in1k", "me/dinat_mini", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("would upload to https://huggingface.co/me/dinat_mini: dinat_mini.in1k: would write model.safetensors")


def test_an_architecture_this_version_does_not_know_says_to_upgrade(tmp_path, capsys):
    out = tmp_path / "future"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"architecture": "dinat_huge", "dinat_timm_version": "9.0.0",
                                                "pretrained_cfg": {}}))
    with pytest.raises(HubError, match=r"names architecture 'dinat_huge', which dinat_timm .* does not register "
                                       r"\(it was exported by dinat_timm 9.0.0\): upgrade dinat-timm"):
        create_model(f"local-dir:{out}", pretrained=True)
    assert main(["check", str(out)]) == 2 and "upgrade dinat-timm" in capsys.readouterr().err
    check_config({"architecture": "dinat_tiny"}, "config.json")  # a known one passes
