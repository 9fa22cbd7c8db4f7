"""Results as a careless or unlucky user meets them: concurrent writers, malformed CSVs, bad options,
unreadable images. Each gets the right answer or one clear error (exit 2 for the command line), and
nothing measured is lost."""
import multiprocessing
import os
import stat

import pytest
import timm
import torch

import dinat_timm  # noqa: F401
from dinat_timm.results import append_rows, read_csv
from dinat_timm.results.boards import build_boards
from dinat_timm.results.writer import CsvWriteError

from _helpers import results_cli

# -- one writer that never loses a row --------------------------------------------------------------------

ROWS_EACH = 250


def _append_many(path, writer):
    for i in range(ROWS_EACH):
        append_rows(path, [dict(suite="throughput", model=f"w{writer}", i=i, infer_samples_per_sec=1.0)])


def test_two_processes_appending_hundreds_of_rows_keep_every_row(tmp_path):
    """Read, append, rename with no lock lost 26-48% of such rows; under the file lock none is lost."""
    path = tmp_path / "throughput.csv"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(path, w)) for w in range(2)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(timeout=300)
    assert [p.exitcode for p in writers] == [0, 0]
    table = read_csv(path)
    assert len(table) == 2 * ROWS_EACH
    assert sorted(zip(table["model"], table["i"])) == sorted((f"w{w}", i) for w in range(2) for i in range(ROWS_EACH))
    assert not list(tmp_path.glob("*.tmp"))  # (the directory's lock file, .dinat_timm.lock, stays: removing it races)


def test_a_killed_writers_temporary_file_is_removed_by_the_next_writer(tmp_path):
    path = tmp_path / "memory.csv"
    append_rows(path, [dict(suite="memory", model="a", peak_mem_mb=1.0)])
    leftover = tmp_path / "memory.csv.k1ll3d.tmp"  # what mkstemp named the file of a writer killed mid-write
    leftover.write_text("suite,model\nmemory,half-writ")
    append_rows(path, [dict(suite="memory", model="b", peak_mem_mb=2.0)])
    assert not leftover.exists() and read_csv(path)["model"].tolist() == ["a", "b"]


def test_the_file_keeps_its_mode_and_a_read_only_file_is_refused_not_replaced(tmp_path):
    path = tmp_path / "throughput.csv"
    append_rows(path, [dict(suite="throughput", model="a", infer_samples_per_sec=1.0)])
    os.chmod(path, 0o640)
    append_rows(path, [dict(suite="throughput", model="b", infer_samples_per_sec=1.0)])
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    os.chmod(path, 0o444)
    before = path.read_bytes()
    with pytest.raises(CsvWriteError, match=r"throughput.csv is read-only \(mode 444\); refusing to replace it"):
        append_rows(path, [dict(suite="throughput", model="c", infer_samples_per_sec=1.0)])
    assert path.read_bytes() == before and stat.S_IMODE(path.stat().st_mode) == 0o444
    with pytest.raises(CsvWriteError, match="is a directory"):
        append_rows(tmp_path, [dict(suite="throughput", model="d")])


# -- compare: right or refused ------------------------------------------------------------------------------


def _speed_rows(dinat=10.0, swin=12.0, model="dinat_tiny"):
    common = dict(suite="throughput", status="ok", infer_batch_size=8, infer_img_size=224, dtype="fp32", device="cpu (x)")
    return [dict(common, model=model, backend="auto:tiled", infer_samples_per_sec=dinat),
            dict(common, model="swin_tiny_patch4_window7_224", backend="timm", infer_samples_per_sec=swin)]


@pytest.fixture
def good(tmp_path):
    append_rows(tmp_path / "good.csv", _speed_rows())
    return tmp_path / "good.csv"


