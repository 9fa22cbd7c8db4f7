"""The results command line as a newcomer meets it: every misuse ends in one line and exit 2, every
argument has help, write, merge and compare end to end."""
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import results_cli
from _results_rows import _errors, _one_error_line, _rows

import dinat_timm  # noqa: F401
from dinat_timm.results import append_rows, read_csv


@pytest.mark.parametrize("option,value,problem", [
    ("--max-slowdown", "abc", "is not a number"),
    ("--max-slowdown", "-5%", "must be a percentage in [0%, 100%)"),
    ("--max-slowdown", "200", "so 200 would mean 20000%: write a percentage such as '20%'"),
    ("--max-slowdown", "nan", "must be a percentage"),
    ("--max-slowdown", "100%", "must be a percentage"),
    ("--max-top1-drop", "abc", "is not a number"),
    ("--max-top1-drop", "-1", ">= 0"),
    ("--max-top1-drop", "inf", "finite"),
    ("--relative-to", "swin_huge", "BASE has no row of that model"),
])
def test_compare_refuses_bad_options(good, option, value, problem):
    copy = good.with_name("copy.csv")
    copy.write_bytes(good.read_bytes())  # (a file compared with itself is refused on its own)
    result = results_cli("compare", good, copy, f"{option}={value}")  # '=': argparse would take "-5%" for an option
    assert result.returncode == 2 and any(problem in line for line in _errors(result)), result.stderr


run_results_cli = results_cli


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


ROOT = Path(__file__).resolve().parents[1]


def test_the_results_cli_help_does_not_wait_for_pandas():
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "dinat_timm.results", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "compare" in run.stdout
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "dinat_timm.results" in imported and "pandas" not in imported


def cli(*args):
    return results_cli(*args)


def real_cli(*args):
    return subprocess.run([sys.executable, "-m", "dinat_timm.results", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_misuse_ends_in_one_line_and_exit_2(tmp_path):
    append_rows(tmp_path / "throughput.csv", _rows())
    append_rows(tmp_path / "memory.csv", [dict(suite="memory", model="dinat_tiny", mode="infer", peak_mem_mb=80.0,
                                               device="cpu (x)")])
    assert _one_error_line(real_cli("compare", tmp_path / "missing.csv", tmp_path / "throughput.csv"))  # the real command
    wrong_kind = cli("compare", tmp_path / "throughput.csv", tmp_path / "memory.csv")
    assert _one_error_line(wrong_kind) and "same suite" in wrong_kind.stderr
    assert _one_error_line(cli("merge", tmp_path / "throughput.csv", tmp_path / "b.csv", "-o", tmp_path / "m.csv"))
    both = cli("merge", tmp_path / "a.csv", tmp_path / "b.csv", "-o", tmp_path / "m.csv")  # every problem, a line each
    assert both.returncode == 2 and [line.split("/")[-1] for line in both.stderr.splitlines()] == ["a.csv", "b.csv"]
    assert not (tmp_path / "m.csv").exists()
    usage = cli("compare", tmp_path / "throughput.csv")  # argparse's own complaint, in one line too
    assert _one_error_line(usage) and "--help" in usage.stderr
    no_dir = cli("boards", "--results-dir", tmp_path / "nowhere")
    assert _one_error_line(no_dir) and not (tmp_path / "nowhere").exists()


def test_merge_says_what_it_keeps(tmp_path):
    append_rows(tmp_path / "a.csv", _rows(10.0, 3.0))
    append_rows(tmp_path / "b.csv", _rows(11.0, 3.3))  # a re-run of the same configurations on the same machine
    merged = cli("merge", tmp_path / "a.csv", tmp_path / "b.csv", "-o", tmp_path / "m.csv")
    assert merged.returncode == 0 and "kept 2 of 4 rows" in merged.stdout and "latest row" in merged.stdout
    assert read_csv(tmp_path / "m.csv")["infer_samples_per_sec"].dropna().tolist() == [11.0]


def test_every_argument_has_help():
    from dinat_timm.results.__main__ import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.dest} has no help"
