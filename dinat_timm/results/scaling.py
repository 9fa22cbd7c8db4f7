"""The scaling suite's board: each backbone's growth exponent of time and memory against tokens, and
the log-log plot of both (against pixels, which every model's tokens are proportional to: a model's
slope is the same either way, and models of different strides share one axis)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from . import schema
from .tables import exactly_measured_memory, latest

GROUP = schema.SCALING_SERIES


def growth_exponent(tokens: Sequence[float], values: Sequence[float]) -> Optional[float]:
    """The slope of log(value) against log(tokens), least squares: 1 for linear growth, 2 for
    quadratic; None with fewer than two sizes or a non-positive value."""
    points = [(math.log(t), math.log(v)) for t, v in zip(tokens, values)
              if t and v and pd.notna(t) and pd.notna(v) and t > 0 and v > 0]
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return round(slope, 3)


def scaling_board(rows: pd.DataFrame) -> pd.DataFrame:
    """The latest row per model, mode and size (ok rows only), with ``time_exponent`` and
    ``memory_exponent`` (per image, against tokens; memory from exactly measured rows only) and the
    ``sizes`` they were fitted over."""
    rows = rows[rows["status"].fillna("ok") == "ok"] if "status" in rows else rows
    board = exactly_measured_memory(latest(rows))
    if board.empty:
        return board
    keys = [c for c in GROUP if c in board]
    board = board.sort_values(keys + ["img_size"], kind="stable").reset_index(drop=True)
    per_image = board["step_time"] / board["batch_size"]
    board["time_exponent"] = None
    board["memory_exponent"] = None
    board["sizes"] = ""
    for _, index in board.groupby(keys, dropna=False, sort=False).groups.items():
        group = board.loc[index]
        board.loc[index, "time_exponent"] = growth_exponent(group["tokens"], per_image.loc[index])
        if "peak_mem_mb" in group:
            board.loc[index, "memory_exponent"] = growth_exponent(group["tokens"], group["peak_mem_mb"])
        board.loc[index, "sizes"] = ", ".join(str(int(s)) for s in group["img_size"])
    return board


def plot_scaling(board: pd.DataFrame, out) -> Path:
    """Log-log: time per image and peak memory against pixels, one line per model, a column per
    device · dtype · mode; each line's label gives its fitted exponent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    panels = sorted({(str(r.device), str(r.dtype), str(r.mode)) for r in board.itertuples()})
    fig, axes = plt.subplots(2, max(1, len(panels)), figsize=(6 * max(1, len(panels)), 9), squeeze=False)
    for i, (device, dtype, mode) in enumerate(panels):
        rows = board[(board["device"].astype(str) == device) & (board["dtype"].astype(str) == dtype)
                     & (board["mode"].astype(str) == mode)]
        for model, group in rows.groupby("model", sort=True):
            group = group.sort_values("tokens")
            pixels = group["img_size"] ** 2
            time_exp, mem_exp = group["time_exponent"].iloc[0], group["memory_exponent"].iloc[0]
            label = f"{model}{' (' + str(group['dilations'].iloc[-1]) + ')' if model.startswith('dinat') else ''}"
            axes[0][i].plot(pixels, group["step_time"] / group["batch_size"], marker="o",
                            label=f"{label}: ×tokens^{time_exp:.2f}" if pd.notna(time_exp) else label)
            if "peak_mem_mb" in group and group["peak_mem_mb"].notna().any():
                axes[1][i].plot(pixels, group["peak_mem_mb"], marker="o",
                                label=f"{model}: ×tokens^{mem_exp:.2f}" if pd.notna(mem_exp) else model)
        for row, (what, unit) in enumerate((("time per image", "ms"), ("peak memory of a step", "MB"))):
            ax = axes[row][i]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("image pixels (side², proportional to every model's tokens)")
            ax.set_ylabel(f"{what} ({unit})")
            ax.set_title(f"{device} · {dtype} · {mode}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[1]:
                ax.legend(fontsize=7)
    fig.suptitle("dinat-timm: backbone cost as the image grows (slope = growth exponent; 1 linear, 2 quadratic)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, format="png")
    plt.close(fig)
    return out
