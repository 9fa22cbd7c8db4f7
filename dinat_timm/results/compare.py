"""Compare two benchmark CSVs and decide whether NEW regressed against BASE.

Speed is compared as a ratio to a reference model measured in the same run when
``--relative-to`` is given (so a slower or busier machine does not read as a regression),
otherwise as the raw figure. Accuracy is compared in top-1 points.

A verdict is given only on what can be compared: options and both files are checked first (see
``validate``), and every problem is reported at once; rows present in only one file are listed as
not compared, and fail the verdict only under ``require_same_rows``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from . import schema
from .tables import flags, key_columns, latest
from .validate import load_checked


class Refused(ValueError):
    """The two CSVs cannot be compared as asked; ``problems`` says why, one line each (the CLI exits 2)."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class DeviceMismatch(Refused):
    """BASE and NEW have no device in common (a speed ratio across devices means nothing)."""


def _relative(df: pd.DataFrame, reference: str, metrics: List[str]) -> pd.DataFrame:
    """Each speed metric divided by the reference model's, measured on the same machine with the same
    batch, size, dtype and mode (the model's own attention backend and weights do not matter).
    Rows with no such reference row get NaN (reported as not compared)."""
    keys = [c for c in key_columns(df, with_env=True) if c not in ("model", "backend", "pretrained")]
    carried = metrics + (["samples_ms"] if "samples_ms" in df else [])  # the reference's rounds, for intervals
    ref = df[df["model"] == reference][keys + carried].rename(columns={m: f"__ref_{m}" for m in carried})
    out = df.merge(ref, on=keys, how="left")
    for m in metrics:
        out[m] = out[m] / out[f"__ref_{m}"]
    return out.drop(columns=[f"__ref_{m}" for m in metrics])


INTERVAL_CONFIDENCE = 0.99
_BOOTSTRAP = 4000


def _samples(cell) -> Optional[np.ndarray]:
    if not isinstance(cell, str):
        return None
    try:
        values = np.array([float(x) for x in cell.split()])
    except ValueError:
        return None
    return values if len(values) >= 3 and np.all(values > 0) else None


def speed_interval(row, relative_to: Optional[str] = None) -> Optional[Tuple[float, float]]:
    """NEW's speed over BASE's, as a percentile-bootstrap interval (INTERVAL_CONFIDENCE) of the ratio of
    the rounds' medians, each side resampled on its own (with ``relative_to``, the reference's rounds
    too); None unless both rows kept at least 3 rounds (``samples_ms``)."""
    cells = [row.get("samples_ms_base"), row.get("samples_ms_new")]
    if relative_to:
        cells += [row.get("__ref_samples_ms_base"), row.get("__ref_samples_ms_new")]
    parsed = [_samples(c) for c in cells]
    if any(p is None for p in parsed):
        return None
    rng = np.random.default_rng(0)  # the same verdict for the same files
    medians = [np.median(rng.choice(p, size=(_BOOTSTRAP, len(p))), axis=1) for p in parsed]
    time_factor = medians[1] / medians[0]
    if relative_to:
        time_factor = time_factor / (medians[3] / medians[2])
    tail = (1 - INTERVAL_CONFIDENCE) / 2
    low, high = np.quantile(1 / time_factor, [tail, 1 - tail])
    return float(low), float(high)


def interval_word(interval: Tuple[float, float], max_slowdown: float) -> str:
    """regressed: the whole interval is slower than tolerated; improved: faster by as much; unchanged:
    within the tolerance both ways; inconclusive: the rounds cannot tell."""
    low, high = interval
    floor, ceiling = 1 - max_slowdown, 1 / (1 - max_slowdown)
    if high < floor:
        return "regressed"
    if low > ceiling:
        return "improved"
    return "unchanged" if low >= floor and high <= ceiling else "inconclusive"


@dataclass
class Verdict:
    table: pd.DataFrame
    regressions: int
    not_compared: int = 0

    @property
    def inconclusive(self) -> int:
        """Rows whose rounds cannot tell a change beyond the tolerance from none."""
        return int(self.table["change"].astype(str).str.endswith(": inconclusive").sum()) if not self.table.empty else 0

    @property
    def passed(self) -> bool:
        return self.regressions == 0 and self.inconclusive == 0

    @property
    def exit_code(self) -> int:
        """1 a regression; 2 none, but rows the rounds cannot judge (as the gate's "cannot judge"); 0 clear."""
        return 1 if self.regressions else 2 if self.inconclusive else 0


