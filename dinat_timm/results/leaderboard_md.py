"""``LEADERBOARD.md``: the boards as a person reads them.

One table per device × dtype × eager/compiled, each model on one line with its inference and
training speed beside Swin-T's measured in the same run; top-1 only where the published weights met
a real data set; the scaling suite's growth exponents. Written by ``boards`` from the same tables as
the CSV boards, so the two never disagree.
"""
from __future__ import annotations

from typing import List

import pandas as pd

from .tables import ACCURACY_KINDS, REFERENCE, accuracy_kind

_HEADER = """# dinat-timm leaderboard

Built by `python -m dinat_timm.results boards` from the raw CSVs beside it (rows flagged noisy, impossible or
suspect are left out); do not edit by hand. Speeds are images/s; **×Swin-T** is that speed over the speed of
Swin-T (`{reference}`) measured in the same run, on the same device, dtype, batch and image size
(above 1: faster than Swin-T). Peak memory is what one step needs beyond the weights (and, for training, the
optimizer state): the bytes of tensors alive at the step's peak beyond those alive before it, from the CPU
allocator's events or the CUDA allocator's counters (earlier CPU rows, which read the resident set, show none).
"""


def _speed(value) -> str:
    """Images/s with the digits that matter and no exponent: 11310, 932.2, 4.775."""
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.0f}" if value >= 1000 else f"{value:.4g}"


def _cell(value, fmt: str = "{:.4g}") -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _group_title(device, dtype, compiled) -> str:
    return f"{device} · {dtype} · {'compiled' if compiled in (1, '1', True) else 'eager'}"


def _by_model(group: pd.DataFrame) -> pd.DataFrame:
    """One line per model and backend: the inference row's figures beside the training row's."""
    keys = [c for c in ("model", "backend", "channels_last", "pretrained") if c in group]
    lines = []
    for _, rows in group.groupby(keys, dropna=False, sort=False):
        line = rows.iloc[-1].to_dict()
        for mode in ("infer", "train"):
            have = rows[rows[f"{mode}_samples_per_sec"].notna()] if f"{mode}_samples_per_sec" in rows else rows.iloc[0:0]
            for column in (f"{mode}_samples_per_sec", f"{mode}_vs_reference", f"{mode}_batch_size"):
                line[column] = have.iloc[-1][column] if len(have) and column in have else None
        lines.append(line)
    return pd.DataFrame(lines)


def speed_section(board: pd.DataFrame) -> str:
    if board.empty:
        return "## Speed\n\nNo throughput rows yet: `pytest benchmarks --benchmark-only` measures them.\n"
    board = board[board["status"].fillna("ok") == "ok"] if "status" in board else board
    parts = ["## Speed"]
    group_keys = [c for c in ("device", "dtype", "compile") if c in board]
    for key, group in board.groupby(group_keys, dropna=False, sort=True):
        device, dtype, compiled = (list(key) + [None] * 3)[:3]
        lines = _by_model(group)
        lines["__ref_first"] = lines["model"] != REFERENCE
        lines = lines.sort_values(["__ref_first", "infer_samples_per_sec"], ascending=[True, False], na_position="last")
        rows = []
        for line in lines.to_dict("records"):
            memory = []
            for mode in ("infer", "train"):
                mb = line.get(f"{mode}_peak_mem_mb")
                if mb is not None and pd.notna(mb):
                    batch = line.get(f"{mode}_peak_mem_batch")
                    memory.append(f"{mode} {mb:.0f}" + (f" (b{batch:g})" if batch is not None and pd.notna(batch) else ""))
            batch = line.get("infer_batch_size") if pd.notna(line.get("infer_batch_size")) else line.get("train_batch_size")
            rows.append([
                f"**{line['model']}**" if line["model"] == REFERENCE else line["model"],
                _cell(line.get("backend"), "{}"), _cell(line.get("param_count"), "{:.1f}"), _cell(line.get("gmacs"), "{:.2f}"),
                _cell(batch, "{:g}"),
                _speed(line.get("infer_samples_per_sec")), _cell(line.get("infer_vs_reference"), "×{:.2f}"),
                _speed(line.get("train_samples_per_sec")), _cell(line.get("train_vs_reference"), "×{:.2f}"),
                ", ".join(memory) or "–",
            ])
        header = ["model", "attention", "params (M)", "GMACs", "batch", "inference img/s", "×Swin-T",
                  "training img/s", "×Swin-T", "peak memory MB"]
        commits = sorted({str(c) for c in group.get("git_commit", pd.Series(dtype=str)).dropna() if str(c)})
        software = sorted({f"torch {t}" for t in group.get("torch", pd.Series(dtype=str)).dropna()})
        note = ", ".join(software + ([f"commits {', '.join(commits)}"] if commits else []))
        parts.append(f"### {_group_title(device, dtype, compiled)}\n\n{_table(header, rows)}\n\n{note}")
    return "\n\n".join(parts) + "\n"


