"""The tables every board, the markdown and ``compare`` read alike: which columns identify a
measurement, the latest row of each, which rows are flagged or exactly measured, the paper's numbers,
and what kind of accuracy a row is. The modules above it (``boards``, ``leaderboard_md``, ``scaling``,
``compare``) import from here; it imports none of them."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import pandas as pd

from . import schema
from .validate import EXACT_MEMORY_METHODS

PAPER = Path(__file__).with_name("paper.csv")

def join_flags(*flags: str) -> str:
    """Several reasons as one ``flag`` cell, each once, in order."""
    return "; ".join(dict.fromkeys(f for f in flags if isinstance(f, str) and f.strip()))


def run_of(df: pd.DataFrame) -> pd.Series:
    """Which run each row came from: its ``run_id``, or for older rows its commit and day."""
    commit = df["git_commit"].astype(str) if "git_commit" in df else pd.Series("", index=df.index)
    day = df["timestamp"].astype(str).str[:10] if "timestamp" in df else pd.Series("", index=df.index)
    run = commit + "@" + day
    if "run_id" in df:
        run = df["run_id"].where(df["run_id"].notna(), run).astype(str)
    return run


def impossible_flag(train: float, infer: float) -> str:
    """A training step (forward, backward and update) cannot outrun inference of the same configuration."""
    return f"impossible: training step {train:.3g} img/s faster than inference {infer:.3g} img/s" if train > infer else ""


def impossible_flags(df: pd.DataFrame) -> pd.Series:
    """``impossible: …`` on both rows of a throughput configuration whose training step outran its
    inference in the same run and machine; empty elsewhere. Derived where rows are read, so that each row
    is written once and no later row has to edit an earlier one."""
    out = pd.Series("", index=df.index, dtype=object)
    speeds = ("infer_samples_per_sec", "train_samples_per_sec")
    if df.empty or not set(speeds) <= set(df.columns):
        return out
    ok = df["status"].fillna("ok").eq("ok") if "status" in df else pd.Series(True, index=df.index)
    keys = [c for c in schema.pair_keys("throughput") + schema.MACHINE_KEYS if c in df]
    sides = []
    for mode in ("infer", "train"):
        rows = df[ok & df[f"{mode}_samples_per_sec"].notna()]
        sides.append(pd.DataFrame({
            **{k: rows[k] for k in keys}, "__run": run_of(rows),
            "__batch": rows.get(f"{mode}_batch_size"), "__size": rows.get(f"{mode}_img_size"),
            f"{mode}_speed": rows[f"{mode}_samples_per_sec"], f"{mode}_row": rows.index}))
    pairs = sides[0].merge(sides[1], on=keys + ["__run", "__batch", "__size"])
    for pair in pairs[pairs["train_speed"] > pairs["infer_speed"]].to_dict("records"):
        text = impossible_flag(pair["train_speed"], pair["infer_speed"])
        for row in (pair["infer_row"], pair["train_row"]):
            out[row] = join_flags(out[row], text)
    return out


def flags(df: pd.DataFrame) -> pd.Series:
    """Every reason to distrust each row: its own ``flag`` (``noisy``, ``suspect``, ``incomplete``) and those
    derived from other rows (``impossible``)."""
    own = df["flag"] if "flag" in df else pd.Series("", index=df.index, dtype=object)
    derived = impossible_flags(df)
    return pd.Series([join_flags(a, b) for a, b in zip(own, derived)], index=df.index, dtype=object)


def flagged(df: pd.DataFrame) -> pd.Series:
    """Which rows carry a reason to distrust them (``flags``)."""
    if df.empty:
        return pd.Series(False, index=df.index)
    return flags(df) != ""


def exactly_measured_memory(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``peak_mem_mb`` emptied where its ``method`` is not an exact one (rows that read the
    kernel's resident set, or say nothing of how): boards neither show nor fit those figures."""
    if df.empty or "peak_mem_mb" not in df:
        return df
    exact = df["method"].isin(EXACT_MEMORY_METHODS) if "method" in df else pd.Series(False, index=df.index)
    return df.assign(peak_mem_mb=df["peak_mem_mb"].where(exact))


def unflagged(df: pd.DataFrame) -> pd.DataFrame:
    """The rows boards rank and plot."""
    return df[~flagged(df)].reset_index(drop=True)


def key_columns(df: pd.DataFrame, with_env: bool = True) -> List[str]:
    """What identifies a measurement in ``df`` (``schema.CONFIG_KEYS``), and with ``with_env`` the machine's
    columns too: boards merged from several machines keep their rows side by side."""
    cols = [c for c in schema.CONFIG_KEYS if c in df.columns]
    return cols + ([c for c in schema.MACHINE_KEYS if c in df.columns] if with_env else [])


def latest(df: pd.DataFrame, with_env: bool = True, also: Sequence[str] = ()) -> pd.DataFrame:
    """The last row written for each configuration (a re-run supersedes, a failure included),
    told apart also by the columns ``also`` names that ``df`` has."""
    if df.empty:
        return df
    keys = key_columns(df, with_env)
    keys += [c for c in also if c in df.columns and c not in keys]
    return df.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)


def paper_table() -> pd.DataFrame:
    return pd.read_csv(PAPER)


GENERATED = "generated-tiny"  # the accuracy suite's dataset tag for its generated image set
REFERENCE = "swin_tiny_patch4_window7_224"  # speeds are read as ratios to it, measured in the same run
ACCURACY_KINDS = {
    "imagenet": "ImageNet top-1 of the published weights",
    "generated": "pipeline check: random weights on generated images, not accuracy",
    "random": "random weights on a real data set: not comparable to the paper",
    "checkpoint": "top-1 of the checkpoint named in the row (not the published weights)",
}


def accuracy_kind(rows: pd.DataFrame) -> pd.Series:
    """Which rows are real accuracy (published weights on a real data set) and which are not (a checkpoint's,
    random weights, a pipeline check)."""
    dataset = rows["dataset"].astype(str) if "dataset" in rows else pd.Series("", index=rows.index)
    pretrained = pd.to_numeric(rows["pretrained"], errors="coerce").fillna(0) if "pretrained" in rows else 0
    checkpoint = (rows["checkpoint"].fillna("").astype(str) != "" if "checkpoint" in rows
                  else pd.Series(False, index=rows.index))
    kind = pd.Series("random", index=rows.index)
    kind[dataset == GENERATED] = "generated"
    kind[(dataset != GENERATED) & (pretrained == 1)] = "imagenet"
    kind[checkpoint] = "checkpoint"
    return kind
