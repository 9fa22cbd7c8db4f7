"""The benchmark suite's noise guard: rows measured beside a CPU hog are flagged, kept out of the
boards and refused by compare; results that cannot be true are flagged; a run reports progress
and leaves the committed CSVs alone."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dinat_timm.bench import guard
from dinat_timm.results import read_csv

from _helpers import results_cli

ROOT = Path(__file__).resolve().parents[1]
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


def test_guard_rules():
    clean = guard.LoadReading(outside_load=0.02, steal=0.0, seconds=5.0)
    busy = guard.LoadReading(outside_load=0.6, steal=0.0, seconds=5.0)
    brief = guard.LoadReading(outside_load=0.6, steal=0.0, seconds=0.05)  # a few jiffies: not judged on load
    assert guard.noise_flag(clean, 0.05) == "" and guard.noise_flag(brief, 0.05) == ""
    assert guard.noise_flag(busy, 0.05).startswith("noisy: outside CPU load 0.60")
    assert "round spread" in guard.noise_flag(clean, 0.5)
    assert guard.spread([1.0, 1.0, 1.0, 1.0]) == 0 and guard.spread([1.0, 2.0]) is None
    assert guard.spread([1.0, 1.1, 1.2, 3.0, 3.1]) > guard.SPREAD_LIMIT
    assert guard.impossible_flag("train", 20.0, 10.0).startswith("impossible: training step")
    assert guard.impossible_flag("infer", 10.0, 20.0).startswith("impossible")  # the same pair, seen from inference
    assert guard.impossible_flag("train", 4.0, 12.0) == "" and guard.impossible_flag("train", 4.0, None) == ""
    assert guard.reference_flag(5.0, [13.0, 13.6]).startswith("suspect: reference model")
    assert guard.reference_flag(12.0, [13.0, 13.6]) == "" and guard.reference_flag(12.0, []) == ""


def test_load_meter_sees_another_process_burning_cpu():
    hog = subprocess.Popen([sys.executable, "-c", HOG.format(seconds=10)])
    try:
        time.sleep(0.5)
        with guard.LoadMeter() as meter:
            time.sleep(2.0)  # this process idles; the hog takes a whole core
    finally:
        hog.kill()
    if meter.reading.outside_load is None:
        pytest.skip("no /proc/stat on this platform")
    assert meter.reading.outside_load > 1.0 / guard._cpu_count() * 0.6