def _machine(row) -> str:
    """A column of the matrix: the device, and the environment the row was measured in (its NATTEN version where
    no matrix environment is named)."""
    named = row.get("environment")
    where = named if isinstance(named, str) and named else f"NATTEN {row.get('natten')}"
    return f"{row.get('device')} · {where}"


def matrix_section(board: pd.DataFrame) -> str:
    """Where rows of several machines or environments (``bench.matrix``) sit side by side: one line per model,
    dtype and mode, a column per machine and environment (images/s)."""
    if board.empty:
        return ""
    board = board[board["status"].fillna("ok") == "ok"] if "status" in board else board
    lines = []
    for row in board.to_dict("records"):
        for mode in ("infer", "train"):
            value = row.get(f"{mode}_samples_per_sec")
            if value is not None and pd.notna(value):
                lines.append(dict(model=row["model"], dtype=row.get("dtype"), mode=mode, where=_machine(row),
                                  value=value))
    table = pd.DataFrame(lines)
    if table.empty or table["where"].nunique() < 2:
        return ""
    wide = table.pivot_table(index=["model", "dtype", "mode"], columns="where", values="value", aggfunc="last")
    header = ["model", "dtype", "mode"] + [str(c) for c in wide.columns]
    rows = [[str(m), str(d), "inference" if mode == "infer" else "training"] + [_speed(v) for v in values]
            for (m, d, mode), values in zip(wide.index, wide.to_numpy())]
    return ("## Across machines and environments\n\nImages/s of each model on every machine and environment measured "
            "(a matrix run: `python -m dinat_timm.bench.matrix`, docs/cluster.md).\n\n" + _table(header, rows) + "\n")


def accuracy_section(board: pd.DataFrame) -> str:
    parts = ["## Accuracy: ImageNet and timm's evaluation sets"]
    if board.empty:
        return parts[0] + "\n\nNo accuracy rows yet.\n"
    kind = accuracy_kind(board)
    real = board[kind == "imagenet"]
    if real.empty:
        parts.append("No measurement of the published weights on ImageNet yet: run `pytest benchmarks/test_accuracy.py "
                     "--benchmark-only --data-dir /path/to/imagenet --pretrained 1` where the weights are cached.")
    else:
        parts.append(_sets_table(real))
    others = board[kind != "imagenet"]
    if not others.empty:
        counts = accuracy_kind(others).map(ACCURACY_KINDS).value_counts()
        parts.append("Not accuracy, and never read against the paper: "
                     + "; ".join(f"{n} row(s): {what}" for what, n in counts.items())
                     + " (`leaderboard_accuracy.csv`).")
    return "\n\n".join(parts) + "\n"


_SET_TITLES = {"imagenet": "ImageNet", "imagenet-real": "ReaL", "imagenetv2-matched-frequency": "V2 (matched)",
               "sketch": "Sketch", "imagenet-a": "A", "imagenet-a-clean": "A-clean", "imagenet-r": "R",
               "imagenet-r-clean": "R-clean"}


