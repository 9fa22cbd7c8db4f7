"""The one CSV writer every benchmark suite goes through.

Rows are appended by rewriting the whole file to a temporary name and renaming it over the old
one, so a crash (or an out-of-memory kill) mid-write never loses rows written before.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

# Columns a timm user recognises come first, in this order, when a row has them.
LEADING_COLUMNS = [
    "suite", "status", "model", "img_size", "top1", "top1_err", "top5", "top5_err",
    "infer_img_size", "infer_batch_size", "infer_samples_per_sec", "infer_step_time",
    "train_img_size", "train_batch_size", "train_samples_per_sec", "train_step_time",
    "peak_mem_mb", "param_count", "gmacs", "crop_pct", "interpolation",
    "dtype", "channels_last", "compile", "backend", "device", "natten", "torch",
]


def read_csv(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_csv(path)


def write_csv_atomic(df: pd.DataFrame, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = [c for c in LEADING_COLUMNS if c in df.columns] + [c for c in df.columns if c not in LEADING_COLUMNS]
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the board private to its writer
    try:
        with os.fdopen(fd, "w", newline="") as f:
            df[ordered].to_csv(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def append_rows(path, rows: Iterable[Mapping]) -> pd.DataFrame:
    """Append rows (dicts; columns are unioned) to the CSV at ``path``; returns the whole table."""
    new = pd.DataFrame([dict(r) for r in rows])
    old = read_csv(path)
    table = new if old.empty else pd.concat([old, new], ignore_index=True, sort=False)
    write_csv_atomic(table, path)
    return table


def rows_from_benchmark_json(data) -> list:
    """Rows from pytest-benchmark's ``--benchmark-json`` output (a dict or a path to one).

    Each benchmark's ``extra_info`` holds the row's own columns (model, sizes, samples/s…);
    the timing statistics come from pytest-benchmark's ``stats``.
    """
    if not isinstance(data, Mapping):
        data = json.loads(Path(data).read_text())
    rows = []
    for bench in data.get("benchmarks", []):
        stats = bench.get("stats", {})
        row = {"benchmark": bench.get("fullname", bench.get("name"))}
        row.update(bench.get("extra_info", {}))
        row.update({f"time_{k}": stats[k] for k in ("min", "median", "mean", "stddev", "rounds") if k in stats})
        row.setdefault("status", "ok")
        rows.append(row)
    return rows
