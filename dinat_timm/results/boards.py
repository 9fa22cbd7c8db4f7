"""Leaderboards from raw benchmark rows: merge, latest row per configuration, Δ vs the paper, plot."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import pandas as pd

from .leaderboard_md import render as render_markdown
from .scaling import plot_scaling, scaling_board as fit_scaling
from .tables import (ACCURACY_KINDS, REFERENCE, accuracy_kind, exactly_measured_memory, latest, paper_table, run_of,
                     unflagged)
from .validate import load_checked
from .writer import replace_together, write_csv_atomic


class BoardsRefused(ValueError):
    """Input CSVs that cannot be merged or ranked; ``problems`` lists every reason (the CLI exits 2)."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def merge(paths: Iterable, out=None) -> Tuple[pd.DataFrame, int]:
    """Concatenate CSVs from several machines / NATTEN versions into one board (the latest row of
    each configuration per device, torch and NATTEN version); returns it and the rows read. Every
    input is checked first; the columns of header-only inputs are kept."""
    frames, problems = [], []
    for path in paths:
        frame, found = load_checked(path)
        frames.append(frame)
        problems += found
    if problems:
        raise BoardsRefused(problems)
    suites = sorted({str(x) for f in frames if "suite" in f for x in f["suite"].dropna()})
    if len(suites) > 1:
        raise BoardsRefused([f"the inputs hold rows of several suites {suites}: merge one suite's CSVs at a time"])
    columns = list(dict.fromkeys(c for f in frames for c in f.columns))
    rows = [f for f in frames if not f.empty]
    table = latest(pd.concat(rows, ignore_index=True, sort=False)) if rows else pd.DataFrame()
    table = table.reindex(columns=columns + [c for c in table.columns if c not in columns])
    if out is not None:
        write_csv_atomic(table, out)
    return table, sum(len(f) for f in frames)


def accuracy_board(rows: pd.DataFrame) -> pd.DataFrame:
    """Measured top-1/top-5, labelled by what they are; the paper's figures and Δ (measured − paper)
    only beside real accuracy (published weights on ImageNet), never beside a pipeline check."""
    if rows.empty:
        return rows
    board = latest(rows)
    kind = accuracy_kind(board)
    board = board.drop(columns="what", errors="ignore")  # derived again: older rows have none
    board.insert(0, "what", kind.map(ACCURACY_KINDS))
    paper = paper_table()[["model", "paper_top1", "paper_params_m", "paper_gflops"]]
    board = board.merge(paper, on="model", how="left")
    eval_set = board["eval_set"].fillna("").astype(str) if "eval_set" in board else pd.Series("", index=board.index)
    real = ((kind == "imagenet") & eval_set.isin(["", "imagenet"])).to_numpy()  # the paper's figure is ImageNet's
    for column in ("paper_top1", "paper_params_m", "paper_gflops"):
        board[column] = board[column].where(real)
    board["top1_delta_vs_paper"] = (board["top1"] - board["paper_top1"]).where(real).round(3)
    return board