def _sets_table(real: pd.DataFrame) -> str:
    """One line per model and device: top-1 on each evaluation set that has a row (timm's sets), the paper's
    top-1 and Δ beside ImageNet's."""
    real = real.assign(eval_set=real["eval_set"].fillna("").replace("", "imagenet") if "eval_set" in real else "imagenet",
                       device=real["device"].fillna("") if "device" in real else "")
    sets = [s for s in _SET_TITLES if s in set(real["eval_set"])]
    rows = []
    for (model, device), group in real.groupby(["model", "device"], sort=True, dropna=False):
        by_set = {r["eval_set"]: r for r in group.to_dict("records")}
        base = by_set.get("imagenet", {})
        line = [model]
        for s in sets:
            line.append(_cell(by_set[s]["top1"], "{:.2f}") if s in by_set else "–")
            if s == "imagenet":
                line += [_cell(base.get("paper_top1"), "{:.1f}"), _cell(base.get("top1_delta_vs_paper"), "{:+.2f}")]
        rows.append(line + [_cell(device, "{}")])
    header = ["model"]
    for s in sets:
        header += [f"{_SET_TITLES[s]} top-1"] + (["paper", "Δ"] if s == "imagenet" else [])
    return _table(header + ["device"], rows) + ("\n\ntimm's results files of these rows: `python -m dinat_timm.results "
                                                "timm-results RESULTS_DIR -o OUT_DIR`.")


def scaling_section(board: pd.DataFrame) -> str:
    if board.empty:
        return ""
    keys = [c for c in ("device", "dtype", "mode") if c in board]
    parts = ["## Cost as the image grows (backbone)",
             "Time per image and peak memory of a `features_only` backbone against its number of tokens; the exponent "
             "is the slope of a log-log fit (1: linear, 2: quadratic). `scaling.png` draws them. Over small sizes "
             "(a CPU's 224–448 px at batch 1) fixed per-layer costs weigh more and flatten every slope: read those "
             "as a comparison between models, and GPU rows up to 1024 px for growth."]
    for key, group in board.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        title = " · ".join(str(k) for k in key)
        fits = group.drop_duplicates("model", keep="last")
        rows = [[r["model"], _cell(r.get("dilations"), "{}"), _cell(r.get("sizes"), "{}"),
                 _cell(r.get("time_exponent"), "{:.2f}"), _cell(r.get("memory_exponent"), "{:.2f}")]
                for r in fits.to_dict("records")]
        parts.append(f"### {title}\n\n" + _table(["model", "dilations", "sizes (px)", "time exponent",
                                                 "memory exponent"], rows))
    return "\n\n".join(parts) + "\n"


def op_section(board: pd.DataFrame) -> str:
    """The operator at each stage shape: each backend's time over Swin-style window attention on the same
    tokens (below 1: faster), forward and forward+backward side by side."""
    if board.empty or "ratio_vs_windowed" not in board:
        return ""
    board = board[board["status"].fillna("ok") == "ok"] if "status" in board else board
    board = board[board["backend"].astype(str) != "windowed_sdpa"]  # the yardstick itself
    parts = ["## The operator",
             "Each backend's time over Swin-style 7×7 window attention on the same tokens, timed round by round beside "
             "it (below 1: faster than window attention), at DiNAT-T's stage shapes (`leaderboard_op_speed.csv`)."]
    keys = [c for c in ("device", "dtype") if c in board]
    for key, group in board.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        shape = ["map_size", "dilation", "backend"]
        rows = []
        for (size, dilation, backend), lines in group.groupby(shape, dropna=False, sort=True):
            by_mode = {str(r["mode"]): r.get("ratio_vs_windowed") for r in lines.to_dict("records")}
            rows.append([f"{size:g}²", f"{dilation:g}", str(backend), _cell(by_mode.get("fwd"), "{:.2f}"),
                         _cell(by_mode.get("fwd_bwd"), "{:.2f}")])
        parts.append(f"### {' · '.join(str(k) for k in key)}\n\n"
                     + _table(["map", "dilation", "backend", "forward ×window", "forward+backward ×window"], rows))
    return "\n\n".join(parts) + "\n"


def render(speed_board: pd.DataFrame, accuracy_board: pd.DataFrame, scaling_board: pd.DataFrame,
           op_board: pd.DataFrame = None) -> str:
    sections = [_HEADER.format(reference=REFERENCE), speed_section(speed_board), matrix_section(speed_board),
                accuracy_section(accuracy_board)]
    sections.append(scaling_section(scaling_board))
    sections.append(op_section(op_board if op_board is not None else pd.DataFrame()))
    return "\n".join(s for s in sections if s)
