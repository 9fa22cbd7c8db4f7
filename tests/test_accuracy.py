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


# -- round three: folders, maps and lists that would shift labels, images that read wrong, faults said in one line


def test_images_in_a_sub_folder_of_a_class_folder_are_refused(tmp_path):
    """timm names a class by the folder an image is in: class_1/extra/ would be a class 'extra' and shift every
    later label (the oracle, 100 on the sound folder, would score less)."""
    data = _image_folder(tmp_path / "val", [f"class_{c}" for c in range(4)])
    _image_folder(tmp_path / "val" / "class_1" / "extra", [""], per_class=2)
    from timm.data import create_dataset

    assert len({t for _, t in create_dataset("", root=str(data)).reader.samples}) == 5  # what timm alone reads
    with pytest.raises(accuracy.LabelProblem, match=r"class_1/extra holds images inside a class folder"):
        accuracy.evaluate("oracle", data, model=Oracle(), split="")


def test_a_link_to_a_folder_inside_a_class_folder_and_two_names_for_one_folder_are_refused(tmp_path):
    data = _image_folder(tmp_path / "val", [f"class_{c}" for c in range(3)])
    (data / "class_0" / "loop").symlink_to(data)  # timm's walk would follow it round and round
    with pytest.raises(accuracy.LabelProblem, match=r"class_0/loop is a link to a folder inside a class folder"):
        accuracy.evaluate("oracle", data, model=Oracle(), split="")
    (data / "class_0" / "loop").unlink()
    (data / "class_3").symlink_to(data / "class_1")
    with pytest.raises(accuracy.LabelProblem, match="class folders class_1 and class_3 are one folder"):
        accuracy.evaluate("oracle", data, model=Oracle(), split="")


def test_images_beside_the_class_folders_and_a_folder_without_images_are_refused(tmp_path):
    data = _image_folder(tmp_path / "val", ["a", "b"])
    (data / "stray.png").write_bytes((data / "a" / "0.png").read_bytes())
    with pytest.raises(accuracy.LabelProblem, match="image file.*beside the class folders.*class named ''"):
        accuracy.evaluate("oracle", data, model=Oracle(), split="")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    assert accuracy.main(["--model", "nat_mini", "--data-dir", str(tmp_path / "empty"), "--split", "",
                          "--device", "cpu", "--workers", "0"]) == 2


@pytest.mark.parametrize("content, ext, words", [
    ("class_0\nclass_1\nclass_0\n", ".txt", "names class_0 twice"),
    ("class_0\nclass_9\n", ".txt", "no folder for 1 of the class map's 2 classes"),
    ("".join(f"class_{i}\n" for i in range(1001)), ".txt", "has 1001 classes and the model's scores 1000"),
    ("class_0\n\nclass_1\n", ".txt", "line 2 is empty"),
    ("{}", ".json", "a .json; the accuracy tool reads timm's text class maps"),
], ids=["repeated", "no-folder", "beyond-the-head", "empty-line", "json"])
def test_a_class_map_that_cannot_number_the_folders_is_refused(tmp_path, content, ext, words):
    data = _image_folder(tmp_path / "val", [f"class_{c}" for c in range(3)])
    cmap = tmp_path / f"map{ext}"
    cmap.write_text(content)
    with pytest.raises(accuracy.LabelProblem, match=words):
        accuracy.evaluate("oracle", data, model=Oracle(), split="", class_map=cmap)
    good = tmp_path / "good.txt"
    good.write_text("class_0\nclass_1\n")  # a map naming two of the three folders: class_2 is not read
    row = accuracy.evaluate("oracle", data, model=Oracle(), split="", class_map=good)
    assert row["samples"] == 6 and row["top1"] == 100.0


def _real_folder(tmp_path, n=4):
    from PIL import Image

    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(1, n + 1):
        Image.new("RGB", (64, 64), (40 + 20 * (i % 3),) * 3).save(folder / f"ILSVRC2012_val_{i:08d}.JPEG")
    return folder


