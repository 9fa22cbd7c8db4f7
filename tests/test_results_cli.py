"""The results command line as a newcomer meets it: every misuse ends in one line and exit 2, the
compare table is short and labelled, merge says what it kept; the plot is named by what it shows.
The command runs in this process (``results_cli``) but for one real ``python -m`` run."""
import subprocess
import sys
from pathlib import Path

import pytest
import timm

import dinat_timm  # noqa: F401
from dinat_timm.results import append_rows, read_csv
from dinat_timm.results.boards import build_boards

from _helpers import results_cli

ROOT = Path(__file__).resolve().parents[1]


def cli(*args):
    return results_cli(*args)


def real_cli(*args):
    return subprocess.run([sys.executable, "-m", "dinat_timm.results", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _rows(dinat_infer=10.0, dinat_train=3.0, device="cpu (x)"):
    common = dict(suite="throughput", dtype="fp32", compile=0, channels_last=0, device=device, status="ok")
    return [dict(common, model="dinat_tiny", backend="auto:tiled", infer_batch_size=8, infer_img_size=224,
                 infer_samples_per_sec=dinat_infer),
            dict(common, model="dinat_tiny", backend="auto:tiled", train_batch_size=8, train_img_size=224,
                 train_samples_per_sec=dinat_train)]


def _one_error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")


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


def test_plot_is_named_by_what_it_shows_and_lists_every_point(tmp_path):
    append_rows(tmp_path / "throughput.csv", [dict(r, param_count=28.0, git_commit="abc1234",
                                                   timestamp="2026-11-27T01:00:00") for r in _rows()])
    written = build_boards(tmp_path)
    assert written["plot"].name == "throughput_vs_params.png" and written["plot"].stat().st_size > 10_000
    append_rows(tmp_path / "accuracy_imagenet.csv", [dict(suite="accuracy", model="dinat_tiny", top1=82.7,
                                                          dataset="imagenet", pretrained=1)])
    written = build_boards(tmp_path)
    assert written["plot"].name == "throughput_vs_top1.png" and not (tmp_path / "throughput_vs_params.png").exists()


def test_set_attn_backend_refuses_unknown_names_at_once():
    model = timm.create_model("nat_mini", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))
    with pytest.raises(ValueError, match=r"unknown attention backend 'does_not_exist'.*'gather'.*'tiled'.*'triton'"):
        model.set_attn_backend("does_not_exist")
    with pytest.raises(ValueError, match="unknown attention backend 'cudnn'"):
        timm.create_model("nat_mini", attn_backend="cudnn")
    model.set_attn_backend("gather")
    assert {m.backend for m in model.modules() if hasattr(m, "backend")} == {"gather"}


def test_flagged_rows_are_refused_unless_included(tmp_path):
    append_rows(tmp_path / "base.csv", _rows())
    append_rows(tmp_path / "new.csv", [dict(r, flag="noisy: outside CPU load 0.61 > 0.25") for r in _rows()])
    refused = cli("compare", tmp_path / "base.csv", tmp_path / "new.csv")
    assert _one_error_line(refused) and "flagged" in refused.stderr and "--include-flagged" in refused.stderr
    included = cli("compare", tmp_path / "base.csv", tmp_path / "new.csv", "--include-flagged")
    assert included.returncode == 0 and "verdict: PASS" in included.stdout
