"""Pure-PyTorch neighborhood attention as dense batched attention: the always-available fast path.

Each dilated sub-grid is an ordinary (dilation 1) problem, so queries are cut into tiles of
``th×tw`` positions of one sub-grid and each tile attends the ``(th+k-1)×(tw+k-1)`` halo of keys
that holds every neighborhood in it. The clamped-window mask and the relative position bias
become one additive ``[tiles, 1, th·tw, halo]`` tensor, and the attention itself is one call of
``scaled_dot_product_attention`` over all tiles (fused kernels on CPU and GPU), laid out
tile-major (``[tiles, batch, th·tw, head_dim]``) so the backward can walk the tiles in
contiguous, cache-sized chunks.

Two ways to cut the tiles, chosen per shape:
- strips: when ``d`` divides the map, sub-grids are a view of the input and all halos are one
  overlapping strided view of a copy of the keys cut into column strips (``_StripHalos``),
  padded by ``k//2`` (or the whole sub-grid when it is small): no per-tile copies, no indices.
- indexed: any other shape; queries, halos and outputs move through precomputed gathers.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ..geometry import padded_halo_fits, tile_axis
from .._cache import cached_constant, exporting

NAME = "tiled"
COMPILES = True
# (rows, columns) of a query tile. Smaller tiles score fewer keys a query (at k=7 a 4×7 tile's
# 10×13 halo is 130 keys for each query's 49, a 7×7 tile's 13×13 is 169) but make more, smaller
# matmuls, and only the columns cost a copy (see _StripHalos). 4×7 measured fastest forward and
# forward+backward at DiNAT-tiny's 56² and 28² maps on 2 CPU threads, against 4×4, 7×4, 7×7, 8×8.
DEFAULT_TILE = (4, 7)
# Score-sized temporaries of the backward are memory-bound unless they stay in cache.
_BACKWARD_CHUNK_BYTES = 1 << 20


def available() -> Optional[str]:
    return None


def supports(query: torch.Tensor, rpb: Optional[torch.Tensor], needs_grad: bool) -> Optional[str]:
    return None


# -- layouts (cached per shape and device) ---------------------------------------------------------


class _Cut(NamedTuple):
    """How the strip path cuts one axis of a sub-grid: ``count`` query tiles of ``tile``, and
    halo ``i`` = positions ``[i·step - pad, i·step - pad + halo)`` (beyond the axis: masked)."""

    tile: int
    count: int
    halo: int
    step: int
    pad: int


def _axis_cut(length: int, kernel_size: int, dilation: int, tile: int):
    """The cut of one axis for the strip path, with its ``tile_axis``; None when it cannot serve."""
    if length % dilation:
        return None
    sub_len, half = length // dilation, kernel_size // 2
    if sub_len <= max(tile + kernel_size - 1, 2 * kernel_size):
        # Short axes: one tile over the whole sub-grid, or two whose halos the clamped borders
        # cut short (a 14-long axis at k=7: halos of 10 at 0 and 4, against 14 for one tile)
        two = tile_axis(length, kernel_size, dilation, -(-sub_len // 2))
        if two.halo < sub_len:
            return _Cut(two.tile, 2, two.halo, sub_len - two.halo, 0), two
        return _Cut(sub_len, 1, sub_len, sub_len, 0), tile_axis(length, kernel_size, dilation, sub_len)
    # the nearest tile size that fits, smaller first (fewer wasted keys a query)
    smallest = half + 1
    preferred = max(tile, smallest)
    for t in sorted(range(smallest, preferred + kernel_size), key=lambda t: (abs(t - preferred), t)):
        if padded_halo_fits(length, kernel_size, dilation, t):
            axis = tile_axis(length, kernel_size, dilation, t, True)
            return _Cut(t, -(-sub_len // t), axis.halo, t, half), axis
    return None


def _bias_index(rows, cols, kernel_size):
    """[Gh, Gw, th, tw, hh, hw] index into the flattened rpb table; ``span²`` = outside."""
    span = 2 * kernel_size - 1
    br = rows.bias_index[:, None, :, None, :, None]
    bc = cols.bias_index[None, :, None, :, None, :]
    return torch.where((br >= 0) & (bc >= 0), br * span + bc, span * span)


@cached_constant(maxsize=128)
def _strip_layout(height, width, kernel_size, dilation, tile, device):
    plan_h = _axis_cut(height, kernel_size, dilation, tile[0])
    plan_w = _axis_cut(width, kernel_size, dilation, tile[1])
    if plan_h is None or plan_w is None:
        return None
    (cut_h, rows), (cut_w, cols) = plan_h, plan_w
    d = dilation
    index = _bias_index(rows, cols, kernel_size)
    # tile_axis orders groups (sub-grid, tile); strips order them (a, b, tile_w, tile_h)
    index = index.reshape(d, rows.groups // d, d, cols.groups // d, *index.shape[2:])
    index = index.permute(0, 2, 3, 1, 4, 5, 6, 7).reshape(rows.groups * cols.groups, rows.tile * cols.tile, -1)
    return dict(cuts=(cut_h, cut_w), bias_index=index.to(device))


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
    """``[heads, tiles, queries, keys]``: rpb where a key is in the query's neighborhood, else -inf."""
    span = 2 * kernel_size - 1
    if rpb is None:
        table = torch.zeros(1, span * span, dtype=dtype, device=bias_index.device)
    else:
        # gather from the table in its own precision (fp32), then cast: the gather's backward sums
        # every query's gradient into ~(2k-1)² entries, and in half precision that sum loses digits
        table = rpb.reshape(heads, span * span)
    table = torch.cat([table, table.new_full((table.shape[0], 1), float("-inf"))], dim=1)
    # gather with an expanded index: several times faster than advanced indexing on CPU, both ways
    flat = bias_index.reshape(1, -1).expand(table.shape[0], -1)
    return table.gather(1, flat).view(table.shape[0], *bias_index.shape).to(dtype)


