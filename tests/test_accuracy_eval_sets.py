"""The accuracy tool on timm's evaluation sets (ImageNet, ReaL, V2, Sketch, A, R and the clean baselines),
scored on generated folders laid out like each real one by an oracle model whose answers are known; expected
numbers computed here from the construction (ReaL's through timm's own ``RealLabelsImagenet``)."""
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from _helpers import results_cli
from timm.data import ImageNetInfo
from timm.data.real_labels import RealLabelsImagenet

from dinat_timm.bench import accuracy
from dinat_timm.bench.accuracy import LabelProblem, evaluate, timm_info
from dinat_timm.results.timm_format import BASE_COLUMNS
from dinat_timm.results.writer import append_rows

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


SYNSETS = list(ImageNetInfo().label_names())


A_SYNSETS = timm_info("imagenet_a_synsets.txt").read_text().split()


A_INDICES = [int(x) for x in timm_info("imagenet_a_indices.txt").read_text().split()]


def _colour(c: int):
    """Class c (0..999) as a flat colour: red and green carry c // 32 and c % 32 in steps of 8."""
    return (8 * (c // 32) + 4, 8 * (c % 32) + 4, 128)


class Oracle(nn.Module):
    """Reads the class its image encodes and scores every class by closeness to it: top-1 is the encoded
    class, top-5 the five nearest indices."""

    num_classes = 1000
    pretrained_cfg = dict(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear", mean=MEAN, std=STD)

    def forward(self, x):
        rgb = [(x[:, i].mean(dim=(1, 2)) * STD[i] + MEAN[i]) * 255 for i in range(2)]
        c = ((rgb[0] - 4) / 8).round() * 32 + ((rgb[1] - 4) / 8).round()
        return -(torch.arange(1000)[None].float() - c[:, None]).abs()


def _top5(c: int):
    return sorted(range(1000), key=lambda i: (abs(i - c), i))[:5]


def _folder(root: Path, items, ext=".png"):
    """items: (class folder, file stem, encoded class)."""
    from PIL import Image

    for folder, stem, encoded in items:
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), _colour(encoded)).save(root / folder / f"{stem}{ext}", quality=100)
    return root


def _wrong(c: int, i: int) -> int:  # noqa: D401
    """Some images encode another class: every 7th the next one (top-5 still right), every 11th one far away."""
    return (c + 1) % 1000 if i % 7 == 0 else (c + 500) % 1000 if i % 11 == 0 else c


@pytest.fixture(scope="module")
def imagenet_val(tmp_path_factory):
    """1000 synset folders, one image each, named as ImageNet's validation files are (ReaL matches by name)."""
    root = tmp_path_factory.mktemp("imagenet") / "val"
    items = [(s, f"ILSVRC2012_val_{i + 1:08d}", _wrong(c, i)) for i, (c, s) in enumerate(enumerate(SYNSETS))]
    return _folder(root, items, ext=".JPEG"), items


def test_imagenet_scores_what_the_construction_says(imagenet_val):
    root, items = imagenet_val
    row = evaluate("oracle", root, model=Oracle(), dataset="imagenet", batch_size=100)
    truth = [(SYNSETS.index(s), e) for s, _, e in items]
    assert row["top1"] == pytest.approx(100 * np.mean([c == e for c, e in truth]), abs=5e-4)  # the row keeps 3 decimals
    assert row["top5"] == pytest.approx(100 * np.mean([c in _top5(e) for c, e in truth]), abs=5e-4)  # the row keeps 3 decimals
    assert row["eval_set"] == "imagenet" and 90 > row["top1"] > 70


def test_real_labels_score_as_timm_s_own_evaluator_does(imagenet_val, tmp_path):
    root, items = imagenet_val
    lists = []
    for i, (s, _, e) in enumerate(items):
        c = SYNSETS.index(s)
        lists.append([] if i % 9 == 0 else [c, (c + 3) % 1000] if i % 4 == 0 else [(c + 2) % 1000] if i % 5 == 0 else [c])
    real = tmp_path / "real.json"
    real.write_text(json.dumps(lists))
    row = evaluate("oracle", root, model=Oracle(), dataset="imagenet-real", real_labels=real, batch_size=100)
    # the reference: timm's evaluator over the oracle's outputs, in file-name order
    names = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in range(len(items))]
    reference = RealLabelsImagenet(names, real_json=str(real), topk=(1, 5))
    for start in range(0, len(items), 100):
        encoded = torch.tensor([e for _, _, e in items[start:start + 100]]).float()
        reference.add_result(-(torch.arange(1000)[None].float() - encoded[:, None]).abs())
    assert row["top1"] == pytest.approx(reference.get_accuracy(1), abs=5e-4)  # the row keeps 3 decimals
    assert row["top5"] == pytest.approx(reference.get_accuracy(5), abs=5e-4)  # the row keeps 3 decimals
    assert row["samples"] == sum(1 for labels in lists if labels)  # an empty list is not scored


