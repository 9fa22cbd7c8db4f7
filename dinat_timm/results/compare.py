"""Compare two benchmark CSVs and decide whether NEW regressed against BASE.

Speed is compared as a ratio to a reference model measured in the same run when
``--relative-to`` is given (so a slower or busier machine does not read as a regression),
otherwise as the raw figure. Accuracy is compared in top-1 points.

A verdict is given only on what can be compared: options and both files are checked first (see
``validate``), and every problem is reported at once; rows present in only one file are listed as
not compared, and fail the verdict only under ``require_same_rows``.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import List, Optional, Tuple

import pandas as pd

from .boards import flagged, key_columns, latest
from .validate import load_checked

HIGHER_IS_BETTER = ["infer_samples_per_sec", "train_samples_per_sec"]
LOWER_IS_BETTER = ["infer_step_time", "train_step_time", "median_ms", "ratio_vs_windowed"]
SPEED_METRICS = HIGHER_IS_BETTER + ["infer_step_time", "train_step_time"]  # what --relative-to divides


class Refused(ValueError):
    """The two CSVs cannot be compared as asked; ``problems`` says why, one line each (the CLI exits 2)."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class DeviceMismatch(Refused):
    """BASE and NEW were measured on different devices (a speed ratio across them means nothing)."""


def parse_slowdown(text) -> Tuple[Optional[float], Optional[str]]:
    """'10%' or 0.1 -> 0.1: a fraction in [0, 1), finite; else (None, why)."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        return None, f"--max-slowdown {text!r} is not a number: give a percentage such as 10% (or the fraction 0.1)"
    if not math.isfinite(value) or not 0 <= value < 1:
        hint = ""
        if not raw.endswith("%") and math.isfinite(value) and value >= 1:
            hint = f"; a bare number is a fraction, so {raw} would mean {value:.0%}: write a percentage such as '20%'"
        return None, f"--max-slowdown {text!r} must be a percentage in [0%, 100%) (or a fraction in [0, 1)){hint}"
    return value, None


def parse_top1_drop(text) -> Tuple[Optional[float], Optional[str]]:
    """Top-1 points: a finite number >= 0; else (None, why)."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None, f"--max-top1-drop {text!r} is not a number: give top-1 points, such as 0.1"
    if not math.isfinite(value) or value < 0:
        return None, f"--max-top1-drop {text!r} must be a finite number of top-1 points >= 0"
    return value, None


def _relative(df: pd.DataFrame, reference: str, metrics: List[str]) -> pd.DataFrame:
    """Each speed metric divided by the reference model's, measured on the same machine with the same
    batch, size, dtype and mode (the model's own attention backend and weights do not matter).
    Rows with no such reference row get NaN (reported as not compared)."""
    keys = [c for c in key_columns(df, with_env=True) if c not in ("model", "backend", "pretrained")]
    ref = df[df["model"] == reference][keys + metrics].rename(columns={m: f"__ref_{m}" for m in metrics})
    out = df.merge(ref, on=keys, how="left")
    for m in metrics:
        out[m] = out[m] / out[f"__ref_{m}"]
    return out.drop(columns=[f"__ref_{m}" for m in metrics])


@dataclass
class Verdict:
    table: pd.DataFrame
    regressions: int
    not_compared: int = 0

    @property
    def passed(self) -> bool:
        return self.regressions == 0


def _suites(df: pd.DataFrame) -> set:
    return set(df["suite"].dropna().astype(str)) if "suite" in df else set()


def _devices(df: pd.DataFrame) -> set:
    return set(df["device"].dropna().astype(str)) if "device" in df else set()


def problems_between(base: pd.DataFrame, new: pd.DataFrame, relative_to: Optional[str] = None,
                     allow_device_mismatch: bool = False, include_flagged: bool = False) -> List[str]:
    """Every reason the two (individually sound) tables cannot be compared as asked."""
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
    if not include_flagged:
        for name, df in (("BASE", base), ("NEW", new)):
            rows = df[flagged(df)]
            if len(rows):
                first = rows.iloc[0]
                problems.append(
                    f"{name} has {len(rows)} flagged row(s), e.g. {first.get('model', '?')}: {first['flag']}; "
                    "re-measure on an idle machine, or pass --include-flagged to compare them anyway")
    if relative_to:
        for name, df in (("BASE", base), ("NEW", new)):
            models = set(df["model"].dropna().astype(str)) if "model" in df else set()
            if relative_to not in models:
                problems.append(f"--relative-to {relative_to!r}: {name} has no row of that model to divide by "
                                f"(its models: {', '.join(sorted(models)) or 'none'})")
    return problems


