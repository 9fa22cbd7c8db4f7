"""Neighborhood attention through ``torch.nn.attention.flex_attention``.

The clamped, dilated neighborhood is a ``mask_mod`` (turned into a block mask, so a compiled
kernel skips the tiles no query needs) and the relative position bias a ``score_mod``. Fused
and fast under ``torch.compile`` on GPU; in eager mode PyTorch runs an unfused reference that
materialises every score, and on CPU it has no backward at all.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._cache import cached_constant

NAME = "flex"
COMPILES = True  # torch.compile(fullgraph=True) traces it (the block mask is built in the graph)


def _flex():
    try:
        from torch.nn.attention import flex_attention as module
    except ImportError:  # torch < 2.5
        return None
    return module


def available() -> Optional[str]:
    if _flex() is None:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention (needs torch >= 2.5)"
    return None


def supports(query: torch.Tensor, rpb: Optional[torch.Tensor], needs_grad: bool) -> Optional[str]:
    if needs_grad and query.device.type == "cpu":
        return "flex_attention has no backward on CPU in PyTorch"
    return None


def _axis_terms(q_idx, kv_idx, length, kernel_size, dilation):
    """(inside the neighborhood along this axis, key minus query in sub-grid units)."""
    d = dilation
    sub = q_idx % d
    pos = q_idx // d
    sub_len = (length - sub + d - 1) // d
    start = torch.clamp(torch.minimum(pos - kernel_size // 2, sub_len - kernel_size), min=0)
    k_pos = kv_idx // d
    inside = (kv_idx % d == sub) & (k_pos >= start) & (k_pos < start + kernel_size)
    return inside, k_pos - pos


def _mask_mod(height, width, kernel_size, dilation):
    def mask_mod(b, h, q_idx, kv_idx):
        row_in, _ = _axis_terms(q_idx // width, kv_idx // width, height, kernel_size, dilation)
        col_in, _ = _axis_terms(q_idx % width, kv_idx % width, width, kernel_size, dilation)
        return row_in & col_in

    return mask_mod


def _build_block_mask(height, width, kernel_size, dilation, device):
    n = height * width
    return _flex().create_block_mask(
        _mask_mod(height, width, kernel_size, dilation), B=None, H=None, Q_LEN=n, KV_LEN=n, device=device
    )


# eager calls: cached, and built outside inference mode, like the other backends' layouts
_cached_block_mask = cached_constant(maxsize=64)(_build_block_mask)


def _block_mask(height, width, kernel_size, dilation, device):
    # Under torch.compile the mask is built inside the graph: dynamo cannot guard a BlockMask
    # returned as a constant (assume_constant_result), and create_block_mask traces fine
    if torch.compiler.is_compiling():
        return _build_block_mask(height, width, kernel_size, dilation, device)
    return _cached_block_mask(height, width, kernel_size, dilation, device)


def neighborhood_attention(query, key, value, kernel_size, dilation, rpb, scale):
    batch, heads, height, width, dim = query.shape
    height, width = int(height), int(width)  # the mask is a function of the map size: specialise it
    flex = _flex()
    span = 2 * kernel_size - 1
    score_mod = None
    if rpb is not None:
        table = rpb.to(query.dtype)

        def score_mod(score, b, h, q_idx, kv_idx):
            _, dr = _axis_terms(q_idx // width, kv_idx // width, height, kernel_size, dilation)
            _, dc = _axis_terms(q_idx % width, kv_idx % width, width, kernel_size, dilation)
            # masked-out pairs can lie farther apart than the table; clamp keeps the lookup in range
            r = torch.clamp(dr + kernel_size - 1, 0, span - 1)
            c = torch.clamp(dc + kernel_size - 1, 0, span - 1)
            return score + table[h, r, c]

    block_mask = _block_mask(height, width, kernel_size, dilation, str(query.device))
    q, k, v = (t.reshape(batch, heads, height * width, dim) for t in (query, key, value))
    out = flex.flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    return out.reshape(batch, heads, height, width, dim)