def _suites(df: pd.DataFrame) -> set:
    return set(df["suite"].dropna().astype(str)) if "suite" in df else set()


def _devices(df: pd.DataFrame) -> set:
    return set(df["device"].dropna().astype(str)) if "device" in df else set()


def problems_between(base: pd.DataFrame, new: pd.DataFrame, relative_to: Optional[str] = None) -> List[str]:
    """Every reason the two (individually sound) tables cannot be compared at all."""
    problems = []
    for name, df in (("BASE", base), ("NEW", new)):
        if df.empty:
            problems.append(f"{name} has no rows: nothing to compare")
    if problems:
        return problems
    kinds = [_suites(base), _suites(new)]
    if kinds[0] != kinds[1] and not kinds[0] & kinds[1]:
        problems.append(f"BASE holds {sorted(kinds[0])} rows and NEW {sorted(kinds[1])} rows: compare CSVs of the same suite")
    for name, df in (("BASE", base), ("NEW", new)):
        if len(_suites(df)) > 1:
            problems.append(f"{name} mixes rows of several suites {sorted(_suites(df))}: compare one suite's CSV at a time")
    if relative_to:
        for name, df in (("BASE", base), ("NEW", new)):
            models = set(df["model"].dropna().astype(str)) if "model" in df else set()
            if relative_to not in models:
                problems.append(f"--relative-to {relative_to!r}: {name} has no row of that model to divide by "
                                f"(its models: {', '.join(sorted(models)) or 'none'})")
    return problems


def _device_problem(base: pd.DataFrame, new: pd.DataFrame) -> Optional[str]:
    base_devices, new_devices = _devices(base), _devices(new)
    if base_devices and new_devices and not base_devices & new_devices:
        return (f"BASE was measured on {sorted(base_devices)} and NEW on {sorted(new_devices)}; rows of different "
                "devices are not comparable (pass --allow-device-mismatch to compare them anyway)")
    return None


def mode_of(row) -> str:
    """infer / train (throughput rows carry one of the two), fwd / fwd_bwd (op rows), or the row's own."""
    for column, mode in (("infer_samples_per_sec", "infer"), ("train_samples_per_sec", "train")):
        value = row.get(column)
        if value is not None and pd.notna(value):
            return mode
    mode = row.get("mode")
    return str(mode) if mode is not None and pd.notna(mode) else ""


def label_of(row) -> str:
    """A short configuration label: model, mode, dtype, batch, backend, device (what differs between rows)."""
    parts = []
    for column, fmt in schema.LABELS:
        value = mode_of(row) if column == "mode" else row.get(column)
        if value is None or (not isinstance(value, str) and pd.isna(value)) or value == "":
            continue
        if column in ("compile", "channels_last"):
            if value in (1, "1", True):
                parts.append(fmt)
            continue
        try:
            parts.append(fmt.format(value))
        except (ValueError, TypeError):
            parts.append(str(value))
    return " ".join(parts)


def speed_change(speed_ratio: float) -> str:
    """New speed over base speed, as a person reads it: '×0.14 slower', '×1.25 faster', '×1.00 same'
    (the word agrees with the factor as shown)."""
    shown = round(speed_ratio, 2)
    word = "faster" if shown > 1 else "slower" if shown < 1 else "same"
    return f"×{shown:.2f} {word}"


def _set_aside_flagged(base: pd.DataFrame, new: pd.DataFrame):
    """Flagged rows (their own flags and those derived from other rows) are listed, not compared, and do
    not refuse the rest. Returns (base, new, reasons, result rows)."""
    reasons, listed, kept = [], [], []
    for name, df in (("BASE", base), ("NEW", new)):
        why = flags(df)
        rows = df[why != ""]
        kept.append(df[why == ""])
        if len(rows):
            first = rows.iloc[0]
            reasons.append(f"{name} has {len(rows)} flagged row(s), not compared (e.g. {label_of(first)}: "
                           f"{why[rows.index[0]]}); re-measure on an idle machine, or pass --include-flagged")
            listed += [_result(label_of(r), "-", None, None, f"not compared: flagged in {name} ({why[i]})",
                               compared=False) for i, r in rows.iterrows()]
    return kept[0], kept[1], reasons, listed


