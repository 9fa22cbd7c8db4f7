"""The accuracy tool (``dinat_timm.bench.accuracy``): an oracle model scores what the labels say; label
problems, unreadable images and bad arguments are refused in one line before a model loads; the result equals
an independent computation and a distributed run; real image folders throughout."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from PIL import Image

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.bench import accuracy
from dinat_timm.bench.accuracy import evaluate, make_tiny_dataset
from dinat_timm.results import append_rows

ROOT = Path(__file__).resolve().parents[1]


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


class Oracle(nn.Module):
    """Right by construction: class c's images are a flat grey of level 40 + 20·c, which it reads back
    (undoing the normalisation) and answers with c. Any top-1 below 100% is a label that is not the class."""

    num_classes = 1000
    pretrained_cfg = dict(input_size=(3, 64, 64), crop_pct=1.0, interpolation="bilinear", mean=MEAN, std=STD)

    def forward(self, x):
        level = (x[:, 0].mean(dim=(1, 2)) * STD[0] + MEAN[0]) * 255
        c = ((level - 40) / 20).round().long().clamp(0, self.num_classes - 1)
        return nn.functional.one_hot(c, self.num_classes).float()


def _image_folder(root: Path, classes, per_class=3, empty=()):
    from PIL import Image

    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        if name in empty:
            continue
        for i in range(per_class):
            Image.new("RGB", (72, 80), (40 + 20 * c,) * 3).save(folder / f"{i}.png")
    return root


def test_the_oracle_scores_100_on_sound_labels(tmp_path):
    data = _image_folder(tmp_path / "val", [f"class_{c}" for c in range(6)])
    row = accuracy.evaluate("oracle", data, model=Oracle(), split="validation")
    assert row["top1"] == 100.0 and row["samples"] == 18


def test_an_empty_class_folder_is_refused_not_scored_against_shifted_labels(tmp_path):
    data = _image_folder(tmp_path / "val", [f"class_{c}" for c in range(6)], empty={"class_2"})
    with pytest.raises(accuracy.LabelProblem, match=r"class folder\(s\) without an image: class_2"):
        accuracy.evaluate("oracle", data, model=Oracle())
    # what timm's ImageFolder alone would have done: every class after class_2 numbered one lower
    from timm.data import create_dataset

    labels = sorted({t for _, t in create_dataset("", root=str(data), split="validation").reader.samples})
    assert labels == [0, 1, 2, 3, 4]


def test_a_split_that_is_not_there_is_refused(tmp_path):
    _image_folder(tmp_path / "train", ["a", "b"])
    with pytest.raises(accuracy.LabelProblem, match=r"has no split 'validation' \(it has train\)"):
        accuracy.evaluate("oracle", tmp_path, model=Oracle(), split="validation")
    assert accuracy.evaluate("oracle", tmp_path, model=Oracle(), split="train")["top1"] == 100.0


def test_synset_folders_must_be_imagenet_1k_in_order_and_the_head_1000_classes(tmp_path):
    from timm.data import ImageNetInfo

    synsets = list(ImageNetInfo().label_names())
    subset = _image_folder(tmp_path / "subset", synsets[:3] + [synsets[500]], per_class=1)
    with pytest.raises(accuracy.LabelProblem, match="4 ImageNet synset folders, not the 1000 of ImageNet-1k"):
        accuracy.check_labels(subset, 1000)
    with pytest.raises(accuracy.LabelProblem, match="21841 classes: score ImageNet-1k with a 1000-class head"):
        accuracy.check_labels(subset, 21841)
    with pytest.raises(accuracy.LabelProblem, match="has 4 class folders and the model 3 classes"):
        accuracy.check_labels(_image_folder(tmp_path / "four", list("abcd"), per_class=1), 3)


def test_a_results_path_that_cannot_take_the_row_is_refused_before_the_run(tmp_path, capsys):
    readonly = tmp_path / "acc.csv"
    append_rows(readonly, [dict(suite="accuracy", status="ok", model="m", top1=1.0)])
    readonly.chmod(0o444)
    before = readonly.read_bytes()
    for target, words in ((tmp_path / "no-dir" / "a.csv", "does not exist"), (readonly, "read-only"),
                          (ROOT / "results" / "throughput.csv", "holds ['throughput'] rows")):
        assert accuracy.main(["--model", "nat_mini", "--results", str(target), "--device", "cpu", "--workers", "0"]) == 2
        out, err = capsys.readouterr()
        assert words in _one_line(err) and out == ""  # refused before any model or image was touched
    assert readonly.read_bytes() == before


def test_a_row_that_cannot_be_written_after_the_run_is_printed(tmp_path, capsys, monkeypatch):
    results = tmp_path / "acc.csv"
    real = accuracy.evaluate

    def evaluate_then_lose_the_file(*args, **kwargs):
        row = real(*args, **kwargs)
        results.write_text("suite,status,model,top1\naccuracy,ok,m,1.0\n")
        results.chmod(0o444)  # made read-only while the model was being scored
        return row

    monkeypatch.setattr(accuracy, "evaluate", evaluate_then_lose_the_file)
    code = accuracy.main(["--model", "nat_mini", "--results", str(results), "--device", "cpu", "--batch-size", "8",
                          "--workers", "0", "--model-kwargs", json.dumps(dict(embed_dim=16, depths=[1, 1, 1, 1],
                                                                                 num_heads=[1, 2, 2, 4]))])
    out, err = capsys.readouterr()
    assert code == 2 and "could not be written" in _one_line(err) and str(results) in err
    row = json.loads(out.splitlines()[0])
    assert row["model"] == "nat_mini" and row["top1"] >= 0 and row["suite"] == "accuracy"


@pytest.mark.parametrize("argv, words", [
    (["--model", "no_such_model"], "--model 'no_such_model' is not a registered model"),
    (["--model", "nat_mini", "--device", "cuda:7"], "--device cuda:7: CUDA is not available here"),
    (["--model", "nat_mini", "--device", "tpu"], "--device 'tpu'"),
    (["--model", "nat_mini", "--pretrained"], "no pretrained weights for 'nat_mini'"),
])
def test_the_accuracy_tool_refuses_in_one_line(argv, words, capsys, hf_cache, torch_hub_dir):
    if "cuda" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert accuracy.main(argv + ["--workers", "0"]) == 2
    assert words in _one_line(capsys.readouterr().err)


@pytest.fixture
def images_with_one_broken(tmp_path):
    from dinat_timm.bench.accuracy import make_tiny_dataset

    folder = make_tiny_dataset(tmp_path / "data", num_classes=3, per_class=2)
    broken = folder / "class_001" / "img_0.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature, then nothing decodable
    return folder, broken


SMALL = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), num_classes=3)


def test_an_unreadable_image_fails_the_evaluation_by_name(images_with_one_broken):
    from dinat_timm.bench.accuracy import UnreadableImages, evaluate

    folder, broken = images_with_one_broken
    with pytest.raises(UnreadableImages, match=rf"{broken.name}.*--skip-unreadable"):
        evaluate("nat_mini", folder, split="", batch_size=4, **SMALL)


def test_a_skipped_image_is_counted_named_and_flagged_never_replaced(images_with_one_broken):
    from dinat_timm.bench.accuracy import evaluate, skipped_flag

    folder, broken = images_with_one_broken
    torch.manual_seed(0)
    model = timm.create_model("nat_mini", **SMALL).eval()
    row = evaluate("nat_mini", folder, split="", batch_size=4, model=model, skip_unreadable=True)
    assert row["samples"] == 5 and row["skipped"] == 1 and broken.name in row["skipped_files"]
    assert skipped_flag(row).startswith("incomplete: 1 unreadable image(s) skipped")
    broken.unlink()  # the same set without the broken image: the same figures (nothing was read twice)
    again = evaluate("nat_mini", folder, split="", batch_size=4, model=model)
    assert (again["samples"], again["top1"], again["top5"]) == (row["samples"], row["top1"], row["top5"])


@pytest.mark.parametrize("args,problem", [
    (["--max-samples", "-1"], "--max-samples must be >= 0"),
    (["--data-dir", "/no/such/imagenet"], "--data-dir /no/such/imagenet: no such file or directory"),
    (["--results", "{tmp}"], "is a directory: give the CSV file"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_accuracy_command_checks_its_arguments_before_loading_a_model(tmp_path, capsys, args, problem):
    from dinat_timm.bench.accuracy import main

    code = main(["--model", "no_such_model"] + [a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1


def _independent_top_k(model, folder):
    """Top-1/top-5 without timm's data pipeline: PIL, torchvision functional ops, numpy ranks."""
    import torchvision.transforms.functional as TF

    cfg = model.pretrained_cfg
    size = cfg["input_size"][-1]
    scale = int(np.floor(size / cfg["crop_pct"]))
    hits1 = hits5 = n = 0
    classes = sorted(p.name for p in Path(folder).iterdir())
    for label, cls in enumerate(classes):
        for path in sorted((Path(folder) / cls).iterdir()):
            img = Image.open(path).convert("RGB")
            img = TF.resize(img, scale, interpolation=TF.InterpolationMode.BICUBIC)
            img = TF.center_crop(img, size)
            x = TF.normalize(TF.to_tensor(img), cfg["mean"], cfg["std"])
            with torch.no_grad():
                logits = model(x[None])[0].numpy()
            ranked = np.argsort(-logits)
            hits1 += int(ranked[0] == label)
            hits5 += int(label in ranked[:5])
            n += 1
    return 100 * hits1 / n, 100 * hits5 / n, n


