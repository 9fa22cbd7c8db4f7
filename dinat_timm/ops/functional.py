"""The public operator: exact 2-D (dilated) neighborhood attention with relative position bias."""
from __future__ import annotations

from typing import Optional

import torch

from .backends import BACKENDS
from .checks import check_inputs
from .chooser import choose_backend, why_not


def neighborhood_attention_2d(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: int,
    dilation: int = 1,
    rpb: Optional[torch.Tensor] = None,
    scale: Optional[float] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Neighborhood attention as NATTEN defines it, on ``[batch, heads, height, width, head_dim]``.

    Each query attends the ``kernel_size²`` keys of its neighborhood on its dilation sub-grid
    (clamped at the borders), with ``rpb[h, Δrow + k-1, Δcol + k-1]`` added to the scores
    (Δ in sub-grid steps) when ``rpb`` (``[heads, 2k-1, 2k-1]``) is given. ``scale`` defaults to
    ``head_dim ** -0.5``. ``backend="auto"`` picks the fastest exact backend for the device,
    dtype and grad mode; naming one that cannot serve the call raises ``ValueError`` with why.
    """
    check_inputs(query, key, value, kernel_size, dilation, rpb)
    if scale is None:
        scale = query.shape[-1] ** -0.5
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (query, key, value, rpb)
    )
    if backend == "auto":
        backend = choose_backend(query, rpb, needs_grad)
    else:
        reason = why_not(backend, query, rpb, needs_grad)
        if reason is not None:
            raise ValueError(f"backend {backend!r} cannot compute this call: {reason}")
    return BACKENDS[backend].neighborhood_attention(query, key, value, kernel_size, dilation, rpb, scale)
