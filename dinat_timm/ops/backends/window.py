"""Window attention where neighborhood attention is window attention in disguise.

When every dilation sub-grid of a map is exactly ``k×k`` (a ``k·d`` map: DiNAT's dilated layers at
224², 56/8, 28/4, 14/2, and 7² at d=1; also every map the models zero-pad up to ``k·d``), each
query's clamped neighborhood is its whole sub-grid, and its bias ``rpb[h, Δrow+k-1, Δcol+k-1]`` is
one ``[heads, k², k²]`` matrix shared by all sub-grids. That is exactly a Swin window with relative
position bias, after a strided permutation of the tokens. This backend runs it so: the permutation
(``partition``), one ``scaled_dot_product_attention`` over ``B·d²`` windows with the shared bias,
and the permutation back (``reverse``). The models can instead permute a block's input once before
``qkv`` and back after ``proj`` (``attn_layout="window"``), the copies Swin pays around its windows.

Never chosen automatically: on 2 CPU threads it was slower than ``tiled`` (the copies, and SDPA's
unfused path for a bias with a gradient); whether it beats ``triton`` on a GPU is for a GPU run to say.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .._cache import cached_constant

NAME = "window"
COMPILES = True


def available() -> Optional[str]:
    return None


def is_window_shaped(height: int, width: int, kernel_size: int, dilation: int) -> bool:
    """Every sub-grid of a ``height × width`` map is exactly ``kernel_size × kernel_size``."""
    return height == width == kernel_size * dilation


def supports(query: torch.Tensor, rpb: Optional[torch.Tensor], needs_grad: bool) -> Optional[str]:
    return None  # any device and dtype; the map's shape is checked per call, where kernel and dilation are known


@cached_constant(maxsize=32)
def _relative_index(kernel_size: int, device) -> torch.Tensor:
    """``[k², k²]`` flat index into a ``(2k-1)²`` table: (Δrow + k-1)·(2k-1) + Δcol + k-1, Δ = key − query."""
    k = kernel_size
    pos = torch.arange(k * k, device=device)
    row, col = pos // k, pos % k
    delta_r = row[None, :] - row[:, None] + k - 1
    delta_c = col[None, :] - col[:, None] + k - 1
    return delta_r * (2 * k - 1) + delta_c


def window_bias(rpb: Optional[torch.Tensor], kernel_size: int, heads: int, dtype, device) -> Optional[torch.Tensor]:
    """The shared ``[1, heads, k², k²]`` bias, gathered from the table in its own precision (its
    gradient, a sum over every window and image, then accumulates there) and cast after."""
    if rpb is None:
        return None
    index = _relative_index(kernel_size, device)
    return rpb.reshape(heads, -1)[:, index].unsqueeze(0).to(dtype)


def partition(x: torch.Tensor, kernel_size: int, dilation: int) -> torch.Tensor:
    """``[B, k·d, k·d, C]`` -> ``[B·d², k², C]``: sub-grid ``(a, b)``'s tokens, row-major, one window each."""
    b, h, w, c = x.shape
    k, d = kernel_size, dilation
    return x.view(b, k, d, k, d, c).permute(0, 2, 4, 1, 3, 5).reshape(b * d * d, k * k, c)


def reverse(windows: torch.Tensor, kernel_size: int, dilation: int, batch: int) -> torch.Tensor:
    """The inverse of ``partition``: ``[B·d², k², C]`` -> ``[B, k·d, k·d, C]``."""
    k, d = kernel_size, dilation
    c = windows.shape[-1]
    return windows.view(batch, d, d, k, k, c).permute(0, 3, 1, 4, 2, 5).reshape(batch, k * d, k * d, c)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """SDPA over windows, ``[windows, heads, k², D]``, with the shared bias broadcast over windows."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


def neighborhood_attention(query, key, value, kernel_size, dilation, rpb, scale):
    batch, heads, height, width, dim = query.shape
    if not is_window_shaped(int(height), int(width), kernel_size, dilation):
        raise ValueError(f"backend 'window' serves maps of exactly kernel_size*dilation = {kernel_size * dilation} a "
                         f"side (every sub-grid {kernel_size}x{kernel_size}); got {int(height)}x{int(width)}")

    k, d = kernel_size, dilation

    def windows(t):  # [B, heads, H, W, D] -> [B·d², heads, k², D], one copy
        t = t.reshape(batch, heads, k, d, k, d, dim).permute(0, 3, 5, 1, 2, 4, 6)
        return t.reshape(batch * d * d, heads, k * k, dim)

    out = attend(windows(query), windows(key), windows(value), window_bias(rpb, k, heads, query.dtype, query.device),
                 scale)
    # [B·d², heads, k², D] -> [B, heads, H, W, D], one copy
    out = out.view(batch, d, d, heads, k, k, dim).permute(0, 3, 4, 1, 5, 2, 6)
    return out.reshape(batch, heads, height, width, dim)
