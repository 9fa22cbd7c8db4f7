"""Leaderboards from raw benchmark rows: merge, latest row per configuration, Δ vs the paper, plot."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List

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


def unflagged(df: pd.DataFrame) -> pd.DataFrame:
    """Rows without a ``flag`` (a reason to distrust them, e.g. ``noisy``): what boards rank and plot."""
    if df.empty or "flag" not in df:
        return df
    return df[df["flag"].isna() | (df["flag"].astype(str).str.strip() == "")].reset_index(drop=True)


def key_columns(df: pd.DataFrame, with_env: bool = True) -> List[str]:
    cols = [c for c in CONFIG_COLUMNS if c in df.columns]
    return cols + ([c for c in ENV_COLUMNS if c in df.columns] if with_env else [])


def latest(df: pd.DataFrame, with_env: bool = True) -> pd.DataFrame:
    """The last row written for each configuration (a re-run supersedes, a failure included)."""
    if df.empty:
        return df
    keys = key_columns(df, with_env)
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


def plot(speed: pd.DataFrame, accuracy: pd.DataFrame, out) -> Path:
    """Inference throughput against top-1 (ImageNet rows) or, where no accuracy is known, params:
    one panel per device, since images/s of a CPU and a GPU do not share an axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    speed = speed[speed["status"].fillna("ok") == "ok"] if "status" in speed else speed
    speed = speed.dropna(subset=["infer_samples_per_sec"]) if "infer_samples_per_sec" in speed else speed.iloc[0:0]
    y_col, y_label = "param_count", "params (M)"
    if not accuracy.empty and "top1_delta_vs_paper" in accuracy and accuracy["top1_delta_vs_paper"].notna().any():
        acc = accuracy[accuracy["top1_delta_vs_paper"].notna()][["model", "top1"]]
        speed = speed.merge(acc.drop_duplicates("model", keep="last"), on="model", how="inner")
        y_col, y_label = "top1", "ImageNet top-1 (%)"
    speed = speed.dropna(subset=[y_col]) if y_col in speed else speed.iloc[0:0]
    devices = sorted(set(map(str, speed["device"]))) if "device" in speed and not speed.empty else [""]
    fig, axes = plt.subplots(1, len(devices), figsize=(8 * len(devices), 6), squeeze=False)
    for ax, device in zip(axes[0], devices):
        rows = speed[speed["device"].astype(str) == device] if device else speed
        for family, group in rows.groupby(rows["model"].map(_family)):
            ax.scatter(group["infer_samples_per_sec"], group[y_col], label=family, s=30)
            for i, (_, row) in enumerate(group.iterrows()):
                name = row["model"] if str(row.get("backend", "")).startswith(("auto", "timm")) else f"{row['model']} [{row['backend']}]"
                if rows["dtype"].nunique() > 1 if "dtype" in rows else False:
                    name += f" {row['dtype']}"
                if row.get("compile", 0) in (1, "1", True):
                    name += " (compiled)"
                ax.annotate(name, (row["infer_samples_per_sec"], row[y_col]), fontsize=6,
                            xytext=(4, 4 if i % 2 else -8), textcoords="offset points")
        ax.set_xscale("log")
        ax.legend(fontsize=8)
        ax.set_xlabel("inference images/s")
        ax.set_ylabel(y_label)
        ax.set_title(device or "throughput", fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.suptitle("dinat-timm: throughput vs " + ("accuracy" if y_col == "top1" else "size"))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _family(model: str) -> str:
    if model.startswith("dinat_s_"):
        return "DiNAT_s"
    if "isotropic" in model or model.startswith("vitrpb"):
        return "isotropic / ViT-rpb"
    if model.startswith(("dinat_", "nat_")):
        return "DiNAT / NAT"
    return "timm reference"


def build_boards(results_dir, include_flagged: bool = False) -> dict:
    """Rewrite the leaderboards (and the plot) under ``results_dir`` from its raw CSVs. Flagged
    rows stay in the raw CSVs but out of the boards, unless ``include_flagged``."""
    results_dir = Path(results_dir)
    written = {}
    keep = (lambda df: df) if include_flagged else unflagged
    speed = keep(read_csv(results_dir / "throughput.csv"))
    memory = keep(read_csv(results_dir / "memory.csv"))
    accuracy = pd.concat(
        [read_csv(results_dir / n) for n in ("accuracy_imagenet.csv", "accuracy_generated.csv")], ignore_index=True
    )
    write_csv_atomic(paper_table(), results_dir / "paper.csv")
    written["paper"] = results_dir / "paper.csv"
    acc_board = accuracy_board(accuracy)
    if not acc_board.empty:
        write_csv_atomic(acc_board, results_dir / "leaderboard_accuracy.csv")
        written["accuracy"] = results_dir / "leaderboard_accuracy.csv"
    ops = keep(read_csv(results_dir / "op_speed.csv"))
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
        written["plot"] = plot(speed_board, acc_board, results_dir / "throughput_vs_top1.png")
    return written
