"""The benchmark suite as a run (``benchmarks/``, ``dinat_timm.bench.session``, ``options``): rows written once
to the run's own directory, failures recorded, flags said at the end as boards read them, progress and the
estimate, options checked before the run."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from _helpers import results_cli

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.bench import guard
from dinat_timm.results import read_csv

ROOT = Path(__file__).resolve().parents[1]


def test_the_scaling_suite_refuses_sizes_that_cannot_fit_and_unknown_names(tmp_path):
    from dinat_timm.bench.scaling import check_fits, estimated_step_bytes, step_fn

    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_scaling.py", "--benchmark-only",
                          "--collect-only", "-q", "-p", "no:cacheprovider", "--scaling-sizes", "1000000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--scaling-sizes: 1000000 is above 4096" in run.stderr
    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/test_throughput.py", "--benchmark-only",
                          "--collect-only", "-q", "-p", "no:cacheprovider", "--dtypes", "fp64"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "'fp64' is not a dtype the suites know; valid: fp32, bf16, fp16" in run.stderr
    assert len([line for line in run.stderr.splitlines() if line.strip()]) == 1
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


def test_the_warning_says_the_flags_boards_and_compare_read(pytester):
    """A row flagged noisy, then contradicted by a later row (a training step faster than its inference):
    each row is written once with its own flags, 'impossible' is derived for both where the rows are read,
    and the end-of-run warning says exactly what boards and compare read."""
    pytester.makepyfile(conftest=(ROOT / "benchmarks" / "conftest.py").read_text(), test_flags=FLAGGED_SUITE)
    results = pytester.path / "results"
    run = subprocess.run([sys.executable, "-m", "pytest", "test_flags.py", "--benchmark-only", f"--results-dir={results}",
                          "-p", "no:cacheprovider"], cwd=pytester.path, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert run.returncode == 0, run.stdout[-3000:]
    from dinat_timm.results.tables import flags as read_flags

    written = read_csv(results / "throughput.csv")
    assert written["flag"].fillna("").tolist() == ["noisy: outside CPU load 0.49 > 0.25", ""]  # as measured, once
    flags = read_flags(written).tolist()
    assert flags[0].startswith("noisy: outside CPU load 0.49 > 0.25; impossible: training step 2 img/s")
    assert flags[1].startswith("impossible: training step 2 img/s")
    assert not (results / "leaderboard_speed.csv").exists() or read_csv(results / "leaderboard_speed.csv").empty
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


HOG = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def _suite(results, *extra, timeout=400):
    cmd = [sys.executable, "-m", "pytest", "benchmarks/test_throughput.py", "--benchmark-only", "-p", "no:cacheprovider",
           "--models", "nat_mini", "--reference-models=", "--batch-size", "8", "--rounds", "3", "--warmup", "1",
           "-k", "infer", f"--results-dir={results}", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.full  # ~40 s of a busy machine
def test_rows_measured_beside_a_cpu_hog_are_flagged_kept_off_the_boards_and_refused(tmp_path):
    hogs = [subprocess.Popen([sys.executable, "-c", HOG.format(seconds=90)]) for _ in range(2)]  # both cores, 90 s at most
    try:
        time.sleep(1)
        run = _suite(tmp_path)
    finally:
        for hog in hogs:
            hog.kill()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    row = read_csv(tmp_path / "throughput.csv").iloc[-1]
    assert row["outside_load"] > guard.OUTSIDE_LOAD_LIMIT
    assert str(row["flag"]).startswith("noisy: outside CPU load")
    assert "WARNING: 1 row(s) flagged" in run.stdout and "[1/" in run.stdout
    board = read_csv(tmp_path / "leaderboard_speed.csv")
    assert board.empty or "nat_mini" not in set(board.get("model", []))
    copy = tmp_path / "again.csv"
    copy.write_bytes((tmp_path / "throughput.csv").read_bytes())  # (a file compared with itself is refused on its own)
    compare = results_cli("compare", tmp_path / "throughput.csv", copy)
    assert compare.returncode == 2 and "flagged" in compare.stderr


def test_a_run_writes_to_its_own_directory_not_the_committed_csvs(tmp_path):
    """Without --results-dir, rows go to results/runs/<host>-<date>: tracked files stay as they are."""
    committed = {p: p.read_bytes() for p in (ROOT / "results").glob("*.csv")}
    before = set((ROOT / "results" / "runs").glob("*")) if (ROOT / "results" / "runs").exists() else set()
    cmd = [sys.executable, "-m", "pytest", "benchmarks/test_op_speed.py", "--benchmark-only", "-p", "no:cacheprovider",
           "--op-backends", "tiled", "-k", "stage3", "--rounds", "2", "--warmup", "1"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    created = set((ROOT / "results" / "runs").glob("*")) - before
    try:
        assert run.returncode == 0, run.stdout[-2000:]
        assert len(created) == 1 and (next(iter(created)) / "op_speed.csv").exists()
        assert {p: p.read_bytes() for p in (ROOT / "results").glob("*.csv")} == committed
    finally:
        import shutil

        for path in created:
            shutil.rmtree(path)


def test_the_suite_writes_tf32_columns_and_accuracy_defaults_to_tf32_off(tmp_path):
    """The real benchmark suite, once: the accuracy row records TF32 off (its default), whatever
    PyTorch's default is; rows of an old CSV without those columns still load."""
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "pytest", "benchmarks/test_accuracy.py", "--benchmark-only", "-q", "-p", "no:cacheprovider",
           "--models", "nat_mini", f"--results-dir={out}", "--eval-batch-size", "8", "--max-samples", "8"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    row = read_csv(out / "accuracy_generated.csv").iloc[-1]
    assert (row["tf32_matmul"], row["tf32_cudnn"]) == (0, 0)
    old = pd.DataFrame([{"suite": "accuracy", "model": "old", "top1": 1.0, "device": "cpu (x)"}])
    old.to_csv(out / "accuracy_generated.csv", index=False, mode="a", header=False)
    assert "tf32_matmul" in read_csv(out / "accuracy_generated.csv").columns