def _result(label, metric, base, new, change, regression=False, compared=True, interval=None) -> dict:
    return dict(config=label, metric=metric, base=base, new=new, change=change, regression=regression,
                compared=compared, interval=interval)


@dataclass
class Aligned:
    """BASE's and NEW's rows side by side (``merged``, pandas' indicator in ``_merge``), paired on ``keys``."""

    merged: pd.DataFrame
    keys: List[str]
    metrics: List[str]
    by_device: Tuple[str, ...]
    other_devices: dict


def align(base: pd.DataFrame, new: pd.DataFrame, relative_to: Optional[str], by_device: Tuple[str, ...]) -> Aligned:
    """The latest row of each configuration (per device unless told otherwise), speeds divided by the
    reference's where asked, and the two sides merged on what identifies a row."""
    other_devices = {"NEW": _devices(base) - _devices(new), "BASE": _devices(new) - _devices(base)}
    base, new = latest(base, with_env=False, also=by_device), latest(new, with_env=False, also=by_device)
    for frame in (base, new):
        frame["status"] = frame["status"].fillna("ok") if "status" in frame else "ok"
    metrics = [m for m in schema.HIGHER_IS_BETTER + schema.LOWER_IS_BETTER if m in base.columns and m in new.columns]
    if relative_to:
        speed = [m for m in metrics if m in schema.SPEED_METRICS]
        base, new = _relative(base, relative_to, speed), _relative(new, relative_to, speed)
    keys = [c for c in key_columns(base, with_env=False) if c in new.columns]
    keys += [c for c in by_device if c in base.columns and c in new.columns]
    merged = base.merge(new, on=keys, how="outer", suffixes=("_base", "_new"), indicator=True)
    return Aligned(merged, keys, metrics, by_device, other_devices)


def _row_label(r, keys) -> Tuple[dict, str]:
    """The identifying cells of a merged row and what tells it apart, from either side; and its label."""
    row = {k: r[k] for k in keys}
    wanted = sorted(({c for c, _ in schema.LABELS} | {"infer_samples_per_sec", "train_samples_per_sec"}) - set(keys))
    for column in wanted:  # what tells the row apart (the mode's clue included), from either side
        for side in ("_new", "_base"):
            value = r.get(column + side)
            if value is not None and not (not isinstance(value, str) and pd.isna(value)):
                row[column] = value
                break
    return row, label_of(row)


def judge(r, aligned: Aligned, max_slowdown: float, max_top1_drop: float, relative_to: Optional[str],
          require_same_rows: bool) -> List[dict]:
    """What one merged row says: not compared (one side only), failed, or a change per metric."""
    row, label = _row_label(r, aligned.keys)
    if r["_merge"] != "both":
        where = "NEW" if r["_merge"] == "left_only" else "BASE"
        device = row.get("device")
        why = (f"not compared: {where} has no row measured on {device}"
               if aligned.by_device and device in aligned.other_devices[where] else f"not compared: no such row in {where}")
        return [_result(label, "-", None, None, why, regression=require_same_rows, compared=False)]
    status = r.get("status_new", "ok")
    if isinstance(status, str) and status != "ok":
        return [_result(label, "status", r.get("status_base"), status, "failed", regression=True)]
    out, intervals = [], {}  # one bootstrap per row and yardstick: a row's speed and step time share their rounds
    for m in aligned.metrics:
        b, n = r.get(f"{m}_base"), r.get(f"{m}_new")
        if pd.isna(b) and pd.isna(n):
            continue  # not a metric of this row (an infer row has no train figure)
        shown = m + (f" / {relative_to}" if relative_to and m in schema.SPEED_METRICS else "")
        if pd.isna(n):
            out.append(_result(label, shown, b, None, "not compared: not measured in NEW",
                               regression=require_same_rows, compared=False))
            continue
        if pd.isna(b) or b == 0 or n == 0:
            why = (f"no {relative_to} row with the same settings" if relative_to and m in schema.SPEED_METRICS
                   else "no figure in BASE")
            out.append(_result(label, shown, b, n, f"not compared: {why}", compared=False))  # not a regression
            continue
        speed_ratio = n / b if m in schema.HIGHER_IS_BETTER else b / n
        interval = None
        if m in schema.TIMED_METRICS:  # the figures the rounds (samples_ms) are of
            yardstick = relative_to if m in schema.SPEED_METRICS else None
            if yardstick not in intervals:
                intervals[yardstick] = speed_interval(r, yardstick)
            interval = intervals[yardstick]
        if interval is None:
            out.append(_result(label, shown, round(b, 4), round(n, 4), speed_change(speed_ratio),
                               regression=(1 - speed_ratio) > max_slowdown))
        else:
            word = interval_word(interval, max_slowdown)
            out.append(_result(label, shown, round(b, 4), round(n, 4), f"{speed_change(speed_ratio)}: {word}",
                               regression=word == "regressed", interval=f"×{interval[0]:.2f}–×{interval[1]:.2f}"))
    if "top1_base" in r and pd.notna(r.get("top1_base")) and pd.notna(r.get("top1_new")):
        drop = r["top1_base"] - r["top1_new"]
        out.append(_result(label, "top1", r["top1_base"], r["top1_new"], f"{-drop:+.2f} pt",
                           regression=drop > max_top1_drop))
    return out