def test_imagenet_a_scores_its_200_classes_through_timm_s_indices(tmp_path):
    """200 synset folders (timm's list for A); some images encode another A class, near or far. The logits are
    sliced to the 200 indices, so class j of the folder order is index A_INDICES[j]."""
    encoded = [A_INDICES[(j + 1) % 200] if j % 7 == 0 else A_INDICES[(j + 100) % 200] if j % 11 == 0 else idx
               for j, idx in enumerate(A_INDICES)]
    root = _folder(tmp_path / "imagenet-a", [(s, f"img{j}", e) for j, (s, e) in enumerate(zip(A_SYNSETS, encoded))])
    row = evaluate("oracle", root, model=Oracle(), dataset="imagenet-a", batch_size=50)
    sliced = -(torch.tensor(A_INDICES)[None].float() - torch.tensor(encoded)[:, None].float()).abs()  # the known logits
    top = sliced.topk(5, dim=-1).indices
    truth = torch.arange(200)[:, None]
    assert row["top1"] == pytest.approx(100 * top[:, :1].eq(truth).float().mean().item(), abs=5e-4)
    assert row["top5"] == pytest.approx(100 * top.eq(truth).any(dim=-1).float().mean().item(), abs=5e-4)
    assert row["samples"] == 200 and 70 < row["top1"] < 100


def test_the_clean_baseline_reads_the_200_classes_of_the_ordinary_val_set(imagenet_val):
    """The ordinary validation folders, with timm's class map of A's synsets: only those 200 are read, numbered
    in the map's order, and scored on the sliced logits."""
    root, items = imagenet_val
    row = evaluate("oracle", root, model=Oracle(), dataset="imagenet-a-clean", batch_size=100)
    kept = sorted((A_SYNSETS.index(s), e) for s, _, e in items if s in A_SYNSETS)
    truth = torch.tensor([j for j, _ in kept])[:, None]
    sliced = -(torch.tensor(A_INDICES)[None].float() - torch.tensor([e for _, e in kept])[:, None].float()).abs()
    top = sliced.topk(5, dim=-1).indices
    assert row["samples"] == 200
    assert row["top1"] == pytest.approx(100 * top[:, :1].eq(truth).float().mean().item(), abs=5e-4)
    assert row["top5"] == pytest.approx(100 * top.eq(truth).any(dim=-1).float().mean().item(), abs=5e-4)


@pytest.mark.parametrize("case", ["real length", "stray folder", "22k head", "unknown set"])
def test_sets_refuse_what_cannot_be_their_labels(tmp_path, imagenet_val, case):
    root, items = imagenet_val
    if case == "real length":
        (tmp_path / "r.json").write_text(json.dumps([[0]] * 999))
        with pytest.raises(LabelProblem, match="ReaL labels list 999 images and the set has 1000"):
            evaluate("oracle", root, model=Oracle(), dataset="imagenet-real", real_labels=tmp_path / "r.json")
    elif case == "stray folder":
        a = _folder(tmp_path / "a", [(s, "x", 0) for s in A_SYNSETS] + [(SYNSETS[0], "x", 0)])
        match = f"folder {SYNSETS[0]} is not one of the 200 synsets of imagenet-a"
        with pytest.raises(LabelProblem, match=match):
            evaluate("oracle", a, model=Oracle(), dataset="imagenet-a")
    elif case == "22k head":
        big = Oracle()
        big.num_classes = 21841
        with pytest.raises(LabelProblem, match="the model has 21841: use its in1k head"):
            evaluate("oracle", root, model=big, dataset="imagenet")
    else:
        with pytest.raises(LabelProblem, match="unknown evaluation set 'imagenet-c'; known: imagenet, imagenet-real"):
            evaluate("oracle", root, model=Oracle(), dataset="imagenet-c")


