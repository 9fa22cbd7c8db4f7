"""Leaderboards a person reads at a glance, the scaling suite's fits, and what a newcomer meets at the
end of a benchmark run."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dinat_timm.results import append_rows, read_csv
from dinat_timm.results.boards import build_boards
from dinat_timm.results.scaling import growth_exponent, scaling_board

ROOT = Path(__file__).resolve().parents[1]
SWIN = "swin_tiny_patch4_window7_224"


def _speed(model, device, dtype, compiled, infer, train, run, backend="auto:tiled"):
    common = dict(suite="throughput", status="ok", model=model, device=device, dtype=dtype, compile=compiled,
                  channels_last=0, backend=backend if model != SWIN else "timm", param_count=28.0, gmacs=4.5, run_id=run)
    return [dict(common, infer_batch_size=8, infer_img_size=224, infer_samples_per_sec=infer),
            dict(common, train_batch_size=8, train_img_size=224, train_samples_per_sec=train)]


def test_leaderboard_md_has_a_table_per_device_dtype_and_mode_with_ratios_to_swin_of_the_same_run(tmp_path):
    rows = (_speed("dinat_tiny", "NVIDIA H200", "bf16", 0, 4000, 1000, "gpu-1") + _speed(SWIN, "NVIDIA H200", "bf16", 0, 5000, 2000, "gpu-1")
            + _speed("dinat_tiny", "NVIDIA H200", "bf16", 1, 6000, 1500, "gpu-1") + _speed(SWIN, "NVIDIA H200", "bf16", 1, 3000, 1000, "gpu-1")
            + _speed("dinat_tiny", "cpu (x)", "fp32", 0, 12, 4, "cpu-1") + _speed(SWIN, "cpu (x)", "fp32", 0, 16, 5, "cpu-1")
            # a later CPU run that measured DiNAT-T only: its ratio needs a Swin-T of its own run
            + _speed("nat_tiny", "cpu (x)", "fp32", 0, 11, 3, "cpu-2"))
    append_rows(tmp_path / "throughput.csv", rows)
    append_rows(tmp_path / "memory.csv", [dict(suite="memory", model="dinat_tiny", device="NVIDIA H200", dtype="bf16",
                                               mode="train", batch=128, img_size=224, peak_mem_mb=9551.0,
                                               method="cuda.max_memory_allocated")])
    build_boards(tmp_path)
    md = (tmp_path / "LEADERBOARD.md").read_text()
    for title in ("### NVIDIA H200 · bf16 · eager", "### NVIDIA H200 · bf16 · compiled", "### cpu (x) · fp32 · eager"):
        assert title in md
    eager = md.split("### NVIDIA H200 · bf16 · eager")[1].split("###")[0]
    line = next(line for line in eager.splitlines() if line.startswith("| dinat_tiny"))
    assert "| 4000 | ×0.80 | 1000 | ×0.50 |" in line and "train 9551 (b128)" in line
    compiled = md.split("### NVIDIA H200 · bf16 · compiled")[1].split("###")[0]
    assert "| 6000 | ×2.00 | 1500 | ×1.50 |" in compiled
    cpu = md.split("### cpu (x) · fp32 · eager")[1].split("##")[0]
    nat = next(line for line in cpu.splitlines() if line.startswith("| nat_tiny"))
    assert "| 11 | – | 3 | – |" in nat  # no Swin-T in its run: no ratio, rather than one against another run's
    board = read_csv(tmp_path / "leaderboard_speed.csv")
    assert board.loc[(board["model"] == "dinat_tiny") & (board["device"] == "cpu (x)"), "infer_vs_reference"].iloc[0] == 0.75


def test_generated_data_is_a_pipeline_check_never_beside_the_paper(tmp_path):
    append_rows(tmp_path / "accuracy_generated.csv", [dict(suite="accuracy", model="dinat_tiny", dataset="generated-tiny",
                                                           pretrained=0, top1=0.0, top5=20.0)])
    build_boards(tmp_path)
    board = read_csv(tmp_path / "leaderboard_accuracy.csv")
    assert board["paper_top1"].isna().all() and board["what"].iloc[0].startswith("pipeline check")
    md = (tmp_path / "LEADERBOARD.md").read_text()
    assert "82.7" not in md and "No measurement of the published weights on ImageNet yet" in md
    assert "1 row(s): pipeline check: random weights on generated images, not accuracy" in md


def test_growth_exponents_are_the_slopes_of_the_log_log_fit():
    tokens = [3136, 6400, 12544]
    assert growth_exponent(tokens, [2.0 * t for t in tokens]) == pytest.approx(1.0)
    assert growth_exponent(tokens, [1e-3 * t * t for t in tokens]) == pytest.approx(2.0)
    assert growth_exponent([3136], [1.0]) is None and growth_exponent(tokens, [1.0, 0.0, 2.0]) == pytest.approx(
        growth_exponent([3136, 12544], [1.0, 2.0]))
    rows = pd.DataFrame([dict(suite="scaling", status="ok", model=m, mode="forward", device="cpu", dtype="fp32",
                              backend="auto", batch_size=2, img_size=s, tokens=(s // 4) ** 2, dilations="-",
                              step_time=2 * ((s // 4) ** 2) ** p / 1000, peak_mem_mb=((s // 4) ** 2) ** p / 100,
                              method="allocator events (torch.profiler)")
                         for m, p in (("linear", 1.0), ("quadratic", 2.0)) for s in (224, 320, 448)])
    board = scaling_board(rows)
    fits = board.drop_duplicates("model").set_index("model")
    assert fits.loc["linear", "time_exponent"] == pytest.approx(1.0) and fits.loc["quadratic", "memory_exponent"] == pytest.approx(2.0)
    assert fits.loc["linear", "sizes"] == "224, 320, 448"
    # rows that read the resident set (no method, or another one) give time but no memory exponent
    for method in (None, "VmHWM-VmRSS in a fresh process"):
        fits = scaling_board(rows.assign(method=method)).drop_duplicates("model").set_index("model")
        assert fits.loc["quadratic", "time_exponent"] == pytest.approx(2.0)
        assert pd.isna(fits.loc["quadratic", "memory_exponent"]) and fits["peak_mem_mb"].isna().all()


def test_dilations_follow_the_published_configs_at_each_size():
    from dinat_timm.bench.scaling import DINAT_TINY_DILATIONS, dilations_for

    assert dilations_for("dinat_tiny", 224) == ("imagenet-224", DINAT_TINY_DILATIONS["imagenet-224"])
    assert dilations_for("dinat_tiny", 512)[0] == "ade20k-512" and dilations_for("dinat_tiny", 1024)[0] == "coco-800"
    assert dilations_for("nat_tiny", 1024) == ("1 everywhere", None) and dilations_for("convnext_tiny", 512) == ("-", None)
    for label, dilations in DINAT_TINY_DILATIONS.items():
        assert [len(d) for d in dilations] == [3, 4, 18, 5], label  # DiNAT-T's depths


def test_the_estimate_counts_slow_tests_ahead_from_their_own_group():
    from dinat_timm.bench.session import BenchSession

    session = BenchSession(options=None, run_id="x")
    mini, large = ("throughput", "dinat_mini", "infer"), ("throughput", "dinat_large", "infer")
    session.to_run = [mini] + [large] * 3 + [("memory", "m", "")]
    session.test_done(mini, 1.0, ran=True)
    # the line of the first dinat_large test: two more ahead, timed like the suite so far (1 s each), and
    # a memory test whose suite has not run yet: counted, not guessed
    assert session.estimate_left() == "~2s left + 1 memory not yet timed"
    session.test_done(large, 30.0, ran=True)
    assert session.estimate_left() == "~30s left + 1 memory not yet timed"  # the slow one ahead, by its own time


def test_the_results_cli_help_imports_neither_torch_nor_timm():
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "dinat_timm.results", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "compare" in run.stdout
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "dinat_timm.results" in imported and not {"torch", "timm", "pandas"} & imported


def test_a_run_says_why_each_group_did_not_run_and_ends_on_its_own_lines(tmp_path):
    """The README's main command in small: the op suite where triton cannot run (no GPU) and the
    memory suite on a compiled configuration (measured eagerly) say so once per group; the closing
    lines start at the left margin, after pytest-benchmark's tables."""
    cmd = [sys.executable, "-m", "pytest", "benchmarks/test_op_speed.py", "benchmarks/test_memory.py", "--benchmark-only",
           "-p", "no:cacheprovider", "--op-backends", "tiled,triton", "-k", "stage3 or compile", "--models", "nat_mini",
           "--reference-models=", "--compile", "1", "--rounds", "2", "--warmup", "1", f"--results-dir={tmp_path}"]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:]
    lines = run.stdout.splitlines()
    # -k kept stage 3 (7², d=1): forward and forward+backward, the only triton benchmarks asked for
    assert [line for line in lines if "of backend 'triton' did not run" in line][0].startswith("2 × op benchmarks")
    assert any(line.startswith("2 × memory benchmark(s) did not run: memory is measured eagerly") for line in lines)
    closing = [i for i, line in enumerate(lines) if line.startswith("rows of this run:")]
    tables = [i for i, line in enumerate(lines) if "benchmark 'test_op_speed'" in line]
    assert closing and tables and closing[0] > tables[-1]
    legend = [i for i, line in enumerate(lines) if line.startswith("The tables above show each benchmark's median and rounds")]
    assert legend and tables[-1] < legend[0] < closing[0]  # says what the narrowed tables show
    assert "## The operator" in (tmp_path / "LEADERBOARD.md").read_text()  # the op suite's rows have their section
    rows = read_csv(tmp_path / "op_speed.csv")
    assert set(rows["backend"]) == {"tiled", "windowed_sdpa"} and rows["run_id"].nunique() == 1


