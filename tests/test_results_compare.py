"""``python -m dinat_timm.results compare``: rows paired by configuration and device, judged by an
interval where they kept their rounds, every problem said at once, markdown and JSON for CI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers import results_cli
from _results_rows import _errors, _one_error_line, _one_line, _rows, _speed_row, _speed_rows, _speed_rows2

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.results import append_rows, read_csv
from dinat_timm.results.compare import DeviceMismatch, compare


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


def test_compare_reports_every_problem_at_once(tmp_path, good):
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "bad.csv").write_text("suite,model,infer_samples_per_sec\nthroughput,a,x\nthroughput,b,-inf\n")
    result = results_cli("compare", tmp_path / "bad.csv", tmp_path / "empty.csv", "--max-slowdown", "abc")
    errors = _errors(result)
    assert result.returncode == 2 and len(errors) == 3, result.stderr
    assert "--max-slowdown 'abc'" in errors[0] and "'x'" in errors[1] and "'-inf'" in errors[1]
    assert "empty.csv has no rows: nothing to compare" in errors[2]


def test_rows_in_one_file_only_are_listed_as_not_compared_unless_the_same_rows_are_required(tmp_path, good):
    """A quick-preset run against the full committed set: its extra rows are not regressions."""
    append_rows(tmp_path / "full.csv", _speed_rows() + _speed_rows(model="dinat_large")[:1])
    result = results_cli("compare", tmp_path / "full.csv", good)
    assert result.returncode == 0 and "not compared: no such row in NEW" in result.stdout
    assert "verdict: PASS" in result.stdout and "1 row(s) not compared" in result.stdout
    strict = results_cli("compare", tmp_path / "full.csv", good, "--require-same-rows")
    assert strict.returncode == 1 and "verdict: FAIL — 1 regression(s)" in strict.stdout


def test_compare_speaks_of_speed_as_a_factor(tmp_path):
    append_rows(tmp_path / "base.csv", [dict(r, infer_step_time=100.0) for r in _speed_rows()])
    append_rows(tmp_path / "new.csv", [dict(r, infer_step_time=725.0 if r["model"] == "dinat_tiny" else 100.0)
                                       for r in _speed_rows()])
    result = results_cli("compare", tmp_path / "base.csv", tmp_path / "new.csv")
    assert result.returncode == 1 and "×0.14 slower" in result.stdout and "%" not in result.stdout.split("verdict")[0]


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
    report = json.loads(result.stdout)
    judged = [r for r in report["rows"] if r["metric"] == "infer_samples_per_sec"]
    word = judged[0]["change"].split(": ")[-1]
    assert judged and judged[0]["interval"] and word in ("unchanged", "inconclusive", "improved", "regressed")
    assert result.returncode == report["exit_code"] == (1 if report["regressions"] else 2 if report["inconclusive"] else 0)


def test_compare_refuses_rows_of_different_devices(tmp_path):
    cpu, gpu = pd.DataFrame(_speed_rows2("cpu (x)", 10, 12)), pd.DataFrame(_speed_rows2("NVIDIA H200", 4000, 5000))
    with pytest.raises(DeviceMismatch, match=r"\['cpu \(x\)'\].*\['NVIDIA H200'\].*--allow-device-mismatch"):
        compare(cpu, gpu)
    assert compare(cpu, gpu, allow_device_mismatch=True).regressions == 0  # told to: GPU rows read as faster
    append_rows(tmp_path / "cpu.csv", _speed_rows2("cpu (x)", 10, 12))
    append_rows(tmp_path / "gpu.csv", _speed_rows2("NVIDIA H200", 4000, 5000))
    cli = results_cli("compare", tmp_path / "cpu.csv", tmp_path / "gpu.csv")
    assert cli.returncode == 2 and "not comparable" in cli.stderr


def test_compare_keeps_each_devices_rows_of_a_mixed_file():
    """A CSV with CPU and GPU rows of the same configuration: each device pairs with itself."""
    both = pd.DataFrame(_speed_rows2("cpu (x)", 10, 12) + _speed_rows2("NVIDIA H200", 4000, 5000))
    slower_gpu = pd.DataFrame(_speed_rows2("cpu (x)", 10, 12) + _speed_rows2("NVIDIA H200", 2000, 5000))
    verdict = compare(both, slower_gpu, max_slowdown=0.1)
    assert verdict.regressions == 1
    flagged = verdict.table[verdict.table["regression"]]
    assert flagged["config"].str.contains("NVIDIA H200").all()


def cli(*args):
    return results_cli(*args)


def test_compare_rows_say_infer_or_train_and_can_show_regressions_only(tmp_path):
    append_rows(tmp_path / "base.csv", _rows(10.0, 3.0))
    append_rows(tmp_path / "new.csv", _rows(10.1, 1.0))  # training fell by two thirds
    full = cli("compare", tmp_path / "base.csv", tmp_path / "new.csv")
    assert full.returncode == 1
    assert "dinat_tiny infer fp32 b8 auto:tiled" in full.stdout and "dinat_tiny train fp32 b8 auto:tiled" in full.stdout
    only = cli("compare", tmp_path / "base.csv", tmp_path / "new.csv", "--only-regressions")
    table = [line for line in only.stdout.splitlines() if "dinat_tiny" in line]
    assert only.returncode == 1 and len(table) == 1 and " train " in table[0] and "×0.33 slower" in table[0]
    assert max(len(line) for line in full.stdout.splitlines()) <= 160


def test_flagged_rows_are_refused_unless_included(tmp_path):
    append_rows(tmp_path / "base.csv", _rows())
    append_rows(tmp_path / "new.csv", [dict(r, flag="noisy: outside CPU load 0.61 > 0.25") for r in _rows()])
    refused = cli("compare", tmp_path / "base.csv", tmp_path / "new.csv")
    assert _one_error_line(refused) and "flagged" in refused.stderr and "--include-flagged" in refused.stderr
    included = cli("compare", tmp_path / "base.csv", tmp_path / "new.csv", "--include-flagged")
    assert included.returncode == 0 and "verdict: PASS" in included.stdout


def test_rounds_that_contradict_their_own_row_are_refused(tmp_path):
    """A row saying 5 rounds with 3 times, or rounds whose median is half its step time (a 50% slowdown that
    the rounds would read as an improvement): refused, every such line named, exit 2."""
    base, _ = _files(tmp_path, [_row("a", STEADY)], [_row("a", STEADY)])
    lying = dict(_row("a", [50.5, 50, 49.5, 50, 51, 49, 50]), infer_step_time=150.0, infer_samples_per_sec=8 / 0.150)
    short = dict(_row("b", STEADY), rounds=5, samples_ms="100 101 99")
    import pandas as pd

    # written by hand, as a foreign or edited file would be: the suite's own writer refuses such rows
    pd.DataFrame([lying, short]).to_csv(tmp_path / "bad.csv", index=False)
    result = results_cli("compare", base, tmp_path / "bad.csv", "--format", "json")
    assert result.returncode == 2 and json.loads(result.stdout)["exit_code"] == 2
    errors = result.stderr
    assert "samples_ms contradicts the row's own step time: line 2: rounds' median 50 ms, figure 150 ms" in errors
    assert "line 3 says 5 rounds and holds 3 times" in errors


def test_rows_the_rounds_cannot_judge_are_cannot_judge_not_pass(tmp_path):
    base, new = _files(tmp_path, [_row("d", STEADY)], [_row("d", [60, 140, 95, 150, 70, 130, 100])])
    result = results_cli("compare", base, new)
    assert result.returncode == 2 and "verdict: CANNOT JUDGE — 0 regression(s)" in result.stdout
    assert "2 row(s) inconclusive" in result.stdout  # its images/s and its step time
    markdown = results_cli("compare", base, new, "--format", "markdown")
    assert markdown.returncode == 2 and "⚠️ cannot judge" in markdown.stdout


def test_a_refusal_in_json_or_markdown_is_printed_in_that_format(tmp_path):
    result = results_cli("compare", tmp_path / "missing.csv", tmp_path / "other.csv", "--format", "json")
    report = json.loads(result.stdout)
    assert result.returncode == 2 and report["exit_code"] == 2 and len(report["errors"]) == 2
    markdown = results_cli("compare", tmp_path / "missing.csv", tmp_path / "other.csv", "--format", "markdown")
    assert markdown.stdout.startswith("### Benchmark comparison: ⚠️ cannot compare")
