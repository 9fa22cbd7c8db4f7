"""Where each query's neighborhood lies, along one axis, in NATTEN's exact semantics.

A dilated axis of length L splits into ``d`` independent sub-grids (positions ``a, a+d, a+2d…``).
Sub-grid ``a`` has ``L_a = ceil((L - a) / d)`` positions; query ``p`` of it looks at the ``k``
positions starting at ``clamp(p - k//2, 0, L_a - k)`` (shifted at the borders, never padded), and
the bias of key ``p'`` is indexed by ``p' - p + k - 1``. Every backend written in plain PyTorch
derives its indices from these helpers, so they share one definition of the neighborhood.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from ._cache import cached_constant


def _subgrid_position(length: int, dilation: int, device):
    index = torch.arange(length, device=device)
    sub = index % dilation
    pos = index // dilation
    sub_len = (length - sub + dilation - 1) // dilation
    return sub, pos, sub_len


def _window_start(pos: torch.Tensor, sub_len: torch.Tensor, kernel_size: int) -> torch.Tensor:
    return torch.clamp(torch.minimum(pos - kernel_size // 2, sub_len - kernel_size), min=0)


@cached_constant(maxsize=256)
def neighborhood_1d(length: int, kernel_size: int, dilation: int, device=None):
    """Per position: the ``k`` neighbor indices and their bias indices (``[L, k]`` each)."""
    sub, pos, sub_len = _subgrid_position(length, dilation, device)
    start = _window_start(pos, sub_len, kernel_size)
    key_pos = start[:, None] + torch.arange(kernel_size, device=device)
    neighbors = key_pos * dilation + sub[:, None]
    bias_index = key_pos - pos[:, None] + kernel_size - 1
    return neighbors, bias_index


@dataclass(frozen=True)
class AxisTiling:
    """Query tiles and their key halos along one axis (see ``tile_axis``)."""

    tile: int  # queries per tile
    halo: int  # keys per tile
    groups: int  # dilation * tiles per sub-grid
    query_index: torch.Tensor  # [groups, tile] source position of each query slot
    key_index: torch.Tensor  # [groups, halo] source position of each halo key
    bias_index: torch.Tensor  # [groups, tile, halo] rpb index, -1 where outside the neighborhood
    out_group: torch.Tensor  # [L] group holding position i's query
    out_slot: torch.Tensor  # [L] slot of position i within that group


def padded_halo_fits(length: int, kernel_size: int, dilation: int, tile: int) -> bool:
    """True when tiles of ``tile`` positions can take keys from a sub-grid padded by ``k//2``.

    Then every halo starts ``k//2`` before its tile, a fixed stride, so halos are strided views
    of one padded tensor instead of gathers. It holds when every sub-grid has the same length, a
    tile is wider than half a kernel (the window clamped at the start stays inside the first
    halo) and the last tile starts no later than the window clamped at the end does, plus
    ``k//2`` (a last tile may be partial: its extra slots are padding).
    """
    if length % dilation:
        return False
    sub_len, half = length // dilation, kernel_size // 2
    last_start = (-(-sub_len // tile) - 1) * tile
    return tile > half and sub_len > tile and last_start <= sub_len - kernel_size + half


@cached_constant(maxsize=256)
def tile_axis(length: int, kernel_size: int, dilation: int, tile: int, padded: bool = False) -> AxisTiling:
    """Split one axis into query tiles whose neighborhoods fit one halo of keys per tile.

    Queries of a tile have nondecreasing window starts that grow by at most one per step, so the
    union of their windows is a contiguous run of at most ``tile + k - 1`` sub-grid positions
    (fewer where the borders clamp them); the halo is the longest such union. Sub-grids shorter
    than the longest (when ``d`` does not divide ``L``) get padded slots that point at a valid
    position and are masked out or dropped. With ``padded`` (see ``padded_halo_fits``) halos
    start ``k//2`` before their tile, in a sub-grid padded on both sides; ``key_index`` then
    counts from the padded start.
    """
    d, k = dilation, kernel_size
    longest = -(-length // d)
    tile = max(1, min(tile, longest))
    n_tiles = -(-longest // tile)
    groups = d * n_tiles

    sub = torch.arange(d).repeat_interleave(n_tiles)  # [groups]
    first = torch.arange(n_tiles).repeat(d) * tile  # [groups]
    sub_len = (length - sub + d - 1) // d  # [groups]

    q_pos = first[:, None] + torch.arange(tile)  # [groups, tile]
    q_valid_pos = torch.minimum(q_pos, sub_len[:, None] - 1)
    q_start = _window_start(q_valid_pos, sub_len[:, None], k)
    # gathered halos only need the union of their tile's windows, shorter than tile + k - 1 at
    # clamped borders (two 7-wide tiles of a 14-long axis need 10 keys, not 13)
    halo = tile + k - 1 if padded else int((q_start[:, -1] - q_start[:, 0]).max()) + k

    if padded:
        halo_start = first - k // 2
    else:
        halo_start = torch.clamp(torch.minimum(q_start[:, 0], torch.full_like(sub, longest - halo)), min=0)
    k_pos = halo_start[:, None] + torch.arange(halo)  # [groups, halo]
    k_valid_pos = torch.clamp(torch.minimum(k_pos, sub_len[:, None] - 1), min=0)

    offset = k_pos[:, None, :] - q_start[:, :, None]  # [groups, tile, halo]
    in_grid = (k_pos >= 0) & (k_pos < sub_len[:, None])
    inside = (offset >= 0) & (offset < k) & in_grid[:, None, :]
    bias_index = torch.where(inside, k_pos[:, None, :] - q_valid_pos[:, :, None] + k - 1, -1)

    position = torch.arange(length)
    p, a = position // d, position % d
    return AxisTiling(
        tile=tile,
        halo=halo,
        groups=groups,
        query_index=q_valid_pos * d + sub[:, None],
        key_index=k_valid_pos * d + sub[:, None],
        bias_index=bias_index,
        out_group=a * n_tiles + p // tile,
        out_slot=p % tile,
    )
