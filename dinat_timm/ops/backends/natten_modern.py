"""NATTEN >= 0.20 (``natten.na2d``): fused kernels on GPU, but no relative position bias.

Only calls without ``rpb`` can use it; the chooser never drops a bias to reach it. Its CPU path
is flex attention in eager mode (unfused, forward only).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._natten import natten_version

NAME = "natten"
# natten 0.21.7 breaks torch.compile(fullgraph=True) on CPU ("Unexpected type in sourceless builder")
COMPILES = False


def available() -> Optional[str]:
    version, reason = natten_version()
    if version is None:
        return reason
    if version < (0, 20):
        return f"natten {'.'.join(map(str, version))} is a legacy release; this backend needs natten >= 0.20"
    return None


def supports(query: torch.Tensor, rpb: Optional[torch.Tensor], needs_grad: bool) -> Optional[str]:
    if rpb is not None:
        return "natten >= 0.20 has no relative position bias; use backend='tiled' (or natten <= 0.17)"
    if query.device.type == "cpu":
        if needs_grad:
            return "natten >= 0.20 has no backward on CPU (its CPU path is forward-only flex attention)"
        dim = query.shape[-1]
        if not (8 <= dim <= 512 and dim & (dim - 1) == 0):
            return f"natten >= 0.20's CPU (flex) path takes head_dim a power of two in [8, 512], got {dim}"
    return None


def neighborhood_attention(query, key, value, kernel_size, dilation, rpb, scale):
    import natten

    # natten.na2d takes [B, H, W, heads, D]
    q, k, v = (t.permute(0, 2, 3, 1, 4) for t in (query, key, value))
    out = natten.na2d(q.contiguous(), k.contiguous(), v.contiguous(), kernel_size=kernel_size, dilation=dilation, scale=scale)
    return out.permute(0, 3, 1, 2, 4)