@pytest.mark.parametrize("labels, words", [
    ([[0], ["1"], [2], [0]], "image 2's label '1' is not a class index"),
    ([[0], [1], [1000], [0]], "image 3's label 1000 is not a class index"),
    ([[], [], [], []], "every image's list is empty"),
])
def test_a_real_list_that_could_not_be_hit_is_refused(tmp_path, labels, words):
    real = tmp_path / "real.json"
    real.write_text(json.dumps(labels))
    with pytest.raises(accuracy.LabelProblem, match=words):
        accuracy.evaluate("oracle", _real_folder(tmp_path), model=Oracle(), split="", real_labels=real)


def test_real_labels_are_scored_as_real_never_as_the_imagenet_row(tmp_path, capsys):
    real = tmp_path / "real.json"
    real.write_text(json.dumps([[1], [2], [0], [1]]))
    folder = _real_folder(tmp_path)
    assert accuracy.evaluate("oracle", folder, model=Oracle(), split="", real_labels=real)["eval_set"] == "imagenet-real"
    with pytest.raises(accuracy.LabelProblem, match="--real-labels scores ReaL, and --dataset says imagenet"):
        accuracy.evaluate("oracle", folder, model=Oracle(), split="", real_labels=real, dataset="imagenet")


def test_16_bit_png_images_read_as_their_grey_not_white(tmp_path):
    """A 16-bit grey PNG (PIL's I;16) of level L·257 is the 8-bit grey L: the oracle scores it as the class."""
    import numpy as np
    from PIL import Image

    data = tmp_path / "val"
    for c in range(3):
        (data / f"class_{c}").mkdir(parents=True)
        for i in range(2):
            level = (40 + 20 * c) * 257
            Image.fromarray(np.full((72, 80), level, dtype=np.uint16)).save(data / f"class_{c}" / f"{i}.png")
    assert Image.open(data / "class_1" / "0.png").mode.startswith("I")
    assert Image.open(data / "class_1" / "0.png").convert("RGB").getpixel((0, 0)) == (255, 255, 255)  # PIL alone
    assert accuracy.evaluate("oracle", data, model=Oracle(), split="")["top1"] == 100.0


def test_a_dangling_image_link_is_said_as_such_and_odd_file_names_reach_the_row(tmp_path, capsys):
    data = _image_folder(tmp_path / "val", ["a", "b"])
    (data / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(accuracy.UnreadableImages, match=r"a/gone.png \(a dangling symlink: its target .*nowhere.png"):
        accuracy.evaluate("oracle", data, model=Oracle(), split="")
    odd = os.fsencode(str(data / "b")) + b"/\xff\xfe.png"
    with open(odd, "wb") as f:
        f.write(b"not an image")
    results = tmp_path / "acc.csv"
    code = accuracy.main(["--model", "nat_mini", "--data-dir", str(data), "--split", "", "--skip-unreadable",
                          "--results", str(results), "--device", "cpu", "--workers", "0",
                          "--model-kwargs", json.dumps(dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                                                            num_classes=2))])
    assert code == 0, capsys.readouterr().err
    from dinat_timm.results import read_csv

    row = read_csv(results).iloc[-1]
    assert row["skipped"] == 2 and "\\xff\\xfe.png" in row["skipped_files"] and "dangling symlink" in row["skipped_files"]


def test_nothing_scored_is_one_line_not_a_traceback(tmp_path, capsys):
    data = tmp_path / "val" / "a"
    data.mkdir(parents=True)
    (data / "broken.png").write_bytes(b"not an image")
    assert accuracy.main(["--model", "nat_mini", "--data-dir", str(tmp_path / "val"), "--split", "",
                          "--skip-unreadable", "--device", "cpu", "--workers", "0"]) == 2
    assert "all 1 images were unreadable" in _one_line(capsys.readouterr().err)
