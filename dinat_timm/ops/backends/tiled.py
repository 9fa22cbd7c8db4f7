"""Pure-PyTorch neighborhood attention as dense batched attention: the always-available fast path.

Each dilated sub-grid is an ordinary (dilation 1) problem, so queries are cut into tiles of
``t×t`` positions of one sub-grid and each tile attends the ``(t+k-1)²`` halo of keys that holds
every neighborhood in it. The clamped-window mask and the relative position bias become one
additive ``[tiles, 1, t², halo²]`` tensor, and the attention itself is one call of
``scaled_dot_product_attention`` over all tiles (fused kernels on CPU and GPU), laid out
tile-major (``[tiles, batch, t², head_dim]``) so the backward can walk the tiles in contiguous,
cache-sized chunks.

Two ways to cut the tiles, chosen per shape:
- strided: when ``d`` divides the map and the tiles cover each sub-grid exactly, sub-grids are a
  view of the input and halos are ``unfold`` windows of it, padded by ``k//2`` (or the whole
  sub-grid when it is small): copies only, no index arithmetic.
- indexed: any other shape; queries, halos and outputs move through precomputed gathers.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..geometry import padded_halo_fits, tile_axis
from .._cache import cached_constant

NAME = "tiled"
DEFAULT_TILE = 7
# Score-sized temporaries of the backward are memory-bound unless they stay in cache.
_BACKWARD_CHUNK_BYTES = 1 << 20


def available() -> Optional[str]:
    return None


def supports(query: torch.Tensor, rpb: Optional[torch.Tensor], needs_grad: bool) -> Optional[str]:
    return None


# -- layouts (cached per shape and device) ---------------------------------------------------------


def _axis_plan(length: int, kernel_size: int, dilation: int, tile: int):
    """(tile, padded) for the strided path along one axis, or None when it cannot serve it."""
    if length % dilation:
        return None
    sub_len = length // dilation
    if sub_len <= max(tile + kernel_size - 1, 2 * kernel_size):
        # one tile whose halo is the whole sub-grid: up to (2k)² keys a query but no halo copies,
        # which measured faster than 2×2 padded tiles (14² maps, k=7, on CPU)
        return sub_len, False
    for t in range(tile, kernel_size // 2, -1):
        if padded_halo_fits(length, kernel_size, dilation, t):
            return t, True
    return None


def _bias_index(rows, cols, kernel_size):
    """[Gh, Gw, th, tw, hh, hw] index into the flattened rpb table; ``span²`` = outside."""
    span = 2 * kernel_size - 1
    br = rows.bias_index[:, None, :, None, :, None]
    bc = cols.bias_index[None, :, None, :, None, :]
    return torch.where((br >= 0) & (bc >= 0), br * span + bc, span * span)


@cached_constant(maxsize=128)
def _strided_layout(height, width, kernel_size, dilation, tile, device):
    plan_h = _axis_plan(height, kernel_size, dilation, tile)
    plan_w = _axis_plan(width, kernel_size, dilation, tile)
    if plan_h is None or plan_w is None:
        return None
    rows = tile_axis(height, kernel_size, dilation, *plan_h)
    cols = tile_axis(width, kernel_size, dilation, *plan_w)
    d = dilation
    index = _bias_index(rows, cols, kernel_size)
    # tile_axis orders groups (sub-grid, tile); the strided view orders them (a, b, tile_h, tile_w)
    index = index.reshape(d, rows.groups // d, d, cols.groups // d, *index.shape[2:])
    index = index.permute(0, 2, 1, 3, 4, 5, 6, 7).reshape(rows.groups * cols.groups, rows.tile * cols.tile, -1)
    return dict(rows=rows, cols=cols, padded=(plan_h[1], plan_w[1]), bias_index=index.to(device))


@cached_constant(maxsize=128)
def _indexed_layout(height, width, kernel_size, dilation, tile, device):
    rows = tile_axis(height, kernel_size, dilation, tile)
    cols = tile_axis(width, kernel_size, dilation, tile)
    index = _bias_index(rows, cols, kernel_size)
    index = index.reshape(rows.groups * cols.groups, rows.tile * cols.tile, rows.halo * cols.halo)
    return dict(
        rows=rows,
        cols=cols,
        bias_index=index.to(device),
        q_rows=rows.query_index[:, None, :, None].to(device),
        q_cols=cols.query_index[None, :, None, :].to(device),
        k_rows=rows.key_index[:, None, :, None].to(device),
        k_cols=cols.key_index[None, :, None, :].to(device),
        o_group_r=rows.out_group[:, None].to(device),
        o_group_c=cols.out_group[None, :].to(device),
        o_slot_r=rows.out_slot[:, None].to(device),
        o_slot_c=cols.out_slot[None, :].to(device),
    )


def _additive_bias(bias_index, rpb, heads, kernel_size, dtype):
    """``[heads, tiles, t², halo²]``: rpb where a key is in the query's neighborhood, -inf elsewhere."""
    span = 2 * kernel_size - 1
    if rpb is None:
        table = torch.zeros(1, span * span, dtype=dtype, device=bias_index.device)
    else:
        table = rpb.reshape(heads, span * span).to(dtype)
    table = torch.cat([table, table.new_full((table.shape[0], 1), float("-inf"))], dim=1)
    return table[:, bias_index]


