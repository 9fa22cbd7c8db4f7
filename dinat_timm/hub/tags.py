"""The pretrained tags this version registers, and where each one's published weights come from."""
from __future__ import annotations

from typing import List

import pandas as pd
import timm


class HubError(RuntimeError):
    """A Hub export or push that cannot be done as asked; the message says why (the CLI exits 2)."""


def pretrained_tags() -> List[str]:
    """Every pretrained tag this version registers (``dinat_tiny.in1k`` …)."""
    from ..bench.steps import is_dinat_model

    return sorted(t for t in timm.list_pretrained() if is_dinat_model(t.split(".")[0]))


def tag_table() -> pd.DataFrame:
    """One row per tag: its architecture, where its published weights come from and in which format,
    its classes and input size, the paper's top-1 and the license."""
    from ..results.tables import paper_table

    paper = paper_table().set_index("model")
    rows = []
    for tag in pretrained_tags():
        arch = tag.split(".")[0]
        cfg = timm.models.get_pretrained_cfg(tag)
        top1 = paper["paper_top1"].get(arch) if cfg.num_classes == 1000 else None
        rows.append(dict(tag=tag, architecture=arch, hf_hub_id=cfg.hf_hub_id or "", url=cfg.url or "",
                         weights_format="transformers" if cfg.hf_hub_id else "original .pth",
                         num_classes=cfg.num_classes, input_size=cfg.input_size[-1], paper_top1=top1,
                         license=cfg.license or ""))
    return pd.DataFrame(rows)


def split_tag(tag: str):
    """(architecture, pretrained cfg) of a registered tag; an unknown one is refused, naming its siblings."""
    if tag not in pretrained_tags():
        close = [t for t in pretrained_tags() if t.split(".")[0] == tag.split(".")[0]]
        raise HubError(f"unknown pretrained tag {tag!r}" + (f"; this architecture has {close}" if close else
                       "; python -m dinat_timm.hub tags lists them"))
    return tag.split(".")[0], timm.models.get_pretrained_cfg(tag)
