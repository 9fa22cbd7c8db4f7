"""The results writer (``dinat_timm.results.writer``): concurrent writers keep every row, a crash or a
refusal leaves the file as it was, modes are kept, pytest-benchmark's JSON becomes rows."""
import json
import multiprocessing
import os
import stat

import pandas as pd
import pytest
from _helpers import results_cli
from _results_rows import _one_line, _speed_row

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.results import append_rows, read_csv, rows_from_benchmark_json
from dinat_timm.results.writer import CsvWriteError


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


ROWS_EACH = 250


def _append_many(path, writer):
    for i in range(ROWS_EACH):
        append_rows(path, [dict(suite="throughput", model=f"w{writer}", rounds=i, infer_samples_per_sec=1.0)])


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
    assert sorted(zip(table["model"], table["rounds"])) == sorted((f"w{w}", i) for w in range(2) for i in range(ROWS_EACH))
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


def test_a_symlinked_csv_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "store" / "throughput.csv"
    real.parent.mkdir()
    link = tmp_path / "throughput.csv"
    link.symlink_to(real)
    append_rows(link, [dict(suite="throughput", model="a", infer_samples_per_sec=1.0)])
    append_rows(link, [dict(suite="throughput", model="b", infer_samples_per_sec=2.0)])
    assert link.is_symlink() and read_csv(real)["model"].tolist() == ["a", "b"]


def test_a_row_with_many_rounds_is_written_and_read_back(tmp_path):
    """A samples_ms cell longer than Python's csv field limit (131072 characters): still a row."""
    samples = [100.0 + (i % 7) for i in range(30000)]
    row = dict(suite="throughput", model="a", infer_batch_size=8, infer_img_size=224, rounds=len(samples),
               infer_step_time=103.0, infer_samples_per_sec=8 / 0.103, samples_ms=" ".join(f"{s:g}" for s in samples))
    path = tmp_path / "throughput.csv"
    append_rows(path, [row])
    append_rows(path, [dict(row, model="b")])
    table = read_csv(path)
    assert table["model"].tolist() == ["a", "b"] and len(table["samples_ms"][1].split()) == 30000