SMALL2 = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), num_classes=8)


def test_accuracy_matches_an_independent_computation(tmp_path):
    folder = make_tiny_dataset(tmp_path / "data", num_classes=8, per_class=3)
    torch.manual_seed(3)
    model = timm.create_model("nat_mini", **SMALL2).eval()
    result = evaluate("nat_mini", folder, split="", batch_size=5, model=model)
    top1, top5, n = _independent_top_k(model, folder)
    assert result["samples"] == n == 24
    assert result["top1"] == pytest.approx(top1, abs=1e-3) and result["top5"] == pytest.approx(top5, abs=1e-3)
    assert 0 < result["top5"] < 100  # a test that could fail either way
    assert result["crop_pct"] == 0.875 and result["interpolation"] == "bicubic"


def test_distributed_accuracy_equals_single_process(tmp_path):
    folder = make_tiny_dataset(tmp_path / "data", num_classes=8, per_class=3)  # 24 images: 12 per rank
    args = ["--model", "nat_mini", "--data-dir", str(folder), "--split", "", "--batch-size", "5", "--workers", "0",
            "--model-kwargs", json.dumps(SMALL2)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dinat_timm.bench.accuracy", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    distributed = json.loads(proc.stdout.strip().splitlines()[-1])
    torch.manual_seed(0)  # what the CLI does before building the model
    single = evaluate("nat_mini", folder, split="", batch_size=5, **SMALL2)
    assert distributed["world_size"] == 2 and distributed["samples"] == single["samples"] == 24
    assert (distributed["top1"], distributed["top5"]) == (single["top1"], single["top5"])
