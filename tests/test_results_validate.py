"""Reading a results CSV before it is judged (``dinat_timm.results.validate``): every malformed file is
named with its problem; a byte-order mark is read as the header says."""
import pytest
from _helpers import results_cli
from _results_rows import _errors, _speed_row

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.results import append_rows


def test_a_csv_with_a_byte_order_mark_reads_as_its_header_says(tmp_path):
    path = tmp_path / "bom.csv"
    append_rows(path, [_speed_row(10.0)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as a spreadsheet saves it
    other = tmp_path / "other.csv"
    append_rows(other, [_speed_row(10.2)])
    result = results_cli("compare", path, other)
    assert result.returncode == 0 and "verdict: PASS" in result.stdout


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
