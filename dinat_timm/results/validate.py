"""Checking a results CSV before anything is judged, merged or ranked from it.

A verdict or a board built on a malformed file would be wrong without a word: a truncated last line
reads as a row with empty cells, a text cell in a speed column turns the column into strings,
``inf`` images/s beats every baseline. So each file is read as raw CSV first and every problem is
collected (not just the first), for the command line to report in one go and refuse (exit 2).
"""
from __future__ import annotations

import csv
import io
import math
import statistics
import sys
from pathlib import Path
from typing import List, Tuple

import pandas as pd

from . import schema

SUITES = schema.HEADLINE  # suite: columns of which an ``ok`` row needs at least one
STATUSES = {"ok", "failed", "oom"}
# How a peak-memory figure was measured (the ``method`` column): the bytes of tensors alive at a step's
# peak beyond those alive before it, from the CPU allocator's events or the CUDA allocator's counters
# (``dinat_timm.bench.memory``). Boards show and fit memory from these alone: earlier CPU rows read
# the kernel's resident set, which counted allocator slack and moved with what ran before.
EXACT_MEMORY_METHODS = ("allocator events (torch.profiler)", "cuda.max_memory_allocated")
_SHOWN = 5  # bad cells named per column before "and N more"


def _first(items, describe) -> str:
    shown = ", ".join(describe(i) for i in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _parse(text: str, label: str) -> Tuple[List[str], List[Tuple[int, List[str]]], List[str]]:
    """(header, [(line number, fields)], problems) of CSV text."""
    problems = []
    limit = csv.field_size_limit(sys.maxsize)  # a row with many rounds has a long samples_ms cell: it is still a row
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        return [], [], [f"{label} is not a readable CSV: {e}"]
    finally:
        csv.field_size_limit(limit)  # the process's own setting, as it was
    if not rows or not any(cell.strip() for cell in rows[0]):
        return [], [], [f"{label} has no header line"]
    header, body = rows[0], []
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        problems.append(f"{label} names columns twice: {', '.join(duplicated)}")
    short = []
    for number, fields in enumerate(rows[1:], start=2):
        if not fields:  # a blank line
            continue
        if len(fields) != len(header):
            short.append((number, len(fields)))
            continue
        body.append((number, fields))
    if short:
        problems.append(f"{label}: line(s) {_first(short, lambda s: f'{s[0]} ({s[1]} fields)')} do not have the "
                        f"header's {len(header)} fields: truncated or hand-edited rows")
    if text and not text.endswith(("\n", "\r")):
        problems.append(f"{label} does not end with a line break: its last line may be cut off (an interrupted copy?)")
    return header, body, problems


def check_table(header, body, label: str, require_suite: bool = True) -> List[str]:
    """What is wrong with the rows themselves: suite, status, numbers, the metric an ok row needs."""
    problems = []
    column = {name: i for i, name in enumerate(header)}
    if "suite" not in column and require_suite:
        return [f"{label} has no 'suite' column: not a dinat_timm results CSV (columns: {', '.join(header[:8])}…)"]
    suites = sorted({fields[column["suite"]] for _, fields in body}) if "suite" in column else []
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        problems.append(f"{label}: unknown suite(s) {unknown}; expected one of {sorted(SUITES)}")
    if "status" in column:
        odd = [(n, f[column["status"]]) for n, f in body if f[column["status"]] not in STATUSES | {""}]
        if odd:
            problems.append(f"{label}: status must be one of {sorted(STATUSES)}: "
                            + _first(odd, lambda o: f"line {o[0]} says {o[1]!r}"))
    for name in sorted(schema.NUMERIC & set(column)):
        bad = []
        for number, fields in body:
            cell = fields[column[name]].strip()
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                bad.append((number, cell))
                continue
            if not math.isfinite(value):
                bad.append((number, cell))
        if bad:
            problems.append(f"{label}: column {name!r} needs finite numbers: "
                            + _first(bad, lambda b: f"line {b[0]} has {b[1]!r}"))
            continue
        low = 0 if name in schema.NON_NEGATIVE else None
        if name in schema.POSITIVE or name in schema.NON_NEGATIVE:
            odd = [(n, f[column[name]].strip()) for n, f in body if f[column[name]].strip()
                   and not _plausible(float(f[column[name]]), low)]
            if odd:
                need = "figures in [0, 1e7]" if low == 0 else "figures above 0 and at most 1e7"
                problems.append(f"{label}: column {name!r} needs {need}: "
                                + _first(odd, lambda b: f"line {b[0]} has {b[1]!r}"))
    if "samples_ms" in column:
        bad = [(n, f[column["samples_ms"]]) for n, f in body if f[column["samples_ms"]].strip()
               and not _positive_numbers(f[column["samples_ms"]])]
        if bad:
            problems.append(f"{label}: column 'samples_ms' needs space-separated finite positive numbers (the rounds' "
                            "times): " + _first(bad, lambda b: f"line {b[0]} has {b[1][:40]!r}"))
        else:
            problems += _samples_against_figures(header, body, label)
    for suite in set(suites) & set(SUITES):
        needed = [c for c in SUITES[suite] if c in column]
        missing = []
        for number, fields in body:
            ok = "status" not in column or fields[column["status"]] in ("ok", "")
            if fields[column["suite"]] == suite and ok and not any(fields[column[c]].strip() for c in needed):
                missing.append(number)
        if missing:
            problems.append(f"{label}: {suite} row(s) with status ok but no {' or '.join(SUITES[suite])}: "
                            + _first(missing, lambda n: f"line {n}"))
    return problems


_AGREE = 0.01  # the figure is the rounds' median, rounded: they agree within 1%


def _samples_against_figures(header, body, label: str) -> List[str]:
    """Rows whose rounds contradict their own figures (another count than ``rounds``, a median that is not the
    row's step time): a verdict drawn from the rounds would not be about the row."""
    column = {name: i for i, name in enumerate(header)}
    timed = [c for c in schema.ROUND_FIGURES if c in column]  # the figure the rounds are the times of
    wrong_count, wrong_median = [], []
    for number, fields in body:
        cell = fields[column["samples_ms"]].strip()
        if not cell:
            continue
        samples = [float(x) for x in cell.split()]
        rounds = fields[column["rounds"]].strip() if "rounds" in column else ""
        if rounds and float(rounds) != len(samples):
            wrong_count.append((number, rounds, len(samples)))
        figure = next((float(fields[column[c]]) for c in timed if fields[column[c]].strip()), None)
        median = statistics.median(samples)
        if figure is not None and abs(median - figure) > _AGREE * figure:
            wrong_median.append((number, median, figure))
    problems = []
    if wrong_count:
        problems.append(f"{label}: samples_ms does not hold one time per round: "
                        + _first(wrong_count, lambda w: f"line {w[0]} says {w[1]} rounds and holds {w[2]} times"))
    if wrong_median:
        problems.append(f"{label}: samples_ms contradicts the row's own step time: "
                        + _first(wrong_median, lambda w: f"line {w[0]}: rounds' median {w[1]:.4g} ms, figure {w[2]:.4g} ms"))
    return problems


def _plausible(value: float, low) -> bool:
    return (value >= 0 if low == 0 else value > 0) and value <= schema.CEILING


def _positive_numbers(cell: str) -> bool:
    try:
        values = [float(x) for x in cell.split()]
    except ValueError:
        return False
    return bool(values) and all(math.isfinite(v) and v > 0 for v in values)


def check_text(text: str, label: str, require_suite: bool = True) -> List[str]:
    """Every problem of CSV text (as ``load_checked`` finds them in a file), e.g. rows about to be written."""
    header, body, problems = _parse(text, label)
    return problems + (check_table(header, body, label, require_suite) if header and not problems else [])


def load_checked(path, label: str = "") -> Tuple[pd.DataFrame, List[str]]:
    """The table at ``path`` and every problem found in it (empty when it is sound). An empty or
    header-only file is not a problem here: whether that is acceptable is the caller's call."""
    path = Path(path)
    label = f"{label} {path}".strip() if label else str(path)
    if not path.exists():
        return pd.DataFrame(), [f"{label}: no such file"]
    if path.is_dir():
        return pd.DataFrame(), [f"{label} is a directory, not a CSV file"]
    data = path.read_bytes()
    if not data.strip():
        return pd.DataFrame(), []
    if b"\0" in data:
        return pd.DataFrame(), [f"{label} is not a CSV: it holds binary data"]
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (spreadsheets write one) is not part of the header
    except UnicodeDecodeError as e:
        return pd.DataFrame(), [f"{label} is not a CSV: not UTF-8 text ({e.reason} at byte {e.start})"]
    header, body, problems = _parse(text, label)
    if header and not problems:
        problems += check_table(header, body, label)
    if problems:
        return pd.DataFrame(), problems
    if not body:
        return pd.DataFrame(columns=header), []
    table = pd.read_csv(io.StringIO(text), keep_default_na=True)
    return table, []