def compare(base: pd.DataFrame, new: pd.DataFrame, max_slowdown: float = 0.10, max_top1_drop: float = 0.1,
            relative_to: Optional[str] = None, allow_device_mismatch: bool = False,
            include_flagged: bool = False, require_same_rows: bool = False) -> Verdict:
    """Regressions of NEW against BASE: refuse what cannot be compared (``Refused``, with every reason), set
    flagged rows aside, ``align`` the rest by configuration (and device, unless ``allow_device_mismatch``),
    ``judge`` each pair. Rows present in one file only are listed as not compared, and count as regressions
    only with ``require_same_rows``."""
    problems = problems_between(base, new, relative_to)
    if problems:
        raise Refused(problems)
    reasons, rows = [], []
    if not include_flagged:
        base, new, reasons, rows = _set_aside_flagged(base, new)
    device_problem = None if allow_device_mismatch else _device_problem(base, new)
    if device_problem:
        reasons.append(device_problem)
    # rows pair up per device too, unless told otherwise: a CSV holding CPU and GPU rows keeps both
    aligned = align(base, new, relative_to, () if allow_device_mismatch else ("device",))
    for _, r in aligned.merged.iterrows():
        rows += judge(r, aligned, max_slowdown, max_top1_drop, relative_to, require_same_rows)
    table = pd.DataFrame(rows, columns=["config", "metric", "base", "new", "change", "interval", "regression", "compared"])
    compared = table[table["compared"]] if not table.empty else table
    if compared.empty and not (require_same_rows and table["regression"].any()):
        if not reasons:  # else the reasons above say why
            reasons.append("no row of BASE has a matching row in NEW (same configuration"
                           f"{'' if allow_device_mismatch else ' and device'}): nothing to compare")
        raise (DeviceMismatch if device_problem else Refused)(reasons)
    return Verdict(table, int(table["regression"].sum()) if not table.empty else 0,
                   int((~table["compared"]).sum()) if not table.empty else 0)


def read_sides(base_path, new_path) -> Tuple[pd.DataFrame, pd.DataFrame, List[str]]:
    """Both CSVs read and checked, and every problem with them (a file compared with itself among them)."""
    problems = []
    try:
        same = os.path.samefile(base_path, new_path)
    except OSError:  # a missing file: said below
        same = False
    if same:
        problems.append(f"BASE {base_path} and NEW {new_path} are the same file: a file compared with itself always "
                        "passes; give the run to judge as NEW")
    tables = []
    for name, path in (("BASE", base_path), ("NEW", new_path)):
        table, found = load_checked(path, name)
        problems += found
        if not found and table.empty:
            problems.append(f"{name} {path} has no rows: nothing to compare")
        tables.append(table)
    return tables[0], tables[1], problems