def _read(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_the_accuracy_tool_writes_timm_s_results_file(tmp_path, imagenet_val, monkeypatch, capsys):
    root, _ = imagenet_val
    monkeypatch.setattr(accuracy.timm, "create_model", lambda *a, **k: Oracle())
    monkeypatch.setattr(accuracy.timm.models, "is_model", lambda name: True)
    for fmt in ("csv", "json"):
        target = tmp_path / f"r.{fmt}"
        for _ in range(2):
            code = accuracy.main(["--model", "oracle", "--data-dir", str(root), "--dataset", "imagenet", "--device", "cpu",
                                  "--workers", "0", "--batch-size", "100", "--results-file", str(target),
                                  "--results-format", fmt])
            assert code == 0, capsys.readouterr().err
        if fmt == "csv":
            rows = _read(target.read_text())
            assert list(rows[0]) == BASE_COLUMNS and len(rows) == 2 and rows[0]["model"] == "oracle"
        else:
            data = json.loads(target.read_text())
            assert len(data) == 2 and set(data[0]) == set(BASE_COLUMNS)


def test_the_suite_scores_the_sets_it_is_pointed_at_and_names_them(tmp_path):
    import os
    import subprocess
    import sys

    from dinat_timm.results import read_csv

    root = Path(__file__).resolve().parents[1]
    a = _folder(tmp_path / "imagenet-a", [(s, "x", idx) for s, idx in zip(A_SYNSETS, A_INDICES)])
    results = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_accuracy.py", "--benchmark-only", "-p",
                          "no:cacheprovider", "-k", "eval_set", "--models", "nat_mini", "--eval-sets", f"imagenet-a={a}",
                          "--pretrained", "0", "--max-samples", "4", "--eval-batch-size", "4", f"--results-dir={results}"],
                         cwd=root, capture_output=True, text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert run.returncode == 0, run.stdout[-2000:]
    row = read_csv(results / "accuracy_imagenet.csv").iloc[-1]
    assert row["eval_set"] == "imagenet-a" and row["samples"] == 4 and row["model"] == "nat_mini"


def test_from_generated_sets_to_timm_s_files_and_the_leaderboard(tmp_path, imagenet_val):
    """ImageNet, ReaL and V2 (folders named 0 … 999, numbered as their names) scored by the oracle, the rows
    written as the accuracy tool writes them, then timm's files and the board: the numbers are the ones
    computed here from the construction."""
    from dinat_timm.results.boards import build_boards

    root, items = imagenet_val
    v2 = _folder(tmp_path / "v2", [(str(c), "x", c if c % 4 else (c + 9) % 1000) for c in range(1000)])
    (tmp_path / "real.json").write_text(json.dumps([[SYNSETS.index(s)] if i % 3 else [] for i, (s, _, _) in enumerate(items)]))
    rows = []
    for name, folder, extra in (("imagenet", root, {}), ("imagenet-real", root, {"real_labels": tmp_path / "real.json"}),
                                ("imagenetv2-matched-frequency", v2, {})):
        row = evaluate("oracle", folder, model=Oracle(), dataset=name, batch_size=200, **extra)
        rows.append(dict(row, model="dinat_tiny", suite="accuracy", status="ok", dataset=str(folder), pretrained=1))
    results = tmp_path / "results"
    append_rows(results / "accuracy_imagenet.csv", rows)
    assert results_cli("timm-results", results, "-o", tmp_path / "timm").returncode == 0
    truth = [(SYNSETS.index(s), e) for s, _, e in items]
    top1 = 100 * np.mean([c == e for c, e in truth])
    real_top1 = 100 * np.mean([c == e for i, (c, e) in enumerate(truth) if i % 3])
    v2_top1 = 100 * np.mean([c % 4 != 0 for c in range(1000)])
    imagenet = _read((tmp_path / "timm" / "results-imagenet.csv").read_text())[0]
    real = _read((tmp_path / "timm" / "results-imagenet-real.csv").read_text())[0]
    v2_row = _read((tmp_path / "timm" / "results-imagenetv2-matched-frequency.csv").read_text())[0]
    assert imagenet["top1"] == f"{top1:.3f}" and real["top1"] == f"{real_top1:.3f}" and v2_row["top1"] == f"{v2_top1:.3f}"
    assert real["top1_diff"] == f"{real_top1 - top1:+.3f}" and real["rank_diff"] == "0"
    build_boards(results)
    board = (results / "LEADERBOARD.md").read_text()
    assert "| model | ImageNet top-1 | paper | Δ | ReaL top-1 | V2 (matched) top-1 | device |" in board
    line = next(x for x in board.splitlines() if x.startswith("| dinat_tiny |"))
    assert f"| {top1:.2f} | 82.7 | {top1 - 82.7:+.2f} | {real_top1:.2f} | {v2_top1:.2f} |" in line