def _errors(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("content,problem", [
    (b"", "has no rows: nothing to compare"),
    (b"suite,model,infer_samples_per_sec\n", "has no rows: nothing to compare"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a CSV: it holds binary data"),
    (b"suite,model,infer_samples_per_sec\nthroughput,dinat_tiny,fast\n", "column 'infer_samples_per_sec' needs finite numbers: line 2 has 'fast'"),
    (b"suite,model,infer_samples_per_sec\nthroughput,dinat_tiny,inf\n", "line 2 has 'inf'"),
    (b"suite,model,infer_samples_per_sec,device\nthroughput,dinat_tiny,10.0,cpu\nthroughput,swin", "line(s) 3 (2 fields) do not have the header's 4 fields"),
    (b"model,speed\nx,1\n", "has no 'suite' column"),
])
def test_compare_refuses_a_malformed_base_naming_the_problem(tmp_path, good, content, problem):
    base = tmp_path / "base.csv"
    base.write_bytes(content)
    result = results_cli("compare", base, good)
    assert result.returncode == 2 and any(problem in line for line in _errors(result)), result.stderr


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


def test_merge_refuses_a_truncated_file_and_keeps_a_header_only_files_columns(tmp_path, good):
    (tmp_path / "cut.csv").write_text("suite,model,infer_samples_per_sec\nthroughput,dinat_tiny,10\nthroughput,swi")
    result = results_cli("merge", good, tmp_path / "cut.csv", "-o", tmp_path / "merged.csv")
    assert result.returncode == 2 and "cut.csv" in result.stderr and not (tmp_path / "merged.csv").exists()
    (tmp_path / "header.csv").write_text("suite,model,peak_mem_mb,extra_column\n")
    assert results_cli("merge", tmp_path / "header.csv", "-o", tmp_path / "m1.csv").returncode == 0
    assert list(read_csv(tmp_path / "m1.csv").columns) == ["suite", "model", "peak_mem_mb", "extra_column"]
    assert results_cli("merge", good, tmp_path / "header.csv", "-o", tmp_path / "m2.csv").returncode == 0
    merged = read_csv(tmp_path / "m2.csv")
    assert len(merged) == 2 and "extra_column" in merged.columns


def test_boards_are_rebuilt_together_or_not_at_all(tmp_path):
    append_rows(tmp_path / "throughput.csv", [dict(r, param_count=28.0) for r in _speed_rows()])
    written = build_boards(tmp_path)
    outputs = {p: p.read_bytes() for p in written.values()}
    header = (tmp_path / "throughput.csv").read_text().splitlines()[0].split(",")
    edited = {"suite": "throughput", "model": "dinat_tiny", "infer_samples_per_sec": "fast"}
    with open(tmp_path / "throughput.csv", "a") as f:
        f.write(",".join(edited.get(c, "") for c in header) + "\n")  # a hand-edited row: a word for a speed
    result = results_cli("boards", "--results-dir", tmp_path)
    assert result.returncode == 2 and "needs finite numbers" in result.stderr
    assert {p: p.read_bytes() for p in written.values()} == outputs  # neither the boards nor the plot moved
    assert not list(tmp_path.glob("*.tmp"))


# -- accuracy: what was read, counted once --------------------------------------------------------------------


@pytest.fixture
def images_with_one_broken(tmp_path):
    from dinat_timm.bench.accuracy import make_tiny_dataset

    folder = make_tiny_dataset(tmp_path / "data", num_classes=3, per_class=2)
    broken = folder / "class_001" / "img_0.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG signature, then nothing decodable
    return folder, broken


SMALL = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), num_classes=3)


def test_an_unreadable_image_fails_the_evaluation_by_name(images_with_one_broken):
    from dinat_timm.bench.accuracy import UnreadableImages, evaluate

    folder, broken = images_with_one_broken
    with pytest.raises(UnreadableImages, match=rf"{broken.name}.*--skip-unreadable"):
        evaluate("nat_mini", folder, split="", batch_size=4, **SMALL)


def test_a_skipped_image_is_counted_named_and_flagged_never_replaced(images_with_one_broken):
    from dinat_timm.bench.accuracy import evaluate, skipped_flag

    folder, broken = images_with_one_broken
    torch.manual_seed(0)
    model = timm.create_model("nat_mini", **SMALL).eval()
    row = evaluate("nat_mini", folder, split="", batch_size=4, model=model, skip_unreadable=True)
    assert row["samples"] == 5 and row["skipped"] == 1 and broken.name in row["skipped_files"]
    assert skipped_flag(row).startswith("incomplete: 1 unreadable image(s) skipped")
    broken.unlink()  # the same set without the broken image: the same figures (nothing was read twice)
    again = evaluate("nat_mini", folder, split="", batch_size=4, model=model)
    assert (again["samples"], again["top1"], again["top5"]) == (row["samples"], row["top1"], row["top5"])


@pytest.mark.parametrize("args,problem", [
    (["--max-samples", "-1"], "--max-samples must be >= 0"),
    (["--data-dir", "/no/such/imagenet"], "--data-dir /no/such/imagenet: no such file or directory"),
    (["--results", "{tmp}"], "is a directory: give the CSV file"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_accuracy_command_checks_its_arguments_before_loading_a_model(tmp_path, capsys, args, problem):
    from dinat_timm.bench.accuracy import main

    code = main(["--model", "no_such_model"] + [a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1
