"""timm's results files (``dinat_timm.results.timm_format`` and ``results timm-results``): written cell for
cell as timm writes them, every set with rows and the comparisons whose base has rows."""
import csv
import io
from pathlib import Path

import pandas as pd
import pytest
from _helpers import results_cli

from dinat_timm.results.timm_format import BASE_COLUMNS, render, with_diffs
from dinat_timm.results.writer import append_rows

TIMM_IMAGENET = """model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation
eva02_large_patch14_448.mim_m38m_ft_in22k_in1k,90.052,9.948,99.048,0.952,305.08,448,1.000,bicubic
eva02_large_patch14_448.mim_in22k_ft_in22k_in1k,89.966,10.034,99.012,0.988,305.08,448,1.000,bicubic
eva_giant_patch14_560.m30m_ft_in22k_in1k,89.786,10.214,98.992,1.008,"1,014.45",560,1.000,bicubic
eva02_large_patch14_448.mim_in22k_ft_in1k,89.624,10.376,98.950,1.050,305.08,448,1.000,bicubic
eva02_large_patch14_448.mim_m38m_ft_in1k,89.570,10.430,98.922,1.078,305.08,448,1.000,bicubic
eva_giant_patch14_336.m30m_ft_in22k_in1k,89.566,10.434,98.952,1.048,"1,013.01",336,1.000,bicubic
eva_giant_patch14_336.clip_ft_in1k,89.466,10.534,98.826,1.174,"1,013.01",336,1.000,bicubic
"""


TIMM_REAL = """model,top1,top1_err,top5,top5_err,param_count,img_size,crop_pct,interpolation,top1_diff,top5_diff,rank_diff
eva02_large_patch14_448.mim_m38m_ft_in22k_in1k,91.129,8.871,98.713,1.287,305.08,448,1.000,bicubic,+1.077,-0.335,0
eva_giant_patch14_336.clip_ft_in1k,91.058,8.942,98.602,1.399,"1,013.01",336,1.000,bicubic,+1.592,-0.224,+5
"""


def _read(text):
    return list(csv.DictReader(io.StringIO(text)))


def _rows_of(text):
    return [dict(r, param_count=float(r["param_count"].replace(",", ""))) | {k: float(r[k]) for k in
            ("top1", "top1_err", "top5", "top5_err", "crop_pct")} | {"img_size": int(r["img_size"])} for r in _read(text)]


def test_the_files_reproduce_real_rows_of_timm_s_files():
    import pandas as pd

    base, real = pd.DataFrame(_rows_of(TIMM_IMAGENET)), pd.DataFrame(_rows_of(TIMM_REAL))
    ours_base = _read(render(with_diffs(base, base).drop(columns=["top1_diff", "top5_diff", "rank_diff"]), diffs=False))
    ours_real = _read(render(with_diffs(real, base), diffs=True))
    assert list(ours_base[0]) == BASE_COLUMNS and list(ours_real[0]) == BASE_COLUMNS + ["top1_diff", "top5_diff", "rank_diff"]
    for ours, theirs in ((ours_base, _read(TIMM_IMAGENET)), (ours_real, _read(TIMM_REAL))):
        assert [{k: r[k] for k in theirs[0]} for r in ours] == theirs  # every cell, as timm wrote it


def test_timm_results_writes_every_set_with_rows_and_comparisons_where_their_base_has_rows(tmp_path):
    rows = []
    for model, scores in (("dinat_tiny.in1k", {"imagenet": (82.7, 96.2), "imagenet-real": (87.9, 97.5),
                                                "imagenet-a-clean": (95.0, 99.0), "imagenet-a": (20.0, 50.0),
                                                "sketch": (30.1, 50.2)}),
                          ("dinat_mini.in1k", {"imagenet": (81.8, 95.8), "imagenet-real": (88.0, 97.4),
                                               "imagenet-r": (40.0, 60.0)})):
        for eval_set, (top1, top5) in scores.items():
            rows.append(dict(suite="accuracy", status="ok", model=model, img_size=224, top1=top1, top1_err=100 - top1,
                             top5=top5, top5_err=100 - top5, param_count=27.91 if "tiny" in model else 20.02,
                             crop_pct=0.875, interpolation="bicubic", dataset="/data/x", pretrained=1,
                             eval_set=eval_set))
    append_rows(tmp_path / "accuracy_imagenet.csv", rows)
    out = tmp_path / "timm"
    result = results_cli("timm-results", tmp_path, "-o", out)
    assert result.returncode == 0, result.stderr
    # imagenet-r has no clean base: not written; the rest are
    assert sorted(p.name for p in out.iterdir() if p.name != ".dinat_timm.lock") == sorted(f"results-{s}.csv" for s in (
        "imagenet", "imagenet-real", "imagenet-a-clean", "imagenet-a", "sketch"))
    imagenet = _read((out / "results-imagenet.csv").read_text())
    assert [r["model"] for r in imagenet] == ["dinat_tiny.in1k", "dinat_mini.in1k"] and imagenet[0]["top1"] == "82.700"
    real = _read((out / "results-imagenet-real.csv").read_text())
    assert [(r["model"], r["top1_diff"], r["top5_diff"], r["rank_diff"]) for r in real] == [
        ("dinat_mini.in1k", "+6.200", "+1.600", "+1"), ("dinat_tiny.in1k", "+5.200", "+1.300", "-1")]
    assert _read((out / "results-imagenet-a.csv").read_text())[0]["top1_diff"] == "-75.000"
    again = results_cli("timm-results", tmp_path, "-o", out)
    assert again.returncode == 2 and "exists: pass --overwrite" in again.stderr


