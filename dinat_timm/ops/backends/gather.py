"""The reference backend: gather each query's k×k neighbors and attend to them.

Slow and memory hungry (every query copies k² keys and values) but short enough to check by
eye; the tests hold every other backend to it. Exact on any device, differentiable through autograd.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..geometry import neighborhood_1d

NAME = "gather"
COMPILES = True


def available() -> Optional[str]:
    return None


def supports(query: torch.Tensor, rpb: Optional[torch.Tensor], needs_grad: bool) -> Optional[str]:
    return None


def neighborhood_attention(query, key, value, kernel_size, dilation, rpb, scale):
    height, width = int(query.shape[2]), int(query.shape[3])  # specialised under dynamic compile
    rows, bias_rows = neighborhood_1d(height, kernel_size, dilation, query.device)
    cols, bias_cols = neighborhood_1d(width, kernel_size, dilation, query.device)
    rows, cols = rows[:, None, :, None], cols[None, :, None, :]  # -> [H, W, k, k]
    keys = key[:, :, rows, cols]  # [B, heads, H, W, k, k, D]
    values = value[:, :, rows, cols]
    attn = torch.einsum("bnhwd,bnhwijd->bnhwij", query * scale, keys)
    if rpb is not None:
        attn = attn + rpb[:, bias_rows[:, None, :, None], bias_cols[None, :, None, :]].to(attn.dtype)
    attn = attn.flatten(-2).softmax(dim=-1).view_as(attn)
    return torch.einsum("bnhwij,bnhwijd->bnhwd", attn, values)