def check_devices(base: pd.DataFrame, new: pd.DataFrame) -> None:
    base_devices, new_devices = _devices(base), _devices(new)
    if base_devices and new_devices and base_devices != new_devices:
        raise DeviceMismatch(
            f"BASE was measured on {sorted(base_devices)} and NEW on {sorted(new_devices)}; rows of "
            "different devices are not comparable (pass --allow-device-mismatch to compare them anyway)"
        )


def mode_of(row) -> str:
    """infer / train (throughput rows carry one of the two), fwd / fwd_bwd (op rows), or the row's own."""
    for column, mode in (("infer_samples_per_sec", "infer"), ("train_samples_per_sec", "train")):
        value = row.get(column)
        if value is not None and pd.notna(value):
            return mode
    mode = row.get("mode")
    return str(mode) if mode is not None and pd.notna(mode) else ""


_LABEL = [("model", "{}"), ("mode", "{}"), ("dtype", "{}"), ("infer_batch_size", "b{:g}"), ("train_batch_size", "b{:g}"),
          ("batch", "b{:g}"), ("img_size", "{:g}px"), ("map_size", "{:g}²"), ("dilation", "d{:g}"), ("backend", "{}"),
          ("compile", "compiled"), ("channels_last", "channels-last"), ("device", "@{}")]


def label_of(row) -> str:
    """A short configuration label: model, mode, dtype, batch, backend, device (what differs between rows)."""
    parts = []
    for column, fmt in _LABEL:
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


def compare(base: pd.DataFrame, new: pd.DataFrame, max_slowdown: float = 0.10, max_top1_drop: float = 0.1,
            relative_to: Optional[str] = None, allow_device_mismatch: bool = False,
            include_flagged: bool = False, require_same_rows: bool = False) -> Verdict:
    """Regressions of NEW against BASE. Rows pair up by configuration and, unless
    ``allow_device_mismatch``, by device. CSVs that cannot be compared as asked are refused
    (``Refused``, with every reason); rows present in one file only are listed as not compared,
    and count as regressions only with ``require_same_rows``."""
    problems = problems_between(base, new, relative_to, allow_device_mismatch, include_flagged)
    if problems:
        raise Refused(problems)
    if not allow_device_mismatch:
        check_devices(base, new)
    # rows pair up per device too, unless told otherwise: a CSV holding CPU and GPU rows keeps both
    by_device = () if allow_device_mismatch else ("device",)
    base, new = latest(base, with_env=False, also=by_device), latest(new, with_env=False, also=by_device)
    for frame in (base, new):
        frame["status"] = frame["status"].fillna("ok") if "status" in frame else "ok"
    metrics = [m for m in HIGHER_IS_BETTER + LOWER_IS_BETTER if m in base.columns and m in new.columns]
    if relative_to:
        speed = [m for m in metrics if m in SPEED_METRICS]
        base, new = _relative(base, relative_to, speed), _relative(new, relative_to, speed)
    keys = [c for c in key_columns(base, with_env=False) if c in new.columns]
    keys += [c for c in by_device if c in base.columns and c in new.columns]
    merged = base.merge(new, on=keys, how="outer", suffixes=("_base", "_new"), indicator=True)
    rows = []

    def add(label, metric, b, n, change, regression=False, compared=True):
        rows.append(dict(config=label, metric=metric, base=b, new=n, change=change, regression=regression,
                         compared=compared))

    for _, r in merged.iterrows():
        row = {k: r[k] for k in keys}
        for m in ("infer_samples_per_sec", "train_samples_per_sec"):
            row[m] = r.get(f"{m}_new") if pd.notna(r.get(f"{m}_new", float("nan"))) else r.get(f"{m}_base")
        label = label_of(row)
        if r["_merge"] != "both":
            where = "NEW" if r["_merge"] == "left_only" else "BASE"
            add(label, "-", None, None, f"not compared: no such row in {where}", regression=require_same_rows, compared=False)
            continue
        status = r.get("status_new", "ok")
        if isinstance(status, str) and status != "ok":
            add(label, "status", r.get("status_base"), status, "failed", regression=True)
            continue
        for m in metrics:
            b, n = r.get(f"{m}_base"), r.get(f"{m}_new")
            if pd.isna(b) and pd.isna(n):
                continue  # not a metric of this row (an infer row has no train figure)
            shown = m + (f" / {relative_to}" if relative_to and m in SPEED_METRICS else "")
            if pd.isna(n):
                add(label, shown, b, None, "not measured in NEW", regression=True)
                continue
            if pd.isna(b) or b == 0 or n == 0:
                why = f"no {relative_to} row with the same settings" if relative_to and m in SPEED_METRICS else "no figure in BASE"
                add(label, shown, b, n, f"not compared: {why}", regression=require_same_rows, compared=False)
                continue
            speed_ratio = n / b if m in HIGHER_IS_BETTER else b / n
            add(label, shown, round(b, 4), round(n, 4), speed_change(speed_ratio),
                regression=(1 - speed_ratio) > max_slowdown)
        if "top1_base" in r and pd.notna(r.get("top1_base")) and pd.notna(r.get("top1_new")):
            drop = r["top1_base"] - r["top1_new"]
            add(label, "top1", r["top1_base"], r["top1_new"], f"{-drop:+.2f} pt", regression=drop > max_top1_drop)
    table = pd.DataFrame(rows, columns=["config", "metric", "base", "new", "change", "regression", "compared"])
    compared = table[table["compared"]] if not table.empty else table
    if compared.empty and not require_same_rows:
        raise Refused("no row of BASE has a matching row in NEW (same configuration"
                      f"{'' if allow_device_mismatch else ' and device'}): nothing to compare")
    return Verdict(table, int(table["regression"].sum()) if not table.empty else 0,
                   int((~table["compared"]).sum()) if not table.empty else 0)