FLAGGED_SUITE = """
def test_infer(benchmark, leaderboard):
    benchmark.pedantic(lambda: None, rounds=1)
    leaderboard.record("throughput.csv", flag="noisy: outside CPU load 0.49 > 0.25", suite="throughput", model="m",
                       dtype="fp32", infer_batch_size=8, infer_img_size=224, infer_samples_per_sec=1.0)

def test_train(benchmark, leaderboard):
    benchmark.pedantic(lambda: None, rounds=1)
    leaderboard.record("throughput.csv", suite="throughput", model="m", dtype="fp32", train_batch_size=8,
                       train_img_size=224, train_samples_per_sec=2.0)
"""


def test_the_warning_and_the_csv_say_the_same_flags(pytester):
    """A row flagged noisy, then found impossible by a later row (a training step faster than its
    inference): the CSV keeps both reasons, and the end-of-run warning says what the CSV says."""
    pytester.makepyfile(conftest=(ROOT / "benchmarks" / "conftest.py").read_text(), test_flags=FLAGGED_SUITE)
    results = pytester.path / "results"
    run = subprocess.run([sys.executable, "-m", "pytest", "test_flags.py", "--benchmark-only", f"--results-dir={results}",
                          "-p", "no:cacheprovider"], cwd=pytester.path, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert run.returncode == 0, run.stdout[-3000:]
    flags = read_csv(results / "throughput.csv")["flag"].tolist()
    assert flags[0].startswith("noisy: outside CPU load 0.49 > 0.25; impossible: training step 2 img/s")
    assert flags[1].startswith("impossible: training step 2 img/s")
    warned = [line.strip() for line in run.stdout.splitlines() if line.strip().startswith("throughput.csv: m ")]
    assert [line.split(": ", 2)[2] for line in warned] == flags


def test_the_docs_say_the_defaults_the_suite_has():
    from dinat_timm.bench.options import OPTIONS, PRESETS
    from dinat_timm.bench.steps import model_input_size

    readme = (ROOT / "docs" / "benchmarks.md").read_text()
    assert OPTIONS["op-backends"][0] == "triton,tiled,natten_legacy"
    assert "the `triton`, `tiled` and `natten_legacy`\noperators where they can run on the device" in readme
    assert PRESETS["full"]["scaling-rounds"] == "5" and "five scaling rounds" in readme
    # memory rows name their image size as a number (a model's pretrained size: 384 for the 384 models)
    assert model_input_size("dinat_large_384") == 384 and model_input_size("dinat_tiny") == 224
    from dinat_timm.results.validate import load_checked

    memory, problems = load_checked(ROOT / "results" / "memory.csv")
    assert not problems and memory["img_size"].dtype.kind in "if"
