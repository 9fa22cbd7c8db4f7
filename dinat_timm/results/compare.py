"""Compare two benchmark CSVs and decide whether NEW regressed against BASE.

Speed is compared as a ratio to a reference model measured in the same run when
``--relative-to`` is given (so a slower or busier machine does not read as a regression),
otherwise as the raw figure. Accuracy is compared in top-1 points.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import List, Optional

import pandas as pd

from .boards import flagged, key_columns, latest
from .writer import read_csv

HIGHER_IS_BETTER = ["infer_samples_per_sec", "train_samples_per_sec"]
LOWER_IS_BETTER = ["infer_step_time", "train_step_time", "median_ms", "ratio_vs_windowed"]


def parse_fraction(text) -> float:
    """'10%' or '0.1' -> 0.1."""
    text = str(text).strip()
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def _relative(df: pd.DataFrame, reference: str, metrics: List[str]) -> pd.DataFrame:
    """Each speed metric divided by the reference model's, measured on the same machine with the same
    batch, size, dtype and mode (the model's own attention backend and weights do not matter)."""
    keys = [c for c in key_columns(df, with_env=True) if c not in ("model", "backend", "pretrained")]
    ref = df[df["model"] == reference][keys + metrics].rename(columns={m: f"__ref_{m}" for m in metrics})
    if ref.empty:
        raise SystemExit(f"--relative-to {reference!r}: no rows of that model to divide by")
    out = df.merge(ref, on=keys, how="left")
    for m in metrics:
        out[m] = out[m] / out[f"__ref_{m}"]
    return out.drop(columns=[f"__ref_{m}" for m in metrics])


@dataclass
class Verdict:
    table: pd.DataFrame
    regressions: int

    @property
    def passed(self) -> bool:
        return self.regressions == 0


class Refused(ValueError):
    """The two CSVs cannot be compared as asked; the message says why (the CLI exits 2)."""


class DeviceMismatch(Refused):
    """BASE and NEW were measured on different devices (a speed ratio across them means nothing)."""


def check_same_kind(base: pd.DataFrame, new: pd.DataFrame) -> None:
    """Both CSVs hold rows of one suite (throughput against memory is no comparison)."""
    kinds = [set(df["suite"].dropna().astype(str)) if "suite" in df else set() for df in (base, new)]
    if kinds[0] and kinds[1] and not kinds[0] & kinds[1]:
        raise Refused(f"BASE holds {sorted(kinds[0])} rows and NEW {sorted(kinds[1])} rows: compare CSVs of the same suite")


def check_unflagged(base: pd.DataFrame, new: pd.DataFrame) -> None:
    """Rows flagged as untrustworthy (``noisy``, ``impossible``…) are no basis for a verdict."""
    for name, df in (("BASE", base), ("NEW", new)):
        rows = df[flagged(df)]
        if len(rows):
            first = rows.iloc[0]
            raise Refused(
                f"{name} has {len(rows)} flagged row(s), e.g. {first.get('model', '?')}: {first['flag']}; "
                "re-measure on an idle machine, or pass --include-flagged to compare them anyway"
            )


def _devices(df: pd.DataFrame) -> set:
    return set(df["device"].dropna().astype(str)) if "device" in df else set()


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
          ("batch", "b{:g}"), ("map_size", "{:g}²"), ("dilation", "d{:g}"), ("backend", "{}"), ("compile", "compiled"),
          ("channels_last", "channels-last"), ("device", "@{}")]


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


