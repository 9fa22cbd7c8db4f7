"""The one CSV writer every benchmark suite goes through.

Every change to a CSV (appending rows, flagging a row already written, rebuilding a board) holds an
exclusive lock on its directory across processes (``filelock``; one ``.dinat_timm.lock`` file per
directory, which stays: removing a lock file others may be waiting on would let two writers in), reads
the file as it is now, and replaces it whole: the new table goes to a temporary file in the same
directory, is flushed, and is renamed over the old one. So:

- concurrent writers (two benchmark runs into one directory, torchrun ranks, two GPUs of a host)
  take turns and never lose each other's rows;
- a crash or a kill mid-write leaves the old file as it was; the temporary file a killed writer
  leaves behind is removed by the next writer of that file;
- the file keeps its permission bits, and a read-only file is refused, not replaced;
- a symlink is written through: its target is replaced, the link stays a link.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping

import pandas as pd

from . import schema
from .validate import check_text, load_checked

# How long a writer waits for another one to finish with a file before it gives up and says so.
LOCK_TIMEOUT_S = 120.0


class CsvWriteError(OSError):
    """A CSV that cannot be written as asked (read-only, a directory, locked too long); says which."""


def read_csv(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_csv(path, encoding="utf-8-sig")


LOCK_NAME = ".dinat_timm.lock"


@contextlib.contextmanager
def _directory_locked(directory: Path):
    from filelock import FileLock, Timeout

    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / LOCK_NAME), timeout=LOCK_TIMEOUT_S)
    try:
        with lock:
            yield
    except Timeout as e:
        raise CsvWriteError(f"{directory}: another process has held its results' write lock for over "
                            f"{LOCK_TIMEOUT_S:.0f} s (remove {lock.lock_file} if no writer is running)") from e


def target_of(path) -> Path:
    """Where writing ``path`` lands: a symlink's target (followed to the end), else the path itself."""
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def locked(path):
    """Hold the cross-process write lock of ``path``'s directory (not re-entrant: take it once); yields the
    path to write, a symlink's target."""
    path = target_of(path)
    with _directory_locked(path.parent):
        yield path


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise CsvWriteError(f"{path} is a directory, not a CSV file")
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise CsvWriteError(f"{path} is read-only (mode {mode:o}); refusing to replace it: make it writable "
                                "(chmod u+w) or write elsewhere")


def _remove_leftovers(path: Path) -> None:
    """Temporary files of this CSV: with the lock held, only a killed writer can have left one."""
    for tmp in path.parent.glob(f"{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """The columns a timm user recognises first (``schema.LEADING``), then the rest as they came."""
    lead = [c for c in schema.LEADING if c in df.columns]
    return df[lead + [c for c in df.columns if c not in lead]]


def _staged(path: Path, write: Callable[[str], None]) -> str:
    """A temporary file beside ``path``, filled by ``write(tmp_path)``, with the mode ``path`` has (or
    a new file would get); removed again if writing fails. The caller holds the lock and renames it."""
    _check_target(path)
    _remove_leftovers(path)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask  # what a plain open() would give; mkstemp's 0600 would make it private
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, mode)
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def _csv_writer(df: pd.DataFrame) -> Callable[[str], None]:
    return lambda tmp: _ordered(df).to_csv(tmp, index=False)


def _replace(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` over ``path`` through a temporary file (the caller holds the lock)."""
    os.replace(_staged(path, _csv_writer(df)), path)


def replace_together(outputs: Mapping) -> None:
    """Write several files as one change: ``outputs`` maps each path to a DataFrame (written as CSV)
    or to ``write(tmp_path)``. Every file is written to its temporary first, under all their locks;
    only when all are written are they renamed into place, so a failure writes none of them."""
    outputs = {target_of(p): content for p, content in outputs.items()}
    paths = sorted(outputs)
    with contextlib.ExitStack() as stack:
        for directory in sorted({path.parent for path in paths}):
            stack.enter_context(_directory_locked(directory))
        staged = []
        try:
            for path in paths:
                content = outputs[path]
                write = _csv_writer(content) if isinstance(content, pd.DataFrame) else content
                staged.append((_staged(path, write), path))
        except BaseException:
            for tmp, _ in staged:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            raise
        for tmp, path in staged:
            os.replace(tmp, path)


def write_csv_atomic(df: pd.DataFrame, path) -> None:
    """Replace the CSV at ``path`` with ``df``, all or nothing, under its lock."""
    with locked(path) as path:
        _replace(df, path)


def update_csv(path, change: Callable[[pd.DataFrame], pd.DataFrame],
               read: Callable[[Path], pd.DataFrame] = read_csv) -> pd.DataFrame:
    """Read (with ``read``), ``change`` and rewrite the CSV at ``path`` under its lock, so that no other
    writer's rows land in between (and are lost); returns the table written."""
    with locked(path) as path:
        _check_target(path)
        table = change(read(path))
        _replace(table, path)
        return table


def append_rows(path, rows: Iterable[Mapping]) -> pd.DataFrame:
    """Append rows (dicts; columns are unioned) to the CSV at ``path``; returns the whole table. Refused
    (``CsvWriteError``, nothing written) when the file as it is now is not a sound results CSV (a cut last
    line would be hidden by the rewrite), or the rows are not sound (a text speed, an impossible figure),
    or they belong to another suite than the file's rows, or name a column ``schema`` does not declare."""
    new = pd.DataFrame([dict(r) for r in rows])
    unknown = schema.undeclared(new.columns)
    if unknown:
        raise CsvWriteError(f"refusing to write {path}: column(s) {', '.join(unknown)} are not declared in "
                            "dinat_timm/results/schema.py (declare a new column there first)")

    def read_sound(path: Path) -> pd.DataFrame:  # read once, and checked: a rewrite would hide a cut line
        old, problems = load_checked(path) if path.exists() and path.stat().st_size else (pd.DataFrame(), [])
        if problems:
            raise CsvWriteError(f"refusing to append to {path}: {problems[0]}"
                                + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""))
        return old

    def change(old: pd.DataFrame) -> pd.DataFrame:
        table = new if old.empty else pd.concat([old, new], ignore_index=True, sort=False)
        problems = check_text(_ordered(new).to_csv(index=False), "the new row(s)", require_suite=False)
        suites = sorted(set(table["suite"].dropna().astype(str))) if "suite" in table else []
        if len(suites) > 1:
            problems.append(f"{path} would mix the suites {suites}: one suite per CSV")
        if problems:
            raise CsvWriteError(f"refusing to write {path}: {'; '.join(problems)}")
        return table

    return update_csv(path, change, read_sound)


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
