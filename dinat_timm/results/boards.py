"""Leaderboards from raw benchmark rows: merge, latest row per configuration, Δ vs the paper, plot."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Sequence

import pandas as pd

from .writer import read_csv, write_csv_atomic

PAPER = Path(__file__).with_name("paper.csv")

# What identifies a measurement (besides the model); environment columns are added when merging
# boards from several machines, so that their rows sit side by side rather than replace each other.
CONFIG_COLUMNS = [
    "suite", "model", "img_size", "infer_img_size", "infer_batch_size", "train_img_size", "train_batch_size",
    "batch", "mode", "stage", "map_size", "heads", "dilation", "rpb", "dtype", "channels_last", "compile", "backend",
    "dataset", "pretrained",
]
ENV_COLUMNS = ["device", "natten", "torch"]


def flagged(df: pd.DataFrame) -> pd.Series:
    """Which rows carry a ``flag`` (a reason to distrust them: ``noisy``, ``impossible``, ``suspect``)."""
    if df.empty or "flag" not in df:
        return pd.Series(False, index=df.index)
    return df["flag"].notna() & (df["flag"].astype(str).str.strip() != "")


def unflagged(df: pd.DataFrame) -> pd.DataFrame:
    """The rows boards rank and plot."""
    return df[~flagged(df)].reset_index(drop=True) if "flag" in df else df


def key_columns(df: pd.DataFrame, with_env: bool = True) -> List[str]:
    cols = [c for c in CONFIG_COLUMNS if c in df.columns]
    return cols + ([c for c in ENV_COLUMNS if c in df.columns] if with_env else [])


def latest(df: pd.DataFrame, with_env: bool = True, also: Sequence[str] = ()) -> pd.DataFrame:
    """The last row written for each configuration (a re-run supersedes, a failure included),
    told apart also by the columns ``also`` names that ``df`` has."""
    if df.empty:
        return df
    keys = key_columns(df, with_env)
    keys += [c for c in also if c in df.columns and c not in keys]
    return df.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)


def merge(paths: Iterable, out=None) -> pd.DataFrame:
    """Concatenate CSVs from several machines / NATTEN versions into one board."""
    frames = [read_csv(p) for p in paths]
    frames = [f for f in frames if not f.empty]
    table = latest(pd.concat(frames, ignore_index=True, sort=False)) if frames else pd.DataFrame()
    if out is not None:
        write_csv_atomic(table, out)
    return table


def paper_table() -> pd.DataFrame:
    return pd.read_csv(PAPER)


def accuracy_board(rows: pd.DataFrame) -> pd.DataFrame:
    """Measured top-1/top-5 beside the paper's, with Δ (measured − paper) for ImageNet rows."""
    if rows.empty:
        return rows
    board = latest(rows)
    paper = paper_table()[["model", "paper_top1", "paper_params_m", "paper_gflops"]]
    board = board.merge(paper, on="model", how="left")
    on_imagenet = board.get("dataset", pd.Series("", index=board.index)).astype(str) != "generated-tiny"
    board["top1_delta_vs_paper"] = (board["top1"] - board["paper_top1"]).where(on_imagenet).round(3)
    return board


def rank_within_device(board: pd.DataFrame) -> pd.DataFrame:
    """Speed ranks (1 = most images/s) among the ok rows of each device; a CPU and a GPU never
    share a ranking. Sorted by device, then by rank."""
    board = board.copy()
    ok = board["status"].fillna("ok").eq("ok") if "status" in board else pd.Series(True, index=board.index)
    device = board["device"].astype(str) if "device" in board else pd.Series("", index=board.index)
    for mode in ("infer", "train"):
        column = f"{mode}_samples_per_sec"
        if column in board:
            ranks = board[column].where(ok).groupby(device).rank(ascending=False, method="min")
            board[f"{mode}_rank_in_device"] = ranks.astype("Int64")
    order = [c for c in ("device", "infer_rank_in_device", "train_rank_in_device") if c in board]
    return board.sort_values(order, na_position="last", kind="stable").reset_index(drop=True)


def plot_name(accuracy: pd.DataFrame) -> str:
    has_top1 = not accuracy.empty and "top1_delta_vs_paper" in accuracy and accuracy["top1_delta_vs_paper"].notna().any()
    return "throughput_vs_top1.png" if has_top1 else "throughput_vs_params.png"


