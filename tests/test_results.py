"""The benchmark plumbing: pytest-benchmark JSON -> CSV, merge, compare verdicts, crash safety,
leaderboards, and accuracy (checked against an independent computation, and distributed)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

import dinat_timm  # noqa: F401
from dinat_timm.bench.accuracy import evaluate, make_tiny_dataset
from dinat_timm.results import append_rows, read_csv, rows_from_benchmark_json
from dinat_timm.results.boards import build_boards
from dinat_timm.results.compare import compare

from _helpers import results_cli

ROOT = Path(__file__).resolve().parents[1]

BENCH_FILE = """
import time
import pytest

@pytest.mark.parametrize("model,speed", [("dinat_mini", 1.0), ("swin_tiny_patch4_window7_224", 2.0)])
def test_speed(benchmark, model, speed):
    benchmark.pedantic(lambda: time.sleep(0.001), rounds=3, iterations=1)
    benchmark.extra_info.update(suite="throughput", model=model, infer_batch_size=8, infer_img_size=224,
                                infer_samples_per_sec=speed * SCALE, dtype="fp32", backend="auto:tiled")
"""


run_results_cli = results_cli


@pytest.fixture
def bench_json(pytester):
    """Real pytest-benchmark JSON from a real (sub-)session; ``make(scale)`` scales dinat's speed."""

    def make(scale: float, name: str) -> Path:
        pytester.makepyfile(**{f"test_{name}": BENCH_FILE.replace("SCALE", str(scale))})
        out = pytester.path / f"{name}.json"
        result = pytester.runpytest(f"test_{name}.py", "--benchmark-only", f"--benchmark-json={out}", "-p", "no:cacheprovider",
                                   "-p", "no:xdist")  # in this process, which may be an xdist worker
        result.assert_outcomes(passed=2)
        return out

    return make


def test_writer_turns_benchmark_json_into_rows(bench_json, tmp_path):
    rows = rows_from_benchmark_json(bench_json(1.0, "a"))
    assert {r["model"] for r in rows} == {"dinat_mini", "swin_tiny_patch4_window7_224"}
    assert all(r["time_rounds"] == 3 and r["time_median"] > 0 and r["status"] == "ok" for r in rows)
    csv = tmp_path / "board.csv"
    append_rows(csv, rows)
    append_rows(csv, [{"model": "extra", "top1": 80.0}])  # new columns are unioned, old rows kept
    table = read_csv(csv)
    assert len(table) == 3 and "top1" in table.columns and table["model"].tolist()[:2] == [r["model"] for r in rows]
    assert list(table.columns[:2]) == ["suite", "status"]  # timm-recognisable columns first


def test_cli_write_merge_compare(bench_json, tmp_path):
    base_csv, same_csv, slow_csv = tmp_path / "base.csv", tmp_path / "same.csv", tmp_path / "slow.csv"
    assert run_results_cli("write", bench_json(1.0, "base"), "-o", base_csv).returncode == 0
    assert run_results_cli("write", bench_json(1.02, "same"), "-o", same_csv).returncode == 0
    assert run_results_cli("write", bench_json(0.5, "slow"), "-o", slow_csv).returncode == 0

    ok = run_results_cli("compare", base_csv, same_csv, "--max-slowdown", "10%")
    assert ok.returncode == 0 and "verdict: PASS" in ok.stdout
    bad = run_results_cli("compare", base_csv, slow_csv, "--max-slowdown", "10%")
    assert bad.returncode == 1 and "verdict: FAIL" in bad.stdout and "×0.50 slower" in bad.stdout

    merged = tmp_path / "merged.csv"
    assert run_results_cli("merge", base_csv, slow_csv, "-o", merged).returncode == 0
    assert len(read_csv(merged)) == 2  # same configuration, same machine: the later run wins


def test_compare_relative_to_a_reference_in_the_same_run():
    def run(dinat, swin):  # our models and the reference differ in backend; the reference still divides
        return pd.DataFrame([
            dict(suite="throughput", model="dinat_mini", infer_batch_size=8, infer_samples_per_sec=dinat,
                 backend="auto:tiled", device="cpu"),
            dict(suite="throughput", model="swin_tiny_patch4_window7_224", infer_batch_size=8, infer_samples_per_sec=swin,
                 backend="timm", device="cpu"),
        ])

    # a machine twice as slow overall is not a regression once divided by the reference
    assert compare(run(10, 20), run(5, 10), 0.1, relative_to="swin_tiny_patch4_window7_224").passed
    assert not compare(run(10, 20), run(5, 10), 0.1).passed
    slower = compare(run(10, 20), run(7, 20), 0.1, relative_to="swin_tiny_patch4_window7_224")
    assert not slower.passed and "×0.70 slower" in slower.table["change"].tolist()


def test_compare_flags_top1_drop_failures_and_missing_rows():
    base = pd.DataFrame([dict(suite="accuracy", model="a", top1=80.0), dict(suite="accuracy", model="b", top1=70.0)])
    new = pd.DataFrame([dict(suite="accuracy", model="a", top1=79.8, status="ok")])
    verdict = compare(base, new, max_top1_drop=0.1)
    assert verdict.regressions == 1 and verdict.not_compared == 1  # a dropped 0.2 pt; b is listed as not compared
    assert "not compared: no such row in NEW" in verdict.table["change"].tolist()
    assert compare(base, new, max_top1_drop=0.1, require_same_rows=True).regressions == 2  # b's absence fails it
    assert compare(base.iloc[:1], pd.DataFrame([dict(suite="accuracy", model="a", top1=80.0, status="failed")])).regressions == 1