def compare(base: pd.DataFrame, new: pd.DataFrame, max_slowdown: float = 0.10, max_top1_drop: float = 0.1,
            relative_to: Optional[str] = None, allow_device_mismatch: bool = False,
            include_flagged: bool = False) -> Verdict:
    """Regressions of NEW against BASE. Rows pair up by configuration and, unless
    ``allow_device_mismatch``, by device. CSVs of different suites, of different devices, or with
    flagged rows are refused (``Refused``), the last two unless told otherwise."""
    check_same_kind(base, new)
    if not include_flagged:
        check_unflagged(base, new)
    if not allow_device_mismatch:
        check_devices(base, new)
    # rows pair up per device too, unless told otherwise: a CSV holding CPU and GPU rows keeps both
    by_device = () if allow_device_mismatch else ("device",)
    base, new = latest(base, with_env=False, also=by_device), latest(new, with_env=False, also=by_device)
    for frame in (base, new):
        frame["status"] = frame["status"].fillna("ok") if "status" in frame else "ok"
    metrics = [m for m in HIGHER_IS_BETTER + LOWER_IS_BETTER if m in base.columns and m in new.columns]
    if relative_to:
        speed = [m for m in metrics if m in HIGHER_IS_BETTER + ["infer_step_time", "train_step_time"]]
        base, new = _relative(base, relative_to, speed), _relative(new, relative_to, speed)
    keys = [c for c in key_columns(base, with_env=False) if c in new.columns]
    keys += [c for c in by_device if c in base.columns and c in new.columns]
    merged = base.merge(new, on=keys, how="outer", suffixes=("_base", "_new"), indicator=True)
    rows = []
    for _, r in merged.iterrows():
        row = {k: r[k] for k in keys}
        for m in ("infer_samples_per_sec", "train_samples_per_sec"):
            row[m] = r.get(f"{m}_new") if pd.notna(r.get(f"{m}_new", float("nan"))) else r.get(f"{m}_base")
        label = label_of(row)
        if r["_merge"] == "left_only":
            rows.append(dict(config=label, metric="-", base=None, new=None, change="missing in NEW", regression=True))
            continue
        if r["_merge"] == "right_only":
            rows.append(dict(config=label, metric="-", base=None, new=None, change="new row", regression=False))
            continue
        status = r.get("status_new", "ok")
        if isinstance(status, str) and status != "ok":
            rows.append(dict(config=label, metric="status", base=r.get("status_base"), new=status, change="failed", regression=True))
            continue
        for m in metrics:
            b, n = r.get(f"{m}_base"), r.get(f"{m}_new")
            if pd.isna(b) or b == 0:
                continue
            if pd.isna(n):
                rows.append(dict(config=label, metric=m, base=b, new=None, change="not measured", regression=True))
                continue
            slowdown = (1 - n / b) if m in HIGHER_IS_BETTER else (n / b - 1)
            rows.append(dict(config=label, metric=m + (f" / {relative_to}" if relative_to and m in HIGHER_IS_BETTER + ["infer_step_time", "train_step_time"] else ""),
                             base=round(b, 4), new=round(n, 4), change=f"{-slowdown:+.1%}", regression=slowdown > max_slowdown))
        if "top1_base" in r and pd.notna(r.get("top1_base")) and pd.notna(r.get("top1_new")):
            drop = r["top1_base"] - r["top1_new"]
            rows.append(dict(config=label, metric="top1", base=r["top1_base"], new=r["top1_new"], change=f"{-drop:+.2f} pt",
                             regression=drop > max_top1_drop))
    table = pd.DataFrame(rows, columns=["config", "metric", "base", "new", "change", "regression"])
    return Verdict(table, int(table["regression"].sum()) if not table.empty else 0)


def run(base_path, new_path, max_slowdown, max_top1_drop, relative_to=None, allow_device_mismatch=False,
        only_regressions=False, include_flagged=False) -> int:
    try:
        verdict = compare(read_csv(base_path), read_csv(new_path), parse_fraction(max_slowdown), float(max_top1_drop),
                          relative_to, allow_device_mismatch, include_flagged)
    except Refused as e:
        print(f"error: compare: {e}", file=sys.stderr)
        return 2
    table = verdict.table[verdict.table["regression"]] if only_regressions else verdict.table
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.max_colwidth", 80):
        print(table.to_string(index=False) if not table.empty else
              ("(no regressions)" if only_regressions and not verdict.table.empty else "(no comparable rows)"))
    print(f"\nverdict: {'PASS' if verdict.passed else 'FAIL'} — {verdict.regressions} regression(s) "
          f"(max slowdown {parse_fraction(max_slowdown):.0%}, max top-1 drop {max_top1_drop} pt"
          f"{', speed relative to ' + relative_to if relative_to else ''})")
    return 0 if verdict.passed else 1
