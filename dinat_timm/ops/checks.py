"""Input validation for neighborhood attention, kept apart from the kernels.

Every backend assumes what is checked here, so errors read the same whichever backend runs.
"""
from __future__ import annotations

from typing import Optional

import torch

LAYOUT = "[batch, heads, height, width, head_dim]"


def check_kernel_and_dilation(kernel_size: int, dilation: int) -> None:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise TypeError(f"kernel_size must be an int, got {type(kernel_size).__name__}")
    if isinstance(dilation, bool) or not isinstance(dilation, int):
        raise TypeError(f"dilation must be an int, got {type(dilation).__name__}")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size}")
    if dilation < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")


def check_inputs(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kernel_size: int,
    dilation: int,
    rpb: Optional[torch.Tensor],
) -> None:
    """Raise a readable error for anything the backends cannot compute exactly."""
    check_kernel_and_dilation(kernel_size, dilation)
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 5:
            raise ValueError(
                f"{name} must be 5-D {LAYOUT}, got a {t.dim()}-D tensor of shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor, got {t.dtype}")
    if not (query.shape == key.shape == value.shape):
        raise ValueError(
            "query, key and value must have the same shape "
            f"{LAYOUT}, got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    if not (query.dtype == key.dtype == value.dtype):
        raise TypeError(f"query, key and value dtypes differ: {query.dtype}, {key.dtype}, {value.dtype}")
    if not (query.device == key.device == value.device):
        raise ValueError(f"query, key and value devices differ: {query.device}, {key.device}, {value.device}")
    _, heads, height, width, head_dim = query.shape
    if head_dim < 1:
        raise ValueError(f"head_dim (the last axis of query, key and value) must be >= 1, got shape {tuple(query.shape)}")
    window = kernel_size * dilation
    if height < window or width < window:
        raise ValueError(
            f"feature map {height}x{width} is smaller than kernel_size*dilation = "
            f"{kernel_size}*{dilation} = {window}: every dilated neighborhood needs {kernel_size} "
            "positions per axis. Pad the map first (the DiNAT models zero-pad and crop)."
        )
    if rpb is not None:
        if not isinstance(rpb, torch.Tensor):
            raise TypeError(f"rpb must be a torch.Tensor or None, got {type(rpb).__name__}")
        if not rpb.is_floating_point():
            raise TypeError(f"rpb (the relative position bias) must be a floating point tensor, got {rpb.dtype}")
        expected = (heads, 2 * kernel_size - 1, 2 * kernel_size - 1)
        if tuple(rpb.shape) != expected:
            raise ValueError(
                f"rpb must have shape [heads, 2*kernel_size-1, 2*kernel_size-1] = {list(expected)}, "
                f"got {list(rpb.shape)}"
            )
        if rpb.device != query.device:
            raise ValueError(f"rpb is on {rpb.device} but query is on {query.device}")