def with_reference_ratios(rows: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """``infer_vs_reference`` / ``train_vs_reference``: images/s over the reference model's, measured in
    the same run on the same device with the same dtype, mode, batch and size (blank where the run
    has no such reference row)."""
    rows = rows.copy()
    rows["__run"] = run_of(rows)
    ok = rows["status"].fillna("ok").eq("ok") if "status" in rows else pd.Series(True, index=rows.index)
    for mode in ("infer", "train"):
        column = f"{mode}_samples_per_sec"
        if column not in rows:
            continue
        keys = [c for c in ("device", "dtype", "compile", "channels_last", f"{mode}_batch_size", f"{mode}_img_size", "__run")
                if c in rows]
        ref = rows[(rows["model"] == reference) & rows[column].notna() & ok][keys + [column]]
        ref = ref.drop_duplicates(keys, keep="last").rename(columns={column: "__ref"})
        merged = rows[keys + [column]].merge(ref, on=keys, how="left")
        rows[f"{mode}_vs_reference"] = (merged[column] / merged["__ref"]).round(3).to_numpy()
    return rows.drop(columns="__run")


def speed_board_of(throughput: pd.DataFrame, memory: pd.DataFrame) -> pd.DataFrame:
    """The latest row of each configuration, its speed as a ratio to Swin-T of the same run, the peak
    memory of that model on that device and dtype, and its rank within the device."""
    board = latest(with_reference_ratios(throughput))
    memory = exactly_measured_memory(memory)
    if not memory.empty and "peak_mem_mb" in memory and memory["peak_mem_mb"].notna().any():
        mem = latest(memory[memory["peak_mem_mb"].notna()])
        index = [c for c in ("model", "device", "dtype", "compile") if c in mem and c in board]
        pivot = mem.pivot_table(index=index, columns="mode", values=["peak_mem_mb", "batch"], aggfunc="last")
        pivot.columns = [f"{mode}_peak_mem_mb" if what == "peak_mem_mb" else f"{mode}_peak_mem_batch"
                         for what, mode in pivot.columns]
        board = board.merge(pivot.reset_index(), on=index, how="left")
    return rank_within_device(board)


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
    """Inference speed against ImageNet top-1 (where real accuracy rows exist) or params, one panel
    per device. Speed is the ratio to Swin-T measured in the same run (as in ``LEADERBOARD.md``);
    a panel with no such ratio shows images/s. Points are numbered; a table beside each panel names
    them, with backend, dtype, commit, date and images/s, so no label overlaps another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out = Path(out)
    speed = speed[speed["status"].fillna("ok") == "ok"] if "status" in speed else speed
    speed = speed.dropna(subset=["infer_samples_per_sec"]) if "infer_samples_per_sec" in speed else speed.iloc[0:0]
    if "infer_vs_reference" not in speed:
        speed = speed.assign(infer_vs_reference=float("nan"))
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
        ratios = rows["infer_vs_reference"].notna().any()
        x_col = "infer_vs_reference" if ratios else "infer_samples_per_sec"
        lines = []
        for number, row in enumerate(rows.itertuples(index=False), start=1):
            row = row._asdict()
            ratio = row["infer_vs_reference"]
            shown = f"  ×{ratio:.2f} Swin-T" if pd.notna(ratio) else ("  (no Swin-T in its run: not drawn)" if ratios else "")
            lines.append(f"{number:>2} {row['model']}  {_setting(row)}  {row['infer_samples_per_sec']:.4g}/s{shown}")
            if pd.isna(row[x_col]):
                continue
            family = _family(row["model"])
            ax.scatter(row[x_col], row[y_col], marker=markers.get(family, "o"), s=36,
                       color=f"C{list(markers).index(family) if family in markers else 0}",
                       label=family if family not in ax.get_legend_handles_labels()[1] else None)
            ax.annotate(str(number), (row[x_col], row[y_col]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))  # 0.5, 1, 2: not 5×10⁻¹
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=8, loc="best")
        if ratios:
            ax.axvline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel("inference images/s ÷ Swin-T's in the same run" if ratios else "inference images/s")
        ax.set_ylabel(y_label)
        ax.set_title(device or "throughput", fontsize=10)
        ax.grid(True, alpha=0.3)
        table_ax.axis("off")
        table_ax.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=7,
                      transform=table_ax.transAxes)
    fig.suptitle(f"dinat-timm: inference speed (relative to Swin-T) vs {what} (rows flagged noisy or impossible left out)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, format="png")
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


RAW_CSVS = ("throughput.csv", "memory.csv", "accuracy_imagenet.csv", "accuracy_generated.csv", "op_speed.csv",
            "scaling.csv")


def raw_paths(results_dir, name: str) -> List[Path]:
    """``name`` in ``results_dir`` and in every run directory under it (``runs/*/``), oldest run first."""
    results_dir = Path(results_dir)
    return [p for p in [results_dir / name] + sorted((results_dir / "runs").glob(f"*/{name}")) if p.exists()]


def read_raw(results_dir) -> Tuple[Dict[str, pd.DataFrame], List[str]]:
    """Every raw CSV's rows under ``results_dir`` (by file name), and every problem found in them."""
    tables, problems = {}, []
    for name in RAW_CSVS:
        frames = []
        for path in raw_paths(results_dir, name):
            frame, found = load_checked(path)
            problems += found
            if not frame.empty:
                frames.append(frame)
        tables[name] = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
    return tables, problems


def accuracy_rows(tables: Dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The accuracy rows of ``read_raw``'s tables, real data sets' and generated ones' together."""
    return pd.concat([tables["accuracy_imagenet.csv"], tables["accuracy_generated.csv"]], ignore_index=True)


def build_boards(results_dir, include_flagged: bool = False) -> dict:
    """Rebuild the leaderboards, ``LEADERBOARD.md`` and the plot under ``results_dir`` from its raw CSVs
    and those of the run directories under it, all together or not at all: every raw CSV is checked
    first (``BoardsRefused`` lists every problem, and nothing is written), then every output is
    written to a temporary file, and only then are they renamed into place. Flagged rows stay in the
    raw CSVs but out of the boards, unless ``include_flagged``."""
    results_dir = Path(results_dir)
    tables, problems = read_raw(results_dir)
    if not problems and all(table.empty for table in tables.values()):
        raise BoardsRefused([f"{results_dir} holds no results rows (none of {', '.join(RAW_CSVS)} here or in "
                             "runs/*/ has a row): nothing to build boards from, nothing written"])
    if problems:
        raise BoardsRefused(problems)
    keep = (lambda df: df) if include_flagged else unflagged
    tables = {name: keep(df) for name, df in tables.items()}
    accuracy = accuracy_rows(tables)
    outputs = {results_dir / "paper.csv": paper_table()}
    acc_board = accuracy_board(accuracy)
    if not acc_board.empty:
        outputs[results_dir / "leaderboard_accuracy.csv"] = acc_board
    op_board = pd.DataFrame()
    if not tables["op_speed.csv"].empty:
        op_board = latest(tables["op_speed.csv"])
        outputs[results_dir / "leaderboard_op_speed.csv"] = op_board
    speed_board = pd.DataFrame()
    if not tables["throughput.csv"].empty:
        speed_board = speed_board_of(tables["throughput.csv"], tables["memory.csv"])
        outputs[results_dir / "leaderboard_speed.csv"] = speed_board
    scaling_board = pd.DataFrame()
    if not tables["scaling.csv"].empty:
        scaling_board = fit_scaling(tables["scaling.csv"])
        outputs[results_dir / "leaderboard_scaling.csv"] = scaling_board
        outputs[results_dir / "scaling.png"] = lambda tmp: plot_scaling(scaling_board, tmp)
    if not (speed_board.empty and acc_board.empty and scaling_board.empty and op_board.empty):
        markdown = render_markdown(speed_board, acc_board, scaling_board, op_board)
        outputs[results_dir / "LEADERBOARD.md"] = lambda tmp: Path(tmp).write_text(markdown, encoding="utf-8")
    stale = []
    if not speed_board.empty:
        name = plot_name(acc_board)
        outputs[results_dir / name] = lambda tmp: plot(speed_board, acc_board, tmp)
        # the plot changed what it shows: keep one file, named by its axes
        stale = [results_dir / n for n in ("throughput_vs_top1.png", "throughput_vs_params.png") if n != name]
    replace_together(outputs)
    for path in stale:
        if path.exists():
            path.unlink()
    names = {"paper.csv": "paper", "leaderboard_accuracy.csv": "accuracy", "leaderboard_op_speed.csv": "op_speed",
             "leaderboard_speed.csv": "speed", "leaderboard_scaling.csv": "scaling", "scaling.png": "scaling_plot",
             "LEADERBOARD.md": "markdown"}
    return {names.get(path.name, "plot"): path for path in outputs}
