"""A timm user's own checkpoint (timm's ``CheckpointSaver``, as train.py writes it): loaded back with its trained
head in both documented forms, a dropped head said, scored by the accuracy tool as validate.py scores it, and
exported to timm's Hub layout, checked and loaded through ``local-dir:`` with the trained logits."""
import argparse
import json
import warnings

import pytest
import timm
import torch
from timm.data import create_dataset, create_loader, resolve_data_config

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.bench import accuracy
from dinat_timm.bench.accuracy import evaluate, make_tiny_dataset

SMALL = dict(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), dilations=[[1], [1], [1, 2], [1]])


def _saved(tmp_path, name="dinat_mini", num_classes=10, ema_offset=None, **kwargs):
    """A model and its checkpoint written by timm's CheckpointSaver (args, optimizer, scaler; an EMA whose weights
    differ from the plain ones where ``ema_offset`` is given). Returns (path, plain model, EMA model or None)."""
    from timm.utils import CheckpointSaver, ModelEmaV3, NativeScaler

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=num_classes, **kwargs).eval()
    ema = None
    if ema_offset is not None:
        ema = ModelEmaV3(model)
        with torch.no_grad():
            for p in ema.module.parameters():
                p.add_(ema_offset * torch.randn_like(p))
    saver = CheckpointSaver(model, torch.optim.AdamW(model.parameters()), model_ema=ema,
                            args=argparse.Namespace(model=name, num_classes=num_classes),
                            amp_scaler=NativeScaler(device="cpu"), checkpoint_dir=str(tmp_path))
    saver.save_checkpoint(epoch=0, metric=50.0)
    return tmp_path / "last.pth.tar", model, (ema.module.eval() if ema is not None else None)


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_the_documented_loads_give_the_trained_logits(tmp_path):
    path, model, _ = _saved(tmp_path, "dinat_tiny", **SMALL)
    x = torch.randn(2, 3, 64, 64)
    expected = _logits(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these drops the head: no warning
        for kwargs in (dict(pretrained_cfg_overlay=dict(file=str(path)), num_classes=10),
                       dict(pretrained_cfg_overlay=dict(file=str(path)))):  # the file's classes
            loaded = timm.create_model("dinat_tiny", pretrained=True, **SMALL, **kwargs)
            assert loaded.num_classes == 10
            torch.testing.assert_close(_logits(loaded, x), expected, atol=0, rtol=0)
    timm_way = timm.create_model("dinat_tiny", checkpoint_path=str(path), num_classes=10, **SMALL)
    torch.testing.assert_close(_logits(timm_way, x), expected, atol=0, rtol=0)


def test_a_head_that_cannot_fit_is_dropped_with_a_warning_naming_it_and_the_ways_to_keep_it(tmp_path):
    path, model, _ = _saved(tmp_path, "dinat_tiny", **SMALL)
    with pytest.warns(UserWarning) as caught:
        loaded = timm.create_model("dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                   num_classes=5, **SMALL)
    message = str(caught[0].message)
    assert "head.fc has 10 classes" in message and "num_classes=5" in message and str(path) in message
    assert "leave num_classes out" in message and "checkpoint_path=" in message
    assert loaded.num_classes == 5  # as asked; the body is the trained one
    torch.testing.assert_close(loaded.stages[0].blocks[0].attn.rpb, model.stages[0].blocks[0].attn.rpb)


def _validate_py_top1(name, path, folder, use_ema, num_classes):
    """What timm's validate.py computes for ``--checkpoint`` (and ``--use-ema``): create_model, timm's own
    load_checkpoint, the model's data config, timm's dataset and loader, top-1 over every image."""
    model = timm.create_model(name, num_classes=num_classes, **SMALL)
    timm.models.load_checkpoint(model, str(path), use_ema)
    config = resolve_data_config({}, model=model)
    dataset = create_dataset("", root=str(folder), is_training=False)
    loader = create_loader(dataset, input_size=config["input_size"], batch_size=4, use_prefetcher=False,
                           interpolation=config["interpolation"], mean=config["mean"], std=config["std"],
                           num_workers=0, crop_pct=config["crop_pct"], crop_mode=config.get("crop_mode", "center"))
    hits = total = 0
    with torch.no_grad():
        for images, targets in loader:
            hits += (model.eval()(images).argmax(-1) == targets).sum().item()
            total += len(targets)
    return 100 * hits / total


def test_the_accuracy_tools_checkpoint_top1_is_validate_pys(tmp_path):
    """Plain weights by default, the EMA's with ``use_ema``: the two score differently here, and each equals
    validate.py's computation on the same checkpoint and images."""
    folder = make_tiny_dataset(tmp_path / "data", num_classes=4, per_class=5)
    path, _, _ = _saved(tmp_path, "dinat_tiny", num_classes=4, ema_offset=0.5, **SMALL)
    expected = {use_ema: _validate_py_top1("dinat_tiny", path, folder, use_ema, 4) for use_ema in (False, True)}
    assert expected[False] != expected[True]  # so taking the wrong weights would show
    for use_ema, top1 in expected.items():
        row = evaluate("dinat_tiny", folder, split="", batch_size=4, checkpoint=path, use_ema=use_ema, **SMALL)
        assert row["top1"] == pytest.approx(top1, abs=1e-3), use_ema
        assert row["checkpoint"].startswith("last.pth.tar (sha256 ") and row["samples"] == 20


def test_the_accuracy_tool_names_the_checkpoint_in_its_row_never_random_weights(tmp_path, capsys):
    folder = make_tiny_dataset(tmp_path / "data", num_classes=4, per_class=2)
    path, _, _ = _saved(tmp_path, "dinat_tiny", num_classes=4, **SMALL)
    code = accuracy.main(["--model", "dinat_tiny", "--data-dir", str(folder), "--split", "", "--checkpoint", str(path),
                          "--workers", "0", "--device", "cpu", "--model-kwargs", json.dumps(SMALL)])
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and row["checkpoint"].startswith("last.pth.tar (sha256 ")
    assert row["what"] == "top-1 of the checkpoint named in the row (not the published weights)"
    for argv, words in [(["--checkpoint", str(tmp_path / "missing.pth")], "--checkpoint"),
                        (["--use-ema"], "--use-ema picks a --checkpoint's EMA weights")]:
        assert accuracy.main(["--model", "dinat_tiny", *argv]) == 2
        assert words in capsys.readouterr().err


def test_a_fine_tune_exports_checks_and_loads_through_local_dir_with_its_trained_logits(tmp_path, capsys):
    from dinat_timm.hub.__main__ import main as hub

    path, _, ema = _saved(tmp_path, "dinat_mini", num_classes=4, ema_offset=0.01)
    labels = tmp_path / "classes.txt"
    labels.write_text("cat\ndog\nbird\nfish\n")
    out = tmp_path / "export"
    assert hub(["export", "dinat_mini.in1k", str(out), "--checkpoint", str(path), "--label-names", str(labels)]) == 0
    assert "(state_dict_ema)" in capsys.readouterr().out  # the EMA weights, as timm's loader takes them
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 4 and config["label_names"] == ["cat", "dog", "bird", "fish"]
    assert "not the published weights" in (out / "README.md").read_text()
    assert hub(["check", str(out)]) == 0
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(_logits(loaded, x), _logits(ema, x), atol=0, rtol=0)
    capsys.readouterr()
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("a\nb\n")
    for argv in (["export", "dinat_mini.in1k", str(tmp_path / "o2"), "--checkpoint", str(path), "--label-names",
                  str(wrong)],
                 ["export", "dinat_tiny.in1k", str(tmp_path / "o3"), "--checkpoint", str(path)]):  # another arch
        assert hub(argv) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: export:"), lines
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()
