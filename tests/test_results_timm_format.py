"""timm's results files (``dinat_timm.results.timm_format`` and ``results timm-results``): written cell for
cell as timm writes them, every set with rows and the comparisons whose base has rows."""
import csv
import io

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
