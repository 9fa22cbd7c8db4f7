"""timm's accuracy results files (its ``results/``: ``results-imagenet.csv`` and the relabelled and robustness sets
beside it), written from this project's accuracy rows.

The format, as timm's ``validate.py`` and ``results/generate_csv_results.py`` write it: a base file has
``model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation``; a comparison file adds
``top1_diff,top5_diff,rank_diff`` against its base (ReaL, ImageNetV2 matched-frequency and Sketch against ImageNet;
A and R against their ``-clean`` files), rows matched by model and image size. Figures ``%.3f``, ``param_count`` in
millions with two decimals and a thousands separator, rows sorted by top-1, top-5, then name; diffs signed
(``+1.088``), ``rank_diff`` ``0`` / ``+N`` (up) / ``-N`` (down); a model the base lacks has empty diffs.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import pandas as pd

from . import schema
from .tables import accuracy_kind, flagged
from .writer import replace_together

BASE_COLUMNS = schema.TIMM_BASE
DIFF_COLUMNS = schema.TIMM_DIFFS
SETS = ("imagenet", "imagenet-real", "imagenetv2-matched-frequency", "sketch", "imagenet-a", "imagenet-r",
        "imagenet-a-clean", "imagenet-r-clean")
BASE_OF = {"imagenet-real": "imagenet", "imagenetv2-matched-frequency": "imagenet", "sketch": "imagenet",
           "imagenet-a": "imagenet-a-clean", "imagenet-r": "imagenet-r-clean"}


def file_name(eval_set: str) -> str:
    return f"results-{eval_set}.csv"


def ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """timm's order: top-1, then top-5, descending; then the name."""
    return rows.sort_values(["top1", "top5", "model"], ascending=[False, False, True], kind="stable").reset_index(drop=True)


def _signed(x: float) -> str:
    return f"+{x:.3f}" if x >= 0 else f"-{abs(x):.3f}"


def with_diffs(test: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """``test`` (ranked) with its change against ``base`` (ranked), rows matched by model and image size."""
    test, base = ranked(test), ranked(base)
    where = {(m, int(s)): i for i, (m, s) in enumerate(zip(base["model"], base["img_size"]))}
    diffs = {c: [] for c in DIFF_COLUMNS}
    for rank, r in test.iterrows():
        base_rank = where.get((r["model"], int(r["img_size"])))
        if base_rank is None:
            for c in DIFF_COLUMNS:
                diffs[c].append("")
            continue
        b = base.iloc[base_rank]
        diffs["top1_diff"].append(_signed(r["top1"] - b["top1"]))
        diffs["top5_diff"].append(_signed(r["top5"] - b["top5"]))
        diffs["rank_diff"].append("0" if rank == base_rank else f"-{rank - base_rank}" if rank > base_rank
                                  else f"+{base_rank - rank}")
    return test.assign(**diffs)


def render(table: pd.DataFrame, diffs: bool) -> str:
    """The CSV text, formatted as timm's files are."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = BASE_COLUMNS + (DIFF_COLUMNS if diffs else [])
    writer.writerow(columns)
    for r in table.to_dict("records"):
        cells = {"model": r["model"], "img_size": int(r["img_size"]), "param_count": f"{float(r['param_count']):,.2f}",
                 "interpolation": r["interpolation"]}
        for c in ("top1", "top1_err", "top5", "top5_err", "crop_pct"):
            cells[c] = f"{float(r[c]):.3f}"
        for c in DIFF_COLUMNS if diffs else ():
            cells[c] = r[c]
        writer.writerow([cells[c] for c in columns])
    return out.getvalue()


def publishable(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows timm's files may hold: of timm's sets, ok, unflagged (not an incomplete or noisy row), of the
    published weights on a real data set (not random weights, not a checkpoint of one's own), every figure of
    timm's columns present; the latest of each set, model and image size by when it was measured (not by the
    folder it sits in)."""
    if rows.empty or "eval_set" not in rows:
        return rows.iloc[0:0]
    rows = rows[rows["eval_set"].fillna("").astype(str).isin(SETS)]
    if "status" in rows:
        rows = rows[rows["status"].fillna("ok") == "ok"]
    rows = rows[~flagged(rows) & (accuracy_kind(rows) == "imagenet")]
    rows = rows.dropna(subset=[c for c in BASE_COLUMNS if c in rows])
    if "timestamp" in rows:
        rows = rows.assign(__when=pd.to_datetime(rows["timestamp"], errors="coerce")).sort_values(
            "__when", kind="stable", na_position="first").drop(columns="__when")
    return rows.drop_duplicates(["eval_set", "model", "img_size"], keep="last")


def timm_tables(rows: pd.DataFrame) -> Dict[str, str]:
    """File name -> CSV text for every set that has publishable rows (``publishable``); a comparison file only
    where its base has rows."""
    rows = publishable(rows)
    if rows.empty:
        return {}
    by_set = {name: group for name, group in rows.groupby("eval_set")}
    texts = {}
    for name in SETS:
        if name not in by_set:
            continue
        base = BASE_OF.get(name)
        if base is None:
            texts[file_name(name)] = render(ranked(by_set[name]), diffs=False)
        elif base in by_set:
            texts[file_name(name)] = render(with_diffs(by_set[name], by_set[base]), diffs=True)
    return texts


def append_timm_row(path, row: Mapping, fmt: str = "csv") -> None:
    """Add one evaluation to a results file as timm's ``validate.py --results-file`` writes it (CSV with the base
    header, or a JSON list); a file of another shape is refused, not rewritten. The file is replaced whole,
    through a temporary (``writer.replace_together``): a full disk or a kill leaves the earlier results as they
    were, a last line without its line break is not glued to the new row, a symlink stays a link."""
    path = Path(path)
    record = {c: row[c] for c in BASE_COLUMNS}

    def write(tmp):  # read under the file's lock: a row another writer added meanwhile is kept, not lost
        Path(tmp).write_text(_with_row(path, record, fmt), encoding="utf-8")

    replace_together({path: write})


def _with_row(path: Path, record: Mapping, fmt: str) -> str:
    """The results file's text with ``record`` added (ValueError where the file has another shape)."""
    old = path.read_text(encoding="utf-8") if path.exists() and path.stat().st_size else ""
    if fmt == "json":
        try:
            existing = json.loads(old) if old.strip() else []
        except ValueError as e:
            raise ValueError(f"{path} is not JSON ({e}): not written") from None
        if not isinstance(existing, list):
            raise ValueError(f"{path} holds no JSON list of results: not written")
        return json.dumps(existing + [record], indent=4) + "\n"
    new = render(pd.DataFrame([record]), diffs=False)
    if not old:
        return new
    header = next(csv.reader(io.StringIO(old)), [])
    if header != BASE_COLUMNS:
        raise ValueError(f"{path} has the columns {header}, not timm's {BASE_COLUMNS}: not written")
    return old + ("" if old.endswith("\n") else "\n") + new.split("\n", 1)[1]


def write_timm_files(out_dir, texts: Mapping[str, str]) -> None:
    """``timm_tables``' files written into ``out_dir`` together (``writer.replace_together``): all or none."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    replace_together({out / name: (lambda text: lambda tmp: Path(tmp).write_text(text))(text)
                      for name, text in texts.items()})


def check_targets(out_dir, names: List[str], overwrite: bool) -> Optional[str]:
    """Why the files cannot be written into ``out_dir`` (a file in the way, files not written by this command)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        return f"{out} is a file, not a directory"
    present = [n for n in names if (out / n).exists()]
    if present and not overwrite:
        return f"{out / present[0]} exists: pass --overwrite to replace timm's results files there"
    return None
