"""Accuracy as timm publishes it: the evaluation sets (ImageNet, ReaL, V2, Sketch, A, R and the clean baselines)
scored on generated folders laid out like each real one, by an oracle model whose answers are known, and timm's
results files written from the rows. Expected numbers are computed here from the construction (ReaL's through
timm's own ``RealLabelsImagenet``); the file format is checked against real rows of timm's files."""
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from timm.data import ImageNetInfo
from timm.data.real_labels import RealLabelsImagenet

from dinat_timm.bench import accuracy
from dinat_timm.bench.accuracy import LabelProblem, evaluate, timm_info
from dinat_timm.results.timm_format import BASE_COLUMNS, render, with_diffs
from dinat_timm.results.writer import append_rows

from _helpers import results_cli

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


# -- timm's files ------------------------------------------------------------------------------------------------

# Real rows of timm's results files (huggingface/pytorch-image-models, results/results-imagenet.csv and
# results/results-imagenet-real.csv at commit 0173a139a2c66db3a41ebfe1d8ac4fb02483642e; that version orders
# the columns model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation): the seven best of
# ImageNet, and the two best of ReaL with their diffs against the full ImageNet file.
TIMM_IMAGENET = """model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation
eva02_large_patch14_448.mim_m38m_ft_in22k_in1k,90.052,9.948,99.048,0.952,305.08,448,1.000,bicubic
eva02_large_patch14_448.mim_in22k_ft_in22k_in1k,89.966,10.034,99.012,0.988,305.08,448,1.000,bicubic
eva_giant_patch14_560.m30m_ft_in22k_in1k,89.786,10.214,98.992,1.008,"1,014.45",560,1.000,bicubic
eva02_large_patch14_448.mim_in22k_ft_in1k,89.624,10.376,98.950,1.050,305.08,448,1.000,bicubic
eva02_large_patch14_448.mim_m38m_ft_in1k,89.570,10.430,98.922,1.078,305.08,448,1.000,bicubic
eva_giant_patch14_336.m30m_ft_in22k_in1k,89.566,10.434,98.952,1.048,"1,013.01",336,1.000,bicubic
eva_giant_patch14_336.clip_ft_in1k,89.466,10.534,98.826,1.174,"1,013.01",336,1.000,bicubic
"""
TIMM_REAL = """model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation,top1_diff,top5_diff,rank_diff
eva02_large_patch14_448.mim_m38m_ft_in22k_in1k,91.129,8.871,98.713,1.287,305.08,448,1.000,bicubic,+1.077,-0.335,0
eva_giant_patch14_336.clip_ft_in1k,91.058,8.942,98.602,1.399,"1,013.01",336,1.000,bicubic,+1.592,-0.224,+5
"""


def _read(text):
    return list(csv.DictReader(io.StringIO(text)))


def _rows_of(text):
    return [dict(r, param_count=float(r["param_count"].replace(",", ""))) | {k: float(r[k]) for k in
            ("top1", "top1_err", "top5", "top5_err", "crop_pct")} | {"img_size": int(r["img_size"])} for r in _read(text)]


def test_the_files_reproduce_real_rows_of_timm_s_files():
    import pandas as pd

    base, real = pd.DataFrame(_rows_of(TIMM_IMAGENET)), pd.DataFrame(_rows_of(TIMM_REAL))
    ours_base = _read(render(with_diffs(base, base).drop(columns=["top1_diff", "top5_diff", "rank_diff"]), diffs=False))
    ours_real = _read(render(with_diffs(real, base), diffs=True))
    assert list(ours_base[0]) == BASE_COLUMNS and list(ours_real[0]) == BASE_COLUMNS + ["top1_diff", "top5_diff", "rank_diff"]
    for ours, theirs in ((ours_base, _read(TIMM_IMAGENET)), (ours_real, _read(TIMM_REAL))):
        assert [{k: r[k] for k in theirs[0]} for r in ours] == theirs  # every cell, as timm wrote it


def test_timm_results_writes_every_set_with_rows_and_comparisons_where_their_base_has_rows(tmp_path):
    rows = []
    for model, scores in (("dinat_tiny.in1k", {"imagenet": (82.7, 96.2), "imagenet-real": (87.9, 97.5),
                                                "imagenet-a-clean": (95.0, 99.0), "imagenet-a": (20.0, 50.0),
                                                "sketch": (30.1, 50.2)}),
                          ("dinat_mini.in1k", {"imagenet": (81.8, 95.8), "imagenet-real": (88.0, 97.4),
                                               "imagenet-r": (40.0, 60.0)})):
        for eval_set, (top1, top5) in scores.items():
            rows.append(dict(suite="accuracy", status="ok", model=model, img_size=224, top1=top1, top1_err=100 - top1,
                             top5=top5, top5_err=100 - top5, param_count=27.91 if "tiny" in model else 20.02,
                             crop_pct=0.875, interpolation="bicubic", dataset="/data/x", pretrained=1,
                             eval_set=eval_set))
    append_rows(tmp_path / "accuracy_imagenet.csv", rows)
    out = tmp_path / "timm"
    result = results_cli("timm-results", tmp_path, "-o", out)
    assert result.returncode == 0, result.stderr
    # imagenet-r has no clean base: not written; the rest are
    assert sorted(p.name for p in out.iterdir() if p.name != ".dinat_timm.lock") == sorted(f"results-{s}.csv" for s in (
        "imagenet", "imagenet-real", "imagenet-a-clean", "imagenet-a", "sketch"))
    imagenet = _read((out / "results-imagenet.csv").read_text())
    assert [r["model"] for r in imagenet] == ["dinat_tiny.in1k", "dinat_mini.in1k"] and imagenet[0]["top1"] == "82.700"
    real = _read((out / "results-imagenet-real.csv").read_text())
    assert [(r["model"], r["top1_diff"], r["top5_diff"], r["rank_diff"]) for r in real] == [
        ("dinat_mini.in1k", "+6.200", "+1.600", "+1"), ("dinat_tiny.in1k", "+5.200", "+1.300", "-1")]
    assert _read((out / "results-imagenet-a.csv").read_text())[0]["top1_diff"] == "-75.000"
    again = results_cli("timm-results", tmp_path, "-o", out)
    assert again.returncode == 2 and "exists: pass --overwrite" in again.stderr


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
