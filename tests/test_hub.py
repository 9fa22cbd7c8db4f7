"""The zoo in timm's own Hub layout: a published checkpoint (original format, full size, random) is
exported, then loaded back through timm's ``local-dir:`` and ``hf-hub:`` sources (offline, from the
Hub cache) with the logits of the original-format load; the card parses as a Hub model card; no
pickle is written; ``export --all`` dry-runs over every tag; ``push`` refuses clearly offline."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from _helpers import FIXTURES, put_in_hf_cache

import dinat_timm  # noqa: F401
from dinat_timm.hub import FILES, HubError, check_config, create_model, export, pretrained_tags, tag_table
from dinat_timm.hub.__main__ import main

MANIFEST = json.loads((FIXTURES / "manifests_upstream.json").read_text())["models"]


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


ROOT = Path(__file__).resolve().parents[1]


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def hub(*args):
    return subprocess.run([sys.executable, "-m", "dinat_timm.hub", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300)


def test_export_refuses_to_write_over_a_readme_it_did_not_write(tmp_path):
    mine = tmp_path / "README.md"
    mine.write_text("my project\n")
    result = hub("export", "dinat_mini.in1k", tmp_path, "--dry-run")
    assert result.returncode == 2 and "README.md exists" in _one_line(result.stderr) and "--overwrite" in result.stderr
    assert mine.read_text() == "my project\n" and sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def test_an_export_that_fails_midway_leaves_the_folder_as_it_was(tmp_path):
    from dinat_timm.hub.export import _write_into

    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("kept")

    def fail(path):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _write_into(out, {"model.safetensors": lambda p: p.write_bytes(b"x"), "config.json": fail})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    _write_into(tmp_path / "new", {"a": lambda p: p.write_text("1"), "b": lambda p: p.write_text("2")})
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]  # no staging folder left


@pytest.mark.parametrize("args, words", [
    (["export", "dinat_mini.in1k", "{file}", "--dry-run"], "is a file, not a directory"),
    (["export", "dinat_mini.in1k", "{dir}", "--dry-run", "--checkpoint", "{dir}/missing.pth"], "no such file"),
    (["push", "dinat_mini.in1k", "not a/repo id!", "--dry-run"], "is not a Hub repo id"),
    (["export", "dinat_mini.in1k"], "dinat_mini.in1k is a tag: give the output directory too"),
    (["export", "no_such.tag", "{dir}", "--dry-run"], "unknown pretrained tag 'no_such.tag'"),
    (["export", "dinat_mini.in1k", "{file}/below", "--dry-run"], "{file}"),
    (["check", "{dir}"], "config.json: no such file"),
])
def test_dry_runs_make_every_check_of_the_real_run(tmp_path, args, words):
    (tmp_path / "a-file").write_text("x")
    fill = dict(file=tmp_path / "a-file", dir=tmp_path)
    result = hub(*[a.format(**fill) for a in args])
    assert result.returncode == 2 and words.format(**fill) in _one_line(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def _export_dir(tmp_path, arch="nat_mini"):
    """An export as ``save_for_hf`` writes it, of a small model of ``arch``."""
    from timm.models._hub import save_for_hf

    model = timm.create_model(arch, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], num_classes=10)
    out = tmp_path / "export"
    save_for_hf(model, out, model_args=dict(model.architecture, num_classes=10), safe_serialization=True)
    return out


def test_check_loads_what_it_checks(tmp_path):
    out = _export_dir(tmp_path)
    ok = hub("check", out)
    assert ok.returncode == 0 and "weights load into it" in ok.stdout
    config = json.loads((out / "config.json").read_text())
    config["model_args"]["embed_dim"] = 32  # another model than the weights
    (out / "config.json").write_text(json.dumps(config))
    other = hub("check", out)
    assert other.returncode == 2 and "does not load into 'nat_mini'" in _one_line(other.stderr)
    (out / "config.json").write_text("{not json")
    assert "is not JSON" in _one_line(hub("check", out).stderr)
    out = _export_dir(tmp_path / "2")
    data = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(data[: len(data) // 2])
    cut = hub("check", out)
    assert cut.returncode == 2 and "not a valid safetensors file" in _one_line(cut.stderr)


# -- round three: an overwrite never mixes old and new, nothing is left behind, the modes are the user's --------


def test_an_overwrite_is_all_or_nothing_and_keeps_the_folders_other_files(tmp_path):
    """An overwrite that fails after the new weights were staged leaves the old three files (and the user's
    notes); one that succeeds replaces the three together and keeps the notes."""
    from dinat_timm.hub.export import _write_into

    out = tmp_path / "out"
    _write_into(out, {"model.safetensors": lambda p: p.write_text("old weights"),
                      "config.json": lambda p: p.write_text("old config")})
    (out / "notes.txt").write_text("kept")

    def killed(path):
        raise KeyboardInterrupt  # a kill while the config is being written

    with pytest.raises(KeyboardInterrupt):
        _write_into(out, {"model.safetensors": lambda p: p.write_text("new weights"), "config.json": killed})
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "model.safetensors": "old weights", "config.json": "old config", "notes.txt": "kept"}
    _write_into(out, {"model.safetensors": lambda p: p.write_text("new weights"),
                      "config.json": lambda p: p.write_text("new config")})
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "model.safetensors": "new weights", "config.json": "new config", "notes.txt": "kept"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left


def test_a_killed_exports_staging_folder_is_removed_by_the_next_export(tmp_path):
    from dinat_timm.hub.export import _write_into

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.export-{int(dead.stdout)}-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_text("half")
    _write_into(tmp_path / "out", {"a": lambda p: p.write_text("1")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_export_has_the_modes_the_users_umask_gives(tmp_path):
    from dinat_timm.hub.export import _write_into

    old = os.umask(0o022)
    try:
        _write_into(tmp_path / "out", {"a": lambda p: p.write_text("1")})
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755 and (tmp_path / "out" / "a").stat().st_mode & 0o777 == 0o644


def test_check_refuses_weights_that_are_not_the_ones_the_config_was_written_with(tmp_path, capsys):
    """New weights under an old config (what an interrupted overwrite by hand, or a copy, leaves) load into the
    architecture but are not the export: the config's recorded sha256 says so."""
    import hashlib

    out = _export_dir(tmp_path)
    config = json.loads((out / "config.json").read_text())
    config["dinat_timm_weights_sha256"] = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    (out / "config.json").write_text(json.dumps(config))
    assert main(["check", str(out)]) == 0
    other = _export_dir(tmp_path / "other")
    (out / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    assert main(["check", str(out)]) == 2
    assert "is not the file" in capsys.readouterr().err


def test_check_says_in_one_line_what_a_hand_edited_config_breaks(tmp_path, capsys):
    out = _export_dir(tmp_path)
    config = json.loads((out / "config.json").read_text())
    config["model_args"]["depths"] = "one two"  # not a list of numbers
    (out / "config.json").write_text(json.dumps(config))
    assert main(["check", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: check:") and "does not load" in err[0]