@cached_constant(maxsize=128)
def _mask_only(layout_fn, args, dtype):
    return _additive_bias(layout_fn(*args)["bias_index"], None, 1, args[2], dtype)


def _bias(lay, layout_fn, args, rpb, heads, dtype):
    """Tile-major ``[heads·tiles, 1, queries, keys]`` additive bias (the mask alone when no rpb)."""
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
        tiles, batch = q.shape[:2]

        def image_major(t):  # [tiles, B, ...] whose tiles of one image are one contiguous block
            return t.new_empty(batch, tiles, *t.shape[2:]).transpose(0, 1)

        # the bias's gradient sums over images: accumulate it in at least fp32, as one sum would
        grad_bias = torch.zeros_like(bias, dtype=torch.promote_types(bias.dtype, torch.float32))
        grad_q, grad_k, grad_v = image_major(q), image_major(k), image_major(v)
        step = max(1, _BACKWARD_CHUNK_BYTES // (q.shape[2] * k.shape[2] * q.element_size()))
        # one image at a time: every operand is then a 3-D batch of matrices with one stride
        # per tile, which bmm reads in place, the overlapping key halos included
        for b in range(batch):
            for start in range(0, tiles, step):
                sl = slice(start, start + step)
                inputs = (q[sl, b], k[sl, b], v[sl, b], bias[sl, 0], out[sl, b], lse[sl, b], grad_out[sl, b])
                grads = (grad_q[sl, b], grad_k[sl, b], grad_v[sl, b], grad_bias[sl, 0])
                _attention_backward(*inputs, ctx.scale, grads)
        return grad_q, grad_k, grad_v, grad_bias.to(bias.dtype), None


def _attention_backward(q, k, v, bias, out, lse, grad_out, scale, grads):
    """Gradients of one image's chunk of tiles (``[tiles, L or S, D]``), written into ``grads``;
    the bias's is accumulated over images."""
    grad_q, grad_k, grad_v, grad_bias = grads
    scores = torch.bmm(q, k.transpose(1, 2)).mul_(scale).add_(bias)
    # exp in at least fp32 (half inputs), never below the inputs' own precision (fp64)
    probs = scores.to(torch.promote_types(scores.dtype, torch.float32)).sub_(lse.unsqueeze(-1)).exp_().to(q.dtype)
    torch.bmm(probs.transpose(1, 2), grad_out, out=grad_v)
    grad_probs = torch.bmm(grad_out, v.transpose(1, 2))
    delta = (grad_out * out).sum(-1, keepdim=True)
    grad_scores = probs.mul_(grad_probs.sub_(delta))
    torch.bmm(grad_scores, k, out=grad_q).mul_(scale)
    torch.bmm(grad_scores.transpose(1, 2), q, out=grad_k).mul_(scale)
    grad_bias.add_(grad_scores)


def _attention(q, k, v, bias, scale):
    # exported and traced graphs (torch.export, ONNX, torch.jit.trace) get the standard op: they are for
    # inference, the custom backward below is an autograd.Function that ONNX's decompositions cannot
    # re-trace, and torch.jit.trace's check re-traces without grad, where the path would differ
    if (q.device.type == "cpu" and bias.requires_grad and torch.is_grad_enabled() and not exporting()
            and not torch.jit.is_tracing()):
        return _BiasedAttention.apply(q, k, v, bias, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


# -- strip path --------------------------------------------------------------------------------------


def _subgrids(x, d):
    """[B, n, H, W, D] -> view [B, n, d, d, H/d, W/d, D] of the d×d dilation sub-grids."""
    b, n, h, w, c = x.shape
    return x.view(b, n, h // d, d, w // d, d, c).permute(0, 1, 3, 5, 2, 4, 6)


class _StripHalos(torch.autograd.Function):
    """Key halos as a view: ``[tiles, B, halo_h·halo_w, D]``, overlapping, with no per-tile copy.

    The sub-grids are cut once into column strips ``halo_w`` wide, one every ``step_w`` columns,
    stored row after row (``[B][n, a, b, strip][row][halo_w, D]``). A tile's halo is then
    ``halo_h`` consecutive rows of its strip, one contiguous block, and when halos step by their
    tile (padded tiles, one whole tile) successive tiles' halos start a fixed ``tile_h`` rows
    apart, across strips and heads too: so all of them are one strided view that SDPA reads
    directly. Rows a halo reaches beyond its strip belong to the next strip (or to zeroed slack
    at either end) and are masked like the padding they stand for; every image has its own
    slack, so no image reads another's keys. The copy is ``halo_w / step_w`` the keys' size,
    against ``(halo_h·halo_w) / (tile_h·tile_w)`` for materialized halos. When rows are cut in
    two tiles with clamped, shorter halos, the strips store each tile's rows (no overlap).
    """

    @staticmethod
    def forward(ctx, grids, cut_h, cut_w):
        batch, heads, a, b, sub_h, sub_w, dim = grids.shape
        shared_rows = cut_h.step == cut_h.tile
        if shared_rows:  # top padding comes from the slack, bottom is a partial last tile
            rows_pad = (0, cut_h.count * cut_h.tile - sub_h)
        else:
            rows_pad = (cut_h.pad, (cut_h.count - 1) * cut_h.step + cut_h.halo - cut_h.pad - sub_h)
        cols_pad = (cut_w.pad, (cut_w.count - 1) * cut_w.step + cut_w.halo - cut_w.pad - sub_w)
        pads = (0, 0, *cols_pad, *rows_pad)
        strips = (F.pad(grids, pads) if any(pads) else grids).unfold(5, cut_w.halo, cut_w.step)  # no copy for none
        strips = strips.permute(0, 1, 2, 3, 5, 4, 7, 6)  # [B, n, a, b, strip, rows, halo_w, D]
        if shared_rows:
            row_step, slack = cut_h.tile, cut_h.pad * cut_w.halo * dim
        else:  # [B, n, a, b, strip, tile_h, halo_h, halo_w, D]
            strips = strips.unfold(5, cut_h.halo, cut_h.step).permute(0, 1, 2, 3, 4, 5, 8, 6, 7)
            row_step, slack = cut_h.halo, 0
        body = strips[0].numel()
        buffer = grids.new_empty(batch, body + 2 * slack)
        buffer[:, :slack].zero_()
        buffer[:, slack + body :].zero_()
        buffer[:, slack : slack + body].view(strips.shape).copy_(strips)
        ctx.geometry = (cut_h, cut_w, grids.shape)
        n_tiles = heads * a * b * cut_w.count * cut_h.count
        shape = (n_tiles, batch, cut_h.halo * cut_w.halo, dim)
        return buffer.as_strided(shape, (row_step * cut_w.halo * dim, buffer.stride(0), dim, 1))

    @staticmethod
    def backward(ctx, grad):
        cut_h, cut_w, shape = ctx.geometry
        batch, heads, a, b, sub_h, sub_w, dim = shape
        grad = grad.reshape(-1, batch, cut_h.halo, cut_w.halo, dim).transpose(0, 1)  # [B, tiles, hh, hw, D]
        if cut_h.step == cut_h.tile:
            grad = _fold(grad, dim=1, inner=2, tile=cut_h.tile, halo=cut_h.halo)  # [B, slack+rows+slack, hw, D]
            grad = grad.narrow(1, cut_h.pad, grad.shape[1] - 2 * cut_h.pad)
            grad = grad.reshape(batch, heads, a, b, cut_w.count, -1, cut_w.halo, dim)
        else:
            grad = grad.reshape(batch, heads, a, b, cut_w.count, cut_h.count, cut_h.halo, cut_w.halo, dim)
            grad = _fold(grad, dim=5, inner=6, tile=cut_h.step, halo=cut_h.halo).narrow(5, cut_h.pad, sub_h)
        grad = _fold(grad, dim=4, inner=6, tile=cut_w.step, halo=cut_w.halo)  # [B, n, a, b, cols, rows, D]
        grad = grad.narrow(4, cut_w.pad, sub_w).narrow(5, 0, sub_h)
        return grad.transpose(4, 5), None, None


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


def _strips(query, key, value, dilation, rpb, scale, lay, args):
    batch, heads, height, width, dim = query.shape
    cut_h, cut_w = lay["cuts"]
    d = dilation
    n_h, n_w, th, tw = cut_h.count, cut_w.count, cut_h.tile, cut_w.tile
    sub_h, sub_w = height // d, width // d
    n_tiles = heads * d * d * n_w * n_h

    q = _subgrids(query, d)
    if (n_h * th, n_w * tw) != (sub_h, sub_w):  # a partial last tile: its extra queries are dropped
        q = F.pad(q, (0, 0, 0, n_w * tw - sub_w, 0, n_h * th - sub_h))
    q = q.reshape(batch, heads, d, d, n_h, th, n_w, tw, dim)
    q = q.permute(1, 2, 3, 6, 4, 0, 5, 7, 8).reshape(n_tiles, batch, th * tw, dim)
    k = _StripHalos.apply(_subgrids(key, d), cut_h, cut_w)
    v = _StripHalos.apply(_subgrids(value, d), cut_h, cut_w)
    out = _attention(q, k, v, _bias(lay, _strip_layout, args, rpb, heads, query.dtype), scale)
    # [n, a, b, n_w, n_h, B, th, tw, D] -> [B, n, (n_h th), a, (n_w tw), b, D]
    out = out.view(heads, d, d, n_w, n_h, batch, th, tw, dim).permute(5, 0, 4, 6, 1, 3, 7, 2, 8)
    out = out.reshape(batch, heads, n_h * th, d, n_w * tw, d, dim)[:, :, :sub_h, :, :sub_w]
    return out.reshape(batch, heads, height, width, dim)


# -- indexed path ------------------------------------------------------------------------------------


def _indexed(query, key, value, rpb, scale, lay, args):
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
    """``tile``: query tile ``(rows, columns)`` (an int for square tiles), clipped per shape."""
    # int(): under torch.compile with dynamic sizes, the layouts specialise on the map size
    # (a guard) rather than fail on a symbolic one; the batch stays dynamic
    height, width = int(query.shape[2]), int(query.shape[3])
    tile = (tile, tile) if isinstance(tile, int) else tuple(tile)
    args = (height, width, kernel_size, dilation, tile, query.device)
    lay = _strip_layout(*args)
    if lay is not None:
        return _strips(query, key, value, dilation, rpb, scale, lay, args)
    args = (height, width, kernel_size, dilation, min(tile), query.device)
    return _indexed(query, key, value, rpb, scale, _indexed_layout(*args), args)
