"""The public operator: exact 2-D (dilated) neighborhood attention with relative position bias."""
from __future__ import annotations

from typing import Optional

import torch

from ._cache import exporting
from .backends import BACKENDS
from .checks import check_inputs
from .chooser import choose_backend, why_not
from .flops import counted_as_the_operator

# The backend that computes each query from its own k² keys and nothing else (as NATTEN <= 0.17 does).
EXACT_LOCAL = "gather"


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
    if query.shape[0] == 0 or query.shape[1] == 0:
        return _empty(query, key, value, rpb)
    if backend == "auto":
        backend = choose_backend(query, rpb, needs_grad)
    else:
        reason = why_not(backend, query, rpb, needs_grad)
        if reason is not None:
            raise ValueError(f"backend {backend!r} cannot compute this call: {reason}")
    if backend != EXACT_LOCAL and _non_finite_on_cpu(query, key, value, rpb):
        backend = EXACT_LOCAL
    with counted_as_the_operator(query, kernel_size):  # FlopCounterMode: the operator's formula, not the backend's ops
        return BACKENDS[backend].neighborhood_attention(query, key, value, kernel_size, dilation, rpb, scale)


def _empty(query, key, value, rpb):
    """An empty batch (or no heads): an empty output, and empty gradients (zeros for the bias table),
    from every backend alike."""
    out = query + key + value
    return out if rpb is None else out + (rpb.sum() * 0).to(out.dtype)


def _non_finite_on_cpu(query, key, value, rpb) -> bool:
    """Whether a CPU call holds a NaN or an infinity (or a bias of -inf). The fused and tiled backends
    score a tile's queries against a shared halo of keys and mask what lies outside each window, so a
    non-finite key or value there would reach queries whose neighbourhood does not contain it
    (NaN - inf is NaN, 0 * inf is NaN); such calls go to the exact per-neighbourhood backend, which
    gives NATTEN's answer: only the queries that see the value are affected. Checked with one sum per
    tensor, eagerly and on CPU only: a data-dependent branch would break a compiled graph, and on a
    GPU it would cost a synchronisation per call (docs/operator.md)."""
    if query.device.type != "cpu" or torch.compiler.is_compiling() or exporting():
        return False
    total = query.sum(dtype=torch.float32) + key.sum(dtype=torch.float32) + value.sum(dtype=torch.float32)
    if rpb is not None:
        total = total + rpb.sum(dtype=torch.float32)
    return not bool(torch.isfinite(total))