def test_img_size_builds_the_reference_models_for_it_or_says_why_they_cannot_run(tmp_path):
    """``--img-size 40``: DiNAT and Swin-T (built for 40 px, as timm's Swin takes ``img_size=``) are measured at
    40 px; LeViT, whose attention biases are sized for its own grid, is skipped with the reason in the summary.
    The run exits 0: a documented option never fails the run."""
    run = _suite(tmp_path, "--img-size", "40", "--reference-models", "swin_tiny_patch4_window7_224,levit_128",
                 "--rounds", "1", "--warmup", "0")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    rows = read_csv(tmp_path / "throughput.csv")
    assert dict(zip(rows["model"], rows["infer_img_size"])) == {"nat_mini": 40, "swin_tiny_patch4_window7_224": 40}
    assert any(line.startswith("1 × throughput benchmark(s) did not run: levit_128 cannot run at 40 px")
               for line in run.stdout.splitlines()), run.stdout[-3000:]


class _Config:
    """A pytest config that answers ``getoption`` from a dict (None: not given), for BenchOptions alone."""

    def __init__(self, **given):
        self.given = {k.replace("-", "_"): v for k, v in given.items()}

    def getoption(self, name):
        return self.given.get(name)


@pytest.mark.parametrize("option, value, words", [
    ("pretrained", "maybe", "--pretrained: 'maybe' is not a yes/no"),
    ("memory-breakdown", "2", "--memory-breakdown: '2' is not a yes/no"),
    ("skip-unreadable", "yess", "--skip-unreadable: 'yess' is not a yes/no"),
    ("tf32", "on please", "--tf32: 'on please' is not a yes/no"),
    ("compile", "0,2", "--compile: '2' is not a yes/no"),
    ("models", "dinat_tni", "--models: 'dinat_tni' is not a registered model (close: dinat_"),
    ("reference-models", "swin_tniy", "--reference-models: 'swin_tniy' is not a registered model"),
    ("backends", "tiledd", "--backends: 'tiledd' is not a backend"),
    ("op-backends", "triton,tilde", "--op-backends: 'tilde' is not a backend"),
    ("op-dtypes", "fp33", "--op-dtypes: 'fp33' is not a dtype"),
    ("data-dir", "/no/such/folder", "--data-dir /no/such/folder: no such file or directory"),
    ("batch-size", "0", "--batch-size: 0 is below 1"),
    ("eval-batch-size", "-1", "--eval-batch-size: -1 is below 1"),
    ("op-batch-size", "0", "--op-batch-size: 0 is below 1"),
    ("device", "bogus", "--device 'bogus' is not a device"),
    ("device", "cuda:7", "--device cuda:7: "),
])
def test_every_option_is_checked_before_anything_runs(option, value, words):
    from dinat_timm.bench.options import BenchOptions, OptionError

    options = BenchOptions(_Config(**{option: value}))
    options.run_results_dir = "results/runs/x"
    with pytest.raises(OptionError) as refused:
        options.check()
    assert str(refused.value).startswith(words), refused.value


@pytest.mark.parametrize("word, value", [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False),
                                         ("false", False), ("NO", False), ("off", False)])
def test_yes_no_options_take_what_pytest_users_type(word, value):
    from dinat_timm.bench.options import BenchOptions

    options = BenchOptions(_Config(**{"memory-breakdown": word, "pretrained": word, "compile": f"{word},0"}))
    assert options.flag("memory-breakdown") is value and options.pretrained(has_data=False) is value
    assert options.flags("compile") == ([True, False] if value else [False])
    assert BenchOptions(_Config()).pretrained(has_data=True) is True  # auto: with a data set