CRASHING = """
import os, signal
import pytest

def test_first(benchmark, leaderboard):
    leaderboard.context("throughput.csv", suite="throughput", model="ok_model")
    benchmark.pedantic(lambda: None, rounds=1)
    leaderboard.record("throughput.csv", suite="throughput", model="ok_model", infer_samples_per_sec=1.0)

def test_oom(benchmark, leaderboard):
    leaderboard.context("throughput.csv", suite="throughput", model="big_model")
    def step():
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
    benchmark.pedantic(step, rounds=1)

def test_crash(benchmark, leaderboard):
    leaderboard.context("throughput.csv", suite="throughput", model="crashing_model")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_oom_and_crash_keep_every_row_written_before(pytester):
    for name in ("conftest.py",):
        pytester.makepyfile(**{name[:-3]: (ROOT / "benchmarks" / name).read_text()})
    pytester.makepyfile(test_sweep=CRASHING)
    results = pytester.path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "test_sweep.py", "--benchmark-only", f"--results-dir={results}", "-p", "no:cacheprovider"],
        cwd=pytester.path, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == -9  # the sweep really died
    table = read_csv(results / "throughput.csv")
    assert table["model"].tolist() == ["ok_model", "big_model"]
    assert table["status"].tolist() == ["ok", "oom"]
    assert "out of memory" in table["error"].iloc[1]
    assert not list(results.glob("*.tmp"))  # no half-written file left behind


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path, monkeypatch):
    csv = tmp_path / "board.csv"
    append_rows(csv, [{"model": "a", "top1": 1.0}])
    before = csv.read_bytes()

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError):
        append_rows(csv, [{"model": "b", "top1": 2.0}])
    assert csv.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_boards_delta_vs_paper_and_plot(tmp_path):
    append_rows(tmp_path / "accuracy_imagenet.csv", [
        dict(suite="accuracy", model="dinat_tiny", dataset="/data/imagenet", pretrained=1, top1=82.5, top5=96.0),
        dict(suite="accuracy", model="nat_tiny", dataset="/data/imagenet", pretrained=0, top1=0.1, top5=0.5)])
    append_rows(tmp_path / "accuracy_generated.csv", [dict(suite="accuracy", model="dinat_tiny", dataset="generated-tiny", top1=5.0, top5=50.0)])
    append_rows(tmp_path / "throughput.csv", [dict(suite="throughput", model="dinat_tiny", infer_batch_size=8, infer_samples_per_sec=11.0,
                                                   param_count=28.0, device="cpu", backend="auto:tiled")])
    written = build_boards(tmp_path)
    board = read_csv(written["accuracy"])
    imagenet = board[board["dataset"] == "/data/imagenet"].iloc[0]
    assert imagenet["paper_top1"] == 82.7 and imagenet["top1_delta_vs_paper"] == pytest.approx(-0.2)
    # a pipeline check (generated images) and random weights are never read against the paper
    others = board[board["model"].eq("nat_tiny") | board["dataset"].eq("generated-tiny")]
    assert len(others) == 2 and others[["paper_top1", "top1_delta_vs_paper"]].isna().all().all()
    assert set(others["what"]) == {"pipeline check: random weights on generated images, not accuracy",
                                   "random weights on a real data set: not comparable to the paper"}
    assert written["plot"].stat().st_size > 10_000 and (tmp_path / "paper.csv").exists()


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


SMALL = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), num_classes=8)


def test_accuracy_matches_an_independent_computation(tmp_path):
    folder = make_tiny_dataset(tmp_path / "data", num_classes=8, per_class=3)
    torch.manual_seed(3)
    model = timm.create_model("nat_mini", **SMALL).eval()
    result = evaluate("nat_mini", folder, split="", batch_size=5, model=model)
    top1, top5, n = _independent_top_k(model, folder)
    assert result["samples"] == n == 24
    assert result["top1"] == pytest.approx(top1, abs=1e-3) and result["top5"] == pytest.approx(top5, abs=1e-3)
    assert 0 < result["top5"] < 100  # a test that could fail either way
    assert result["crop_pct"] == 0.875 and result["interpolation"] == "bicubic"


def test_distributed_accuracy_equals_single_process(tmp_path):
    folder = make_tiny_dataset(tmp_path / "data", num_classes=8, per_class=3)  # 24 images: 12 per rank
    args = ["--model", "nat_mini", "--data-dir", str(folder), "--split", "", "--batch-size", "5", "--workers", "0",
            "--model-kwargs", json.dumps(SMALL)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dinat_timm.bench.accuracy", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    distributed = json.loads(proc.stdout.strip().splitlines()[-1])
    torch.manual_seed(0)  # what the CLI does before building the model
    single = evaluate("nat_mini", folder, split="", batch_size=5, **SMALL)
    assert distributed["world_size"] == 2 and distributed["samples"] == single["samples"] == 24
    assert (distributed["top1"], distributed["top5"]) == (single["top1"], single["top5"])