def run(base: str, new: str, *, max_slowdown: float = 0.10, max_top1_drop: float = 0.1,
        relative_to: Optional[str] = None, allow_device_mismatch: bool = False, only_regressions: bool = False,
        include_flagged: bool = False, require_same_rows: bool = False, output_format: str = "text",
        option_problems: Sequence[str] = ()) -> int:
    """The ``compare`` command: 0 no regression, 1 regression, 2 cannot compare (every reason on stderr, the
    options' ``option_problems`` first)."""
    base_table, new_table, problems = read_sides(base, new)
    problems = list(option_problems) + problems
    try:
        if problems:
            raise Refused(problems)
        verdict = compare(base_table, new_table, max_slowdown, max_top1_drop, relative_to, allow_device_mismatch,
                          include_flagged, require_same_rows)
    except Refused as e:
        if output_format == "json":  # a script reading the output gets JSON either way
            import json

            print(json.dumps({"passed": None, "exit_code": 2, "errors": e.problems}, indent=2))
        elif output_format == "markdown":
            print("### Benchmark comparison: ⚠️ cannot compare\n\n" + "\n".join(f"- {p}" for p in e.problems))
        for problem in e.problems:
            print(f"error: compare: {problem}", file=sys.stderr)
        return 2
    print(report(verdict, output_format, only_regressions, max_slowdown, max_top1_drop, relative_to, require_same_rows))
    return verdict.exit_code


def report(verdict: Verdict, output_format: str, only_regressions: bool, max_slowdown: float, max_top1_drop: float,
           relative_to: Optional[str], require_same_rows: bool) -> str:
    """The verdict as text (a table and the verdict line), markdown or JSON."""
    table = verdict.table[verdict.table["regression"]] if only_regressions else verdict.table
    skipped = f"; {verdict.not_compared} row(s) not compared (listed above)" if verdict.not_compared else ""
    if verdict.not_compared and only_regressions and not require_same_rows:
        skipped = f"; {verdict.not_compared} row(s) not compared (run without --only-regressions to list them)"
    word = {0: "PASS", 1: "FAIL", 2: "CANNOT JUDGE"}[verdict.exit_code]
    unsure = (f"; {verdict.inconclusive} row(s) inconclusive: their rounds cannot tell a change beyond "
              f"{max_slowdown * 100:g}% from none (re-measure with more --rounds, or on a quieter machine)"
              if verdict.inconclusive else "")
    line = (f"verdict: {word} — {verdict.regressions} regression(s) "
            f"(max slowdown {max_slowdown * 100:g}%, max top-1 drop {max_top1_drop:g} pt"
            f"{', speed relative to ' + relative_to if relative_to else ''}){unsure}{skipped}")
    if output_format == "json":
        import json

        rows = table.drop(columns=["compared"]).astype(object).where(table.drop(columns=["compared"]).notna(), None)
        return json.dumps({"passed": verdict.passed, "exit_code": verdict.exit_code, "regressions": verdict.regressions,
                           "inconclusive": verdict.inconclusive, "not_compared": verdict.not_compared, "max_slowdown": max_slowdown,
                           "max_top1_drop": max_top1_drop, "relative_to": relative_to,
                           "rows": rows.to_dict("records"), "verdict": line}, indent=2, default=str)
    if output_format == "markdown":
        return as_markdown(table, verdict, line)
    table = table.drop(columns=["compared"])
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.max_colwidth", 80):
        text = table.to_string(index=False) if not table.empty else "(no regressions)"
    return f"{text}\n\n{line}"


def as_markdown(table: pd.DataFrame, verdict: Verdict, line: str) -> str:
    """The comparison as a markdown table (a CI job summary, a pull request comment)."""
    word = ("✅ no regression" if verdict.passed else f"❌ {verdict.regressions} regression(s)" if verdict.regressions
            else f"⚠️ cannot judge: {verdict.inconclusive} row(s) inconclusive")
    out = [f"### Benchmark comparison: {word}", "", "| configuration | metric | base | new | change | interval |",
           "|---|---|---|---|---|---|"]

    def cell(value):
        return "–" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value).replace("|", "\\|")

    for r in table.to_dict("records"):
        mark = " ❌" if r["regression"] else ""
        out.append(f"| {cell(r['config'])} | {cell(r['metric'])} | {cell(r['base'])} | {cell(r['new'])} | "
                   f"{cell(r['change'])}{mark} | {cell(r['interval'])} |")
    return "\n".join(out + ["", line])
