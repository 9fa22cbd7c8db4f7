"""Bad input, second round: every command line refuses with exit 2 and one line naming the problem, before
a long run where it can, without writing or losing anything. Real files throughout: PNG image folders, CSVs
as the suites write them, pytest-benchmark JSON, a real read-only CSV, real exports."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.bench import accuracy
from dinat_timm.results.writer import append_rows

from _helpers import results_cli

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# -- 1. labels: an oracle model proves them --------------------------------------------------------------------

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


# -- 2. a measured result is never lost --------------------------------------------------------------------------

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


# -- 3. the hub never overwrites what it did not write; all or nothing --------------------------------------------

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


# -- 4. impossible figures, and files that are not what they claim -----------------------------------------------

def _speed_row(speed, **extra):
    return dict(suite="throughput", status="ok", model="dinat_mini", dtype="fp32", device="cpu (x)", backend="tiled",
                infer_batch_size=8, infer_img_size=224, infer_samples_per_sec=speed, **extra)


@pytest.mark.parametrize("speed", [0.0, -3.0, 1e308])
def test_compare_refuses_impossible_speeds(tmp_path, speed):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    append_rows(good, [_speed_row(10.0)])
    bad.write_text(good.read_text().replace(",10.0", f",{speed!r}"))
    result = results_cli("compare", good, bad)
    assert result.returncode == 2 and "infer_samples_per_sec" in _one_line(result.stderr)


def test_compare_refuses_a_file_compared_with_itself_or_a_link_to_it(tmp_path):
    path = tmp_path / "a.csv"
    append_rows(path, [_speed_row(10.0)])
    (tmp_path / "link.csv").symlink_to(path)
    for other in (path, tmp_path / "link.csv"):
        result = results_cli("compare", path, other)
        assert result.returncode == 2 and "are the same file" in _one_line(result.stderr)


def _benchmark_json(path, extra):
    path.write_text(json.dumps({"benchmarks": [{"name": "test_x", "fullname": "test_x", "extra_info": extra,
                                                "stats": {"min": 0.1, "median": 0.1, "mean": 0.1, "stddev": 0.0,
                                                          "rounds": 3}}]}))
    return path


@pytest.mark.parametrize("case", ["text speed", "another suite", "cut last line", "not json"])
def test_write_refuses_and_leaves_the_csv_as_it_was(tmp_path, case):
    csv = tmp_path / "throughput.csv"
    append_rows(csv, [_speed_row(10.0)])
    if case == "cut last line":
        csv.write_bytes(csv.read_bytes()[:-8])
    before = csv.read_bytes()
    extra = _speed_row(11.0)
    if case == "text speed":
        extra["infer_samples_per_sec"] = "fast"
    if case == "another suite":
        extra = dict(suite="memory", status="ok", model="m", peak_mem_mb=10.0)
    source = _benchmark_json(tmp_path / "b.json", extra)
    if case == "not json":
        source.write_text("{oops")
    result = results_cli("write", source, "-o", csv)
    assert result.returncode == 2, result.stdout
    words = {"text speed": "'infer_samples_per_sec' needs finite numbers", "another suite": "would mix the suites",
             "cut last line": "does not end with a line break", "not json": "not pytest-benchmark's"}[case]
    assert words in _one_line(result.stderr)
    assert csv.read_bytes() == before


def test_merge_refuses_several_suites_and_writes_nothing(tmp_path):
    append_rows(tmp_path / "t.csv", [_speed_row(10.0)])
    append_rows(tmp_path / "m.csv", [dict(suite="memory", status="ok", model="m", peak_mem_mb=10.0)])
    result = results_cli("merge", tmp_path / "t.csv", tmp_path / "m.csv", "-o", tmp_path / "out.csv")
    assert result.returncode == 2 and "several suites" in _one_line(result.stderr)
    assert not (tmp_path / "out.csv").exists()


def test_boards_on_a_folder_without_rows_writes_nothing(tmp_path):
    result = results_cli("boards", "--results-dir", tmp_path)
    assert result.returncode == 2 and "holds no results rows" in _one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_a_csv_with_a_byte_order_mark_reads_as_its_header_says(tmp_path):
    path = tmp_path / "bom.csv"
    append_rows(path, [_speed_row(10.0)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as a spreadsheet saves it
    other = tmp_path / "other.csv"
    append_rows(other, [_speed_row(10.2)])
    result = results_cli("compare", path, other)
    assert result.returncode == 0 and "verdict: PASS" in result.stdout


# -- 6. sizes and names the scaling suite cannot take ------------------------------------------------------------

def test_the_scaling_suite_refuses_sizes_that_cannot_fit_and_unknown_names(tmp_path):
    from dinat_timm.bench.scaling import check_fits, estimated_step_bytes, step_fn

    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_scaling.py", "--benchmark-only",
                          "--collect-only", "-q", "-p", "no:cacheprovider", "--scaling-sizes", "1000000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 4 and "--scaling-sizes: 1000000 is above 4096" in run.stderr
    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_throughput.py", "--benchmark-only",
                          "--collect-only", "-q", "-p", "no:cacheprovider", "--dtypes", "fp64"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 4 and "'fp64' is not a dtype the suites know; valid: fp32, bf16, fp16" in run.stderr
    assert estimated_step_bytes("dinat_tiny", 448, 1, "train") > 586.5 * 2**20  # above the measured step
    with pytest.raises(MemoryError, match=r"a step needs about .* GiB \(estimated\) and cpu has .* GiB free; not run"):
        check_fits("dinat_tiny", 4096, 64, "train", "cpu")
    with pytest.raises(ValueError, match="unknown step mode 'backward'"):
        step_fn(nn.Linear(2, 2), torch.zeros(1, 2), "backward", "fp32")
    with pytest.raises(ValueError, match="unknown dtype 'fp64'; valid: fp32, bf16, fp16"):
        step_fn(nn.Linear(2, 2), torch.zeros(1, 2), "forward", "fp64")


ONE_ROW = """
def test_infer(benchmark, leaderboard):
    benchmark.pedantic(lambda: None, rounds=1)
    leaderboard.record("throughput.csv", suite="throughput", model="m", dtype="fp32", infer_batch_size=8,
                       infer_img_size=224, infer_samples_per_sec=12.5)
"""


def test_a_suite_row_that_cannot_be_written_is_printed_not_lost(pytester):
    pytester.makepyfile(conftest=(ROOT / "benchmarks" / "conftest.py").read_text(), test_one=ONE_ROW)
    results = pytester.path / "results"
    results.mkdir()
    (results / "throughput.csv").write_text("suite,status,model,infer_samples_per_sec\nthroughput,ok,x,1.0\n")
    (results / "throughput.csv").chmod(0o444)  # read-only: the writer refuses to replace it
    run = subprocess.run([sys.executable, "-m", "pytest", "test_one.py", "--benchmark-only", f"--results-dir={results}",
                          "-p", "no:cacheprovider"], cwd=pytester.path, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lost = [line for line in run.stdout.splitlines() if line.startswith("NOT WRITTEN to")]
    assert len(lost) == 1 and "read-only" in lost[0], run.stdout[-2000:]
    assert json.loads(lost[0].split("the measured row: ", 1)[1])["infer_samples_per_sec"] == 12.5