def _timm_row(model="m", top1=80.0):
    return dict(model=model, img_size=224, top1=top1, top1_err=100 - top1, top5=95.0, top5_err=5.0, param_count=28.3,
                crop_pct=0.875, interpolation="bicubic")


def test_a_results_file_without_its_last_line_break_gets_the_row_on_a_line_of_its_own(tmp_path):
    from dinat_timm.results.timm_format import append_timm_row

    path = tmp_path / "results.csv"
    append_timm_row(path, _timm_row("a"))
    path.write_text(path.read_text().rstrip("\n"))  # as an editor may save it
    append_timm_row(path, _timm_row("b"))
    assert [line.split(",")[0] for line in path.read_text().splitlines()] == ["model", "a", "b"]


def test_a_row_another_writer_adds_while_this_one_waits_for_the_lock_is_kept(tmp_path):
    """Two evaluations writing one results file: the second waits for the first's lock, and then reads the
    file as the first left it (its row included), not as it was before it waited."""
    import subprocess
    import sys
    import time

    from dinat_timm.results.timm_format import append_timm_row
    from dinat_timm.results.writer import locked

    path = tmp_path / "results.csv"
    append_timm_row(path, _timm_row("a"))
    script = ("import sys; from dinat_timm.results.timm_format import append_timm_row; print('imported', flush=True); "
              "append_timm_row(sys.argv[1], dict(model='c', img_size=224, top1=1.0, top1_err=99.0, top5=2.0, "
              "top5_err=98.0, param_count=1.0, crop_pct=0.875, interpolation='bicubic'))")
    with locked(path):
        other = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
        assert other.stdout.readline().strip() == "imported"
        time.sleep(1)  # it is in append_timm_row, waiting for the lock
        assert other.poll() is None
        with open(path, "a") as f:  # the first writer's row, written under the lock
            f.write("b,224,2.0,98.0,3.0,97.0,1.0,0.875,bicubic\n")
    assert other.wait(timeout=60) == 0
    assert [line.split(",")[0] for line in path.read_text().splitlines()] == ["model", "a", "b", "c"]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_write_that_fails_leaves_every_earlier_result(tmp_path, monkeypatch, fmt):
    """A full disk while the file is written: the earlier evaluations are all still there, the file whole."""
    from dinat_timm.results import timm_format

    path = tmp_path / f"results.{fmt}"
    timm_format.append_timm_row(path, _timm_row("a"), fmt)
    before = path.read_bytes()

    def full_disk(self, text, encoding=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        timm_format.append_timm_row(path, _timm_row("b"), fmt)
    monkeypatch.undo()
    assert path.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_timm_results_publish_only_whole_rows_of_the_published_weights_the_latest_by_time(tmp_path):
    """Random weights, a checkpoint of one's own, a flagged (incomplete) row, a row with a missing figure: not in
    timm's files. Of two hosts' rows of one model, the later one by its timestamp, whatever the folder order."""
    from dinat_timm.results.timm_format import publishable

    base = dict(suite="accuracy", status="ok", eval_set="imagenet", dataset="/data/imagenet", pretrained=1, flag="",
                **_timm_row("good"))
    rows = pd.DataFrame([
        dict(base, model="random", pretrained=0),
        dict(base, model="mine", checkpoint="last.pth.tar (sha256 abc)"),
        dict(base, model="flagged", flag="incomplete: 3 unreadable image(s) skipped"),
        dict(base, model="gap", param_count=None),
        dict(base, model="twice", top1=81.0, timestamp="2026-12-02T10:00:00", run_id="zz-host-2026"),
        dict(base, model="twice", top1=79.0, timestamp="2026-12-01T10:00:00", run_id="aa-host-2026"),
        dict(base),
    ])
    kept = publishable(rows)
    assert sorted(kept["model"]) == ["good", "twice"]
    assert kept.set_index("model").loc["twice", "top1"] == 81.0
