"""The tables every board, the markdown and ``compare`` read alike: which columns identify a
measurement, the latest row of each, which rows are flagged or exactly measured, the paper's numbers,
and what kind of accuracy a row is. The modules above it (``boards``, ``leaderboard_md``, ``scaling``,
``compare``) import from here; it imports none of them."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import pandas as pd

from .validate import EXACT_MEMORY_METHODS

PAPER = Path(__file__).with_name("paper.csv")

# What identifies a measurement (besides the model); environment columns are added when merging
# boards from several machines, so that their rows sit side by side rather than replace each other.
CONFIG_COLUMNS = [
    "suite", "model", "img_size", "infer_img_size", "infer_batch_size", "train_img_size", "train_batch_size",
    "batch", "batch_size", "mode", "stage", "map_size", "heads", "dilation", "rpb", "dtype", "channels_last", "compile",
    "backend",
    "dataset", "eval_set", "pretrained",
]
ENV_COLUMNS = ["device", "natten", "torch"]


def flagged(df: pd.DataFrame) -> pd.Series:
    """Which rows carry a ``flag`` (a reason to distrust them: ``noisy``, ``impossible``, ``suspect``)."""
    if df.empty or "flag" not in df:
        return pd.Series(False, index=df.index)
    return df["flag"].notna() & (df["flag"].astype(str).str.strip() != "")


def exactly_measured_memory(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``peak_mem_mb`` emptied where its ``method`` is not an exact one (rows that read the
    kernel's resident set, or say nothing of how): boards neither show nor fit those figures."""
    if df.empty or "peak_mem_mb" not in df:
        return df
    exact = df["method"].isin(EXACT_MEMORY_METHODS) if "method" in df else pd.Series(False, index=df.index)
    return df.assign(peak_mem_mb=df["peak_mem_mb"].where(exact))


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


def paper_table() -> pd.DataFrame:
    return pd.read_csv(PAPER)


GENERATED = "generated-tiny"  # the accuracy suite's dataset tag for its generated image set
REFERENCE = "swin_tiny_patch4_window7_224"  # speeds are read as ratios to it, measured in the same run
ACCURACY_KINDS = {
    "imagenet": "ImageNet top-1 of the published weights",
    "generated": "pipeline check: random weights on generated images, not accuracy",
    "random": "random weights on a real data set: not comparable to the paper",
}


def accuracy_kind(rows: pd.DataFrame) -> pd.Series:
    """Which rows are real accuracy (published weights on a real data set) and which are not."""
    dataset = rows["dataset"].astype(str) if "dataset" in rows else pd.Series("", index=rows.index)
    pretrained = pd.to_numeric(rows["pretrained"], errors="coerce").fillna(0) if "pretrained" in rows else 0
    kind = pd.Series("random", index=rows.index)
    kind[dataset == GENERATED] = "generated"
    kind[(dataset != GENERATED) & (pretrained == 1)] = "imagenet"
    return kind