@cached_constant(maxsize=128)
def _mask_only(layout_fn, args, dtype):
    return _additive_bias(layout_fn(*args)["bias_index"], None, 1, args[2], dtype)


def _bias(lay, layout_fn, args, rpb, heads, dtype):
    """Tile-major ``[heads·tiles, 1, t², halo²]`` additive bias (the mask alone when no rpb)."""
    index = lay["bias_index"]
    if rpb is None:
        bias = _mask_only(layout_fn, args, dtype).expand(heads, *index.shape)
    else:
        bias = _additive_bias(index, rpb, heads, args[2], dtype)
    return bias.reshape(-1, 1, *index.shape[1:])


# -- attention over tiles ----------------------------------------------------------------------------


class _BiasedAttention(torch.autograd.Function):
    """SDPA with a learnable additive bias on CPU, over tile-major ``[tiles, B, L, D]`` inputs.

    PyTorch's CPU flash kernel has no gradient for ``attn_mask`` and falls back to the unfused
    math path when the mask needs one. Forward here is the flash kernel (keeping its
    log-sum-exp); backward recomputes the probabilities from it, one cache-sized chunk of tiles
    at a time, and forms every gradient, the bias's included, with five batched matmuls.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, False, attn_mask=bias, scale=scale
        )
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, out, lse = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grads = [torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(bias)]
        per_tile = q.shape[1] * q.shape[2] * k.shape[2] * q.element_size()
        step = max(1, _BACKWARD_CHUNK_BYTES // per_tile)
        for start in range(0, q.shape[0], step):
            sl = slice(start, start + step)
            parts = _attention_backward(q[sl], k[sl], v[sl], bias[sl], out[sl], lse[sl], grad_out[sl], ctx.scale)
            for grad, part in zip(grads, parts):
                grad[sl] = part
        return (*grads, None)


def _attention_backward(q, k, v, bias, out, lse, grad_out, scale):
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale).add_(bias)
    probs = scores.float().sub_(lse.unsqueeze(-1)).exp_().to(q.dtype)
    grad_v = torch.matmul(probs.transpose(-1, -2), grad_out)
    grad_probs = torch.matmul(grad_out, v.transpose(-1, -2))
    delta = (grad_out * out).sum(-1, keepdim=True)
    grad_scores = probs.mul_(grad_probs.sub_(delta))
    grad_q = torch.matmul(grad_scores, k).mul_(scale)
    grad_k = torch.matmul(grad_scores.transpose(-1, -2), q).mul_(scale)
    return grad_q, grad_k, grad_v, grad_scores.sum(1, keepdim=True)


def _attention(q, k, v, bias, scale):
    if q.device.type == "cpu" and bias.requires_grad and torch.is_grad_enabled():
        return _BiasedAttention.apply(q, k, v, bias, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


# -- strided path ------------------------------------------------------------------------------------


def _subgrids(x, d):
    """[B, n, H, W, D] -> view [B, n, d, d, H/d, W/d, D] of the d×d dilation sub-grids."""
    b, n, h, w, c = x.shape
    return x.view(b, n, h // d, d, w // d, d, c).permute(0, 1, 3, 5, 2, 4, 6)


class _Halos(torch.autograd.Function):
    """Overlapping key halos, tile-major ``[n, a, b, tiles_h, tiles_w, B, halo_h, halo_w, D]``.

    Forward is a pad and one strided copy. Autograd's own backward for ``unfold`` is a slow
    generic kernel; here halos overlap at a fixed stride, so the gradient folds back with one
    slice-add per ``tile``-wide chunk of the halo.
    """

    @staticmethod
    def forward(ctx, grids, pads, tiles, halos):
        pad_h, pad_w = pads
        if pad_h or pad_w:
            grids = F.pad(grids, (0, 0, pad_w, pad_w, pad_h, pad_h))
        ctx.pads, ctx.tiles, ctx.halos, ctx.padded_shape = pads, tiles, halos, grids.shape
        out = grids.unfold(4, halos[0], tiles[0]).unfold(5, halos[1], tiles[1])  # [B,n,a,b,nth,ntw,D,hh,hw]
        return out.permute(1, 2, 3, 4, 5, 0, 7, 8, 6).contiguous()

    @staticmethod
    def backward(ctx, grad):
        (pad_h, pad_w), (th, tw), (hh, hw) = ctx.pads, ctx.tiles, ctx.halos
        grad = grad.permute(5, 0, 1, 2, 3, 4, 6, 7, 8)  # -> [B, n, a, b, nth, ntw, hh, hw, D]
        grad = _fold(grad, dim=5, inner=7, tile=tw, halo=hw)  # -> [B, n, a, b, nth, Wp, hh, D]
        grad = _fold(grad, dim=4, inner=6, tile=th, halo=hh)  # -> [B, n, a, b, Hp, Wp, D]
        full_h, full_w = ctx.padded_shape[4], ctx.padded_shape[5]
        grad = grad.narrow(4, pad_h, full_h - 2 * pad_h).narrow(5, pad_w, full_w - 2 * pad_w)
        return grad, None, None, None


def _fold(grad, dim, inner, tile, halo):
    """Sum windows (``halo`` long, ``tile`` apart; window index at ``dim``, position in the
    window at ``inner``) back onto the axis they were cut from, which ends up at ``dim``."""
    grad = grad.movedim(inner, dim + 1)
    n = grad.shape[dim]
    chunks = -(-halo // tile)
    shape = list(grad.shape)
    shape[dim], shape[dim + 1] = n + chunks - 1, tile
    out = grad.new_zeros(shape)
    for c in range(chunks):
        width = min(tile, halo - c * tile)
        out.narrow(dim, c, n).narrow(dim + 1, 0, width).add_(grad.narrow(dim + 1, c * tile, width))
    shape[dim : dim + 2] = [(n + chunks - 1) * tile]
    return out.reshape(shape).narrow(dim, 0, (n - 1) * tile + halo)


def _strided(query, key, value, kernel_size, dilation, rpb, scale, lay, args):
    batch, heads, height, width, dim = query.shape
    rows, cols = lay["rows"], lay["cols"]
    d, r = dilation, kernel_size // 2
    nth, ntw = rows.groups // d, cols.groups // d
    th, tw = rows.tile, cols.tile
    tiles = heads * d * d * nth * ntw

    q = _subgrids(query, d).reshape(batch, heads, d, d, nth, th, ntw, tw, dim)
    q = q.permute(1, 2, 3, 4, 6, 0, 5, 7, 8).reshape(tiles, batch, th * tw, dim)
    pads = tuple(r if p else 0 for p in lay["padded"])
    halos = (rows.halo, cols.halo)
    k = _Halos.apply(_subgrids(key, d), pads, (th, tw), halos).view(tiles, batch, -1, dim)
    v = _Halos.apply(_subgrids(value, d), pads, (th, tw), halos).view(tiles, batch, -1, dim)
    out = _attention(q, k, v, _bias(lay, _strided_layout, args, rpb, heads, query.dtype), scale)
    # [n, a, b, nth, ntw, B, th, tw, D] -> [B, n, (nth th a), (ntw tw b), D]
    out = out.view(heads, d, d, nth, ntw, batch, th, tw, dim).permute(5, 0, 3, 6, 1, 4, 7, 2, 8)
    return out.reshape(batch, heads, height, width, dim)


# -- indexed path ------------------------------------------------------------------------------------


def _indexed(query, key, value, kernel_size, dilation, rpb, scale, lay, args):
    batch, heads, _, _, dim = query.shape
    rows, cols = lay["rows"], lay["cols"]
    tiles = heads * rows.groups * cols.groups

    def tile_major(x, length):  # [B, n, Gh, Gw, a, b, D] -> [n·Gh·Gw, B, a·b, D]
        return x.permute(1, 2, 3, 0, 4, 5, 6).reshape(tiles, batch, length, dim)

    q = tile_major(query[:, :, lay["q_rows"], lay["q_cols"]], rows.tile * cols.tile)
    k = tile_major(key[:, :, lay["k_rows"], lay["k_cols"]], rows.halo * cols.halo)
    v = tile_major(value[:, :, lay["k_rows"], lay["k_cols"]], rows.halo * cols.halo)
    out = _attention(q, k, v, _bias(lay, _indexed_layout, args, rpb, heads, query.dtype), scale)
    out = out.view(heads, rows.groups, cols.groups, batch, rows.tile, cols.tile, dim).permute(3, 0, 1, 2, 4, 5, 6)
    return out[:, :, lay["o_group_r"], lay["o_group_c"], lay["o_slot_r"], lay["o_slot_c"]]


def neighborhood_attention(query, key, value, kernel_size, dilation, rpb, scale, tile=DEFAULT_TILE):
    _, _, height, width, _ = query.shape
    args = (height, width, kernel_size, dilation, tile, query.device)
    lay = _strided_layout(*args)
    if lay is not None:
        return _strided(query, key, value, kernel_size, dilation, rpb, scale, lay, args)
    return _indexed(query, key, value, kernel_size, dilation, rpb, scale, _indexed_layout(*args), args)
