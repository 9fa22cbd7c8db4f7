"""compare as a user runs it: rows that keep their rounds are judged by an interval (unchanged /
regressed / improved / inconclusive); what cannot be paired is listed, every problem said at once;
markdown and JSON for CI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from dinat_timm.results import read_csv
from dinat_timm.results.writer import append_rows

from _helpers import results_cli

ROOT = Path(__file__).resolve().parents[1]


def _row(model, ms, device="cpu (x)", mode="infer", flag="", batch=8):
    speed = batch / (float(np.median(ms)) / 1e3)
    return dict(suite="throughput", status="ok", model=model, dtype="fp32", compile=0, channels_last=0, device=device,
                backend="auto:tiled", **{f"{mode}_batch_size": batch, f"{mode}_img_size": 224,
                                         f"{mode}_samples_per_sec": speed, f"{mode}_step_time": float(np.median(ms))},
                rounds=len(ms), samples_ms=" ".join(f"{m:g}" for m in ms), flag=flag)


def _files(tmp_path, base_rows, new_rows):
    append_rows(tmp_path / "base.csv", base_rows)
    append_rows(tmp_path / "new.csv", new_rows)
    return tmp_path / "base.csv", tmp_path / "new.csv"


STEADY = [100, 101, 99, 100, 102, 98, 100]


def test_rows_with_rounds_get_a_word_and_an_interval(tmp_path):
    base, new = _files(tmp_path,
                       [_row("a", STEADY), _row("b", STEADY), _row("c", STEADY), _row("d", STEADY)],
                       [_row("a", [1.5 * t for t in STEADY]),  # 1.5x the time: regressed
                        _row("b", [1.01 * t for t in STEADY]),  # unchanged within 10%
                        _row("c", [0.7 * t for t in STEADY]),  # improved
                        _row("d", [60, 140, 95, 150, 70, 130, 100])])  # too ragged to tell
    result = results_cli("compare", base, new, "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    words = {r["config"].split()[0]: r["change"] for r in report["rows"] if r["metric"] == "infer_samples_per_sec"}
    assert words["a"].endswith("slower: regressed") and words["b"].endswith(": unchanged")
    assert words["c"].endswith("faster: improved") and words["d"].endswith(": inconclusive")
    assert report["regressions"] == 2  # a's images/s and a's step time
    interval = next(r["interval"] for r in report["rows"] if r["config"].startswith("a "))
    low, high = (float(x.strip("×")) for x in interval.split("–"))
    assert low < 1 / 1.5 < high and high < 0.9


def test_markdown_for_a_job_summary(tmp_path):
    base, new = _files(tmp_path, [_row("a", STEADY)], [_row("a", [1.5 * t for t in STEADY])])
    result = results_cli("compare", base, new, "--format", "markdown")
    lines = result.stdout.splitlines()
    assert result.returncode == 1 and lines[0] == "### Benchmark comparison: ❌ 2 regression(s)"
    assert "| configuration | metric | base | new | change | interval |" in lines
    assert any(line.startswith("| a infer fp32 b8") and "regressed ❌" in line for line in lines)
    assert lines[-1].startswith("verdict: FAIL")


def test_every_problem_at_once_and_what_can_be_compared_is(tmp_path):
    """A flagged row and a device the other file lacks are listed, not compared; the rest is judged."""
    base, new = _files(tmp_path,
                       [_row("a", STEADY), _row("b", STEADY, flag="noisy: outside CPU load 0.6 > 0.25"),
                        _row("a", STEADY, device="NVIDIA H200")],
                       [_row("a", STEADY), _row("b", STEADY)])
    result = results_cli("compare", base, new)
    assert result.returncode == 0, result.stderr
    assert "not compared: flagged in BASE" in result.stdout and "not compared: NEW has no row measured on NVIDIA H200" in result.stdout
    (tmp_path / "none").mkdir()
    nothing = _files(tmp_path / "none", [_row("a", STEADY, flag="noisy"), _row("b", STEADY, device="cpu (y)")],
                     [_row("b", STEADY)])
    refused = results_cli("compare", *nothing)
    errors = [line for line in refused.stderr.splitlines() if line]
    assert refused.returncode == 2 and len(errors) == 2
    assert "flagged" in errors[0] and "measured on ['cpu (y)']" in errors[1]


def test_a_missing_counterpart_is_not_a_regression_unless_asked(tmp_path):
    base, new = _files(tmp_path, [_row("a", STEADY), _row("a", STEADY, batch=128)], [_row("a", STEADY)])
    assert results_cli("compare", base, new).returncode == 0
    strict = results_cli("compare", base, new, "--require-same-rows")
    assert strict.returncode == 1 and "a infer fp32 b128" in strict.stdout  # the label keeps mode and batch


def test_a_real_suite_row_keeps_its_rounds_and_two_runs_compare_by_them(tmp_path):
    def suite(results):
        cmd = [sys.executable, "-m", "pytest", "benchmarks/test_throughput.py", "--benchmark-only", "-p", "no:cacheprovider",
               "--models", "nat_mini", "--reference-models=", "--batch-size", "2", "--rounds", "5", "--warmup", "1",
               "--img-size", "96", "-k", "infer", f"--results-dir={results}"]
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-2000:]
        return results / "throughput.csv"

    first, second = suite(tmp_path / "a"), suite(tmp_path / "b")
    row = read_csv(first).iloc[-1]
    samples = [float(x) for x in row["samples_ms"].split()]
    assert row["rounds"] == 5 == len(samples)
    assert min(samples) <= row["infer_step_time"] <= max(samples)  # the median round, in ms
    # (beside the other test workers the rows may be flagged noisy: compared anyway, it is the rounds that matter)
    result = results_cli("compare", first, second, "--format", "json", "--include-flagged")
    assert result.returncode in (0, 1), result.stderr
    judged = [r for r in json.loads(result.stdout)["rows"] if r["metric"] == "infer_samples_per_sec"]
    assert judged and judged[0]["interval"] and judged[0]["change"].split(": ")[-1] in (
        "unchanged", "inconclusive", "improved", "regressed")