def run(base_path, new_path, max_slowdown="10%", max_top1_drop="0.1", relative_to=None, allow_device_mismatch=False,
        only_regressions=False, include_flagged=False, require_same_rows=False) -> int:
    """The ``compare`` command: 0 no regression, 1 regression, 2 cannot compare (every reason on stderr)."""
    slowdown, problem_s = parse_slowdown(max_slowdown)
    top1_drop, problem_t = parse_top1_drop(max_top1_drop)
    problems = [p for p in (problem_s, problem_t) if p]
    for name, path in (("BASE", base_path), ("NEW", new_path)):
        table, found = load_checked(path, name)
        problems += found
        if not found and table.empty:
            problems.append(f"{name} {path} has no rows: nothing to compare")
        if name == "BASE":
            base = table
        else:
            new = table
    try:
        if problems:
            raise Refused(problems)
        verdict = compare(base, new, slowdown, top1_drop, relative_to, allow_device_mismatch, include_flagged,
                          require_same_rows)
    except Refused as e:
        for problem in e.problems:
            print(f"error: compare: {problem}", file=sys.stderr)
        return 2
    table = verdict.table[verdict.table["regression"]] if only_regressions else verdict.table
    table = table.drop(columns=["compared"])
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.max_colwidth", 80):
        print(table.to_string(index=False) if not table.empty else "(no regressions)")
    skipped = f"; {verdict.not_compared} row(s) not compared (listed above)" if verdict.not_compared else ""
    if verdict.not_compared and only_regressions and not require_same_rows:
        skipped = f"; {verdict.not_compared} row(s) not compared (run without --only-regressions to list them)"
    print(f"\nverdict: {'PASS' if verdict.passed else 'FAIL'} — {verdict.regressions} regression(s) "
          f"(max slowdown {slowdown * 100:g}%, max top-1 drop {top1_drop:g} pt"
          f"{', speed relative to ' + relative_to if relative_to else ''}){skipped}")
    return 0 if verdict.passed else 1