def plot(speed: pd.DataFrame, accuracy: pd.DataFrame, out) -> Path:
    """Inference images/s against ImageNet top-1 (where accuracy rows exist) or params, one panel per
    device (a CPU's and a GPU's images/s share no axis). Points are numbered; a table beside each
    panel names them, with backend, dtype, commit and date, so no label overlaps another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    speed = speed[speed["status"].fillna("ok") == "ok"] if "status" in speed else speed
    speed = speed.dropna(subset=["infer_samples_per_sec"]) if "infer_samples_per_sec" in speed else speed.iloc[0:0]
    y_col, y_label, what = "param_count", "params (M)", "size"
    if plot_name(accuracy) == "throughput_vs_top1.png":
        acc = accuracy[accuracy["top1_delta_vs_paper"].notna()][["model", "top1"]]
        speed = speed.merge(acc.drop_duplicates("model", keep="last"), on="model", how="inner")
        y_col, y_label, what = "top1", "ImageNet top-1 (%)", "ImageNet top-1"
    speed = speed.dropna(subset=[y_col]) if y_col in speed else speed.iloc[0:0]
    devices = sorted(set(map(str, speed["device"]))) if "device" in speed and not speed.empty else [""]
    tallest = max([1] + [int((speed["device"].astype(str) == d).sum()) for d in devices if d])
    fig, axes = plt.subplots(1, 2 * len(devices), figsize=(13 * len(devices), max(5.5, 0.22 * tallest + 1.5)),
                             squeeze=False, gridspec_kw=dict(width_ratios=[1.25, 1] * len(devices)))
    markers = dict(zip(["DiNAT / NAT", "DiNAT_s", "isotropic / ViT-rpb", "timm reference"], "oDs^"))
    for i, device in enumerate(devices):
        ax, table_ax = axes[0][2 * i], axes[0][2 * i + 1]
        rows = (speed[speed["device"].astype(str) == device] if device else speed)
        rows = rows.sort_values("infer_samples_per_sec", ascending=False).reset_index(drop=True)
        lines = []
        for number, row in enumerate(rows.itertuples(index=False), start=1):
            row = row._asdict()
            family = _family(row["model"])
            ax.scatter(row["infer_samples_per_sec"], row[y_col], marker=markers.get(family, "o"), s=36,
                       color=f"C{list(markers).index(family) if family in markers else 0}",
                       label=family if family not in ax.get_legend_handles_labels()[1] else None)
            ax.annotate(str(number), (row["infer_samples_per_sec"], row[y_col]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
            lines.append(f"{number:>2} {row['model']}  {_setting(row)}  {row['infer_samples_per_sec']:.4g}/s")
        ax.set_xscale("log")
        ax.legend(fontsize=8, loc="best")
        ax.set_xlabel("inference images/s")
        ax.set_ylabel(y_label)
        ax.set_title(device or "throughput", fontsize=10)
        ax.grid(True, alpha=0.3)
        table_ax.axis("off")
        table_ax.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=7,
                      transform=table_ax.transAxes)
    fig.suptitle(f"dinat-timm: inference throughput vs {what} (rows flagged noisy or impossible left out)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _setting(row) -> str:
    parts = [str(row.get("backend", ""))]
    for column, fmt in (("dtype", "{}"), ("infer_batch_size", "b{:g}")):
        value = row.get(column)
        if value is not None and not (isinstance(value, float) and pd.isna(value)):
            parts.append(fmt.format(value))
    if row.get("compile") in (1, "1", True):
        parts.append("compiled")
    commit, stamp = row.get("git_commit"), str(row.get("timestamp", ""))[:10]
    if commit is not None and not (isinstance(commit, float) and pd.isna(commit)):
        parts.append(f"@{commit}")
    if stamp and stamp != "nan":
        parts.append(stamp)
    return " ".join(parts)


def _family(model: str) -> str:
    if model.startswith("dinat_s_"):
        return "DiNAT_s"
    if "isotropic" in model or model.startswith("vitrpb"):
        return "isotropic / ViT-rpb"
    if model.startswith(("dinat_", "nat_")):
        return "DiNAT / NAT"
    return "timm reference"


def raw_rows(results_dir, name: str) -> pd.DataFrame:
    """``name``'s rows in ``results_dir`` and in every run directory under it (``runs/*/``), oldest run first."""
    results_dir = Path(results_dir)
    paths = [results_dir / name] + sorted((results_dir / "runs").glob(f"*/{name}"))
    frames = [f for f in (read_csv(p) for p in paths) if not f.empty]
    return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()


def build_boards(results_dir, include_flagged: bool = False) -> dict:
    """Rewrite the leaderboards (and the plot) under ``results_dir`` from its raw CSVs and those of
    the run directories under it. Flagged rows stay in the raw CSVs but out of the boards, unless
    ``include_flagged``."""
    results_dir = Path(results_dir)
    written = {}
    keep = (lambda df: df) if include_flagged else unflagged
    speed = keep(raw_rows(results_dir, "throughput.csv"))
    memory = keep(raw_rows(results_dir, "memory.csv"))
    accuracy = keep(pd.concat(
        [raw_rows(results_dir, n) for n in ("accuracy_imagenet.csv", "accuracy_generated.csv")], ignore_index=True
    ))
    write_csv_atomic(paper_table(), results_dir / "paper.csv")
    written["paper"] = results_dir / "paper.csv"
    acc_board = accuracy_board(accuracy)
    if not acc_board.empty:
        write_csv_atomic(acc_board, results_dir / "leaderboard_accuracy.csv")
        written["accuracy"] = results_dir / "leaderboard_accuracy.csv"
    ops = keep(raw_rows(results_dir, "op_speed.csv"))
    if not ops.empty:
        write_csv_atomic(latest(ops), results_dir / "leaderboard_op_speed.csv")
        written["op_speed"] = results_dir / "leaderboard_op_speed.csv"
    if not speed.empty:
        speed_board = latest(speed)
        if not memory.empty:
            mem = latest(memory)
            pivot = mem.pivot_table(index=["model", "device"], columns="mode", values="peak_mem_mb", aggfunc="last")
            pivot.columns = [f"{c}_peak_mem_mb" for c in pivot.columns]
            speed_board = speed_board.merge(pivot.reset_index(), on=["model", "device"], how="left")
        speed_board = rank_within_device(speed_board)
        write_csv_atomic(speed_board, results_dir / "leaderboard_speed.csv")
        written["speed"] = results_dir / "leaderboard_speed.csv"
        name = plot_name(acc_board)
        stale = results_dir / ({"throughput_vs_top1.png", "throughput_vs_params.png"} - {name}).pop()
        if stale.exists():  # the plot changed what it shows: keep one file, named by its axes
            stale.unlink()
        written["plot"] = plot(speed_board, acc_board, results_dir / name)
    return written
