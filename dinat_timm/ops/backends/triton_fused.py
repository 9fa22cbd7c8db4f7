"""Fused neighborhood attention with relative position bias in Triton, forward and backward.

The kernels (``_triton_kernels.py``) never write scores, probabilities or the bias to memory, and
read each query tile's key halo once. They are wrapped as PyTorch custom ops
(``torch.ops.dinat_timm.na2d_fwd`` / ``na2d_bwd``) with fake implementations and autograd, so
``torch.compile(model, fullgraph=True)`` traces through them without a graph break.

Runs on CUDA GPUs. On CPU tensors it runs only under Triton's interpreter (``TRITON_INTERPRET=1``
set before the kernels are first used), which is how the tests check it without a GPU.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from typing import Optional, Tuple

import torch

NAME = "triton"
COMPILES = True  # custom ops with fake implementations: no graph break
MAX_HEAD_DIM = 128
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_TILE = 8  # query (forward, dQ) and key (dK/dV) tiles are 8×8 positions of one dilation sub-grid
# The kernels, by the name their launch configurations and candidates go by.
_KERNELS = {"fwd": "na2d_fwd_kernel", "dq": "na2d_bwd_dq_kernel", "dkdv": "na2d_bwd_dkdv_kernel"}


def available() -> Optional[str]:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (it ships with PyTorch's CUDA wheels)"
    if not (torch.cuda.is_available() or _interpreting()):
        return "no CUDA GPU (on CPU the triton backend runs only under TRITON_INTERPRET=1, Triton's interpreter)"
    return None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _kernels():
    from . import _triton_kernels  # imported on first use: triton's import is not free

    return _triton_kernels


def _kernels_interpreted() -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(_kernels().na2d_fwd_kernel, InterpretedFunction)


def supports(query: torch.Tensor, rpb: Optional[torch.Tensor], needs_grad: bool) -> Optional[str]:
    device = query.device.type
    if device == "cpu":
        if not _interpreting():
            return "the triton backend runs on CUDA; CPU tensors need TRITON_INTERPRET=1 (Triton's interpreter)"
        if not _kernels_interpreted():
            return "TRITON_INTERPRET=1 was set after the triton kernels were compiled for the GPU; set it before first use"
    elif device != "cuda":
        return f"the triton backend runs on CUDA tensors, got {query.device}"
    if query.dtype not in DTYPES:
        return f"the triton backend takes float32, bfloat16 or float16, got {query.dtype}"
    if device == "cuda" and query.dtype == torch.bfloat16:
        # get_device_properties, not get_device_capability: dynamo constant-folds the former, not
        # the latter (torch 2.14's trace rules), and this check runs inside compiled graphs
        props = torch.cuda.get_device_properties(query.device)
        if (props.major, props.minor) < (8, 0):
            return "bfloat16 needs a GPU of compute capability 8.0 or newer"
    if query.shape[-1] > MAX_HEAD_DIM:
        return f"the triton backend takes head_dim <= {MAX_HEAD_DIM}, got {query.shape[-1]}"
    return None


# -- launch configuration ------------------------------------------------------------------------------


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _one_tile_per_sub_grid(halo_rows: int, halo_cols: int) -> bool:
    """Every sub-grid fits one query tile, and its keys one chunk: the dQ program then computes
    dK and dV too (``FUSED_KV``), and the dK/dV pass is not launched."""
    return halo_rows <= _TILE and halo_cols <= _TILE


def _halo_extent(length: int, dilation: int, kernel_size: int) -> int:
    """Positions a tile's halo spans along one axis: ``TILE+k-1``, or the longest sub-grid when
    that is shorter (then a tile's windows cover its whole sub-grid, as in every dilated layer of
    DiNAT at 224², where the sub-grids are k×k)."""
    return min(_TILE + kernel_size - 1, _cdiv(length, dilation))


def _halo(query: torch.Tensor, dilation: int, kernel_size: int) -> Tuple[int, int]:
    """(rows, columns) of the halo for a ``[B, heads, H, W, D]`` query."""
    return _halo_extent(query.shape[2], dilation, kernel_size), _halo_extent(query.shape[3], dilation, kernel_size)


@functools.lru_cache(maxsize=None)
def _config(kernel_size: int, head_dim: int, halo_rows: int, halo_cols: int) -> dict:
    """The configuration used where nothing is timed (Triton's interpreter, or
    ``DINAT_TRITON_AUTOTUNE=0``): each kernel's first candidate, the one an H200 picked at DiNAT's
    k=7, head_dim=32 in bf16 among the plain (no register cap, one stage) configurations."""
    return {which: configs[0] for which, configs in _candidates(kernel_size, head_dim, halo_rows, halo_cols).items()}


@functools.lru_cache(maxsize=None)
def _candidates(kernel_size: int, head_dim: int, halo_rows: int, halo_cols: int) -> dict:
    """Launch configurations worth timing, per kernel (``{"fwd": [...], "dq": [...], "dkdv": [...]}``),
    for halos of ``halo_rows × halo_cols`` positions (``_halo_extent``).

    Queries (forward, dQ) and keys (dK/dV) come in 8×8 tiles; the forward and dQ read the key
    halo (``HALO_C`` columns, a power of two) ``CHUNK_R`` rows at a time. The kernels hold many
    score-sized integer tiles (masks, bias indices), so left alone ptxas gives them ~250
    registers a thread: one block per SM, no latency hidden. The candidates trade that against
    spills with ``maxnreg`` (4 warps at 128 registers: four blocks per SM) and let Triton's
    pipeliner prefetch the next chunk (``num_stages=2``), which on sm_90 also brought the
    64-key forward down to about 195 registers with no spill (``cuobjdump -res-usage``). Reading a whole
    16×16 halo in one chunk is no candidate: on sm_90 it spills 808 bytes a thread in bf16.

    Halos follow the sub-grid: on the 7×7 sub-grids of DiNAT's dilated layers at k=7 the forward
    and dQ score one 8×8 chunk of keys (64 slots, not four 4×16 chunks, 256) and the dK/dV query
    chunks are 8×8, not 4×16; fewer live values too (bf16 forward, 8 warps: 116 registers,
    against 250 with the 16-wide halo).
    """
    block_d = max(16, _pow2(head_dim))
    halo_c = _pow2(halo_cols)
    wide = block_d > 64

    def chunk(keys):  # halo rows per chunk (a power of two) for ``keys`` keys, at least 16 (tl.dot's minimum)
        return max(min(keys // halo_c, _pow2(halo_rows)), 2, 16 // halo_c)

    def config(meta, warps, stages=1, maxnreg=None):
        return dict(meta=meta, num_warps=warps, num_stages=stages, maxnreg=maxnreg)

    def unique(configs):
        return [c for i, c in enumerate(configs) if c not in configs[:i]]

    base = dict(TILE_R=_TILE, TILE_C=_TILE, HALO_R=halo_rows, HALO_C=halo_c, BLOCK_D=block_d)
    small, mid = chunk(32 if wide else 64), chunk(64 if wide else 128)
    fwd = [config(dict(base, CHUNK_R=small), 8), config(dict(base, CHUNK_R=small), 8, stages=2),
           config(dict(base, CHUNK_R=small), 4, stages=2, maxnreg=128),
           config(dict(base, CHUNK_R=chunk(32)), 4, maxnreg=128), config(dict(base, CHUNK_R=mid), 8)]

    fused = _one_tile_per_sub_grid(halo_rows, halo_cols)

    def with_bins(c):
        c = max(c, _pow2(halo_rows)) if fused else c  # the whole sub-grid in one key chunk
        covered = _cdiv(halo_rows, c) * c
        return dict(base, CHUNK_R=c, BINS_R=_pow2(covered + _TILE - 1), BINS_C=_pow2(halo_c + _TILE - 1), FUSED_KV=fused)

    dq = unique([config(with_bins(mid), 8), config(with_bins(small), 4, stages=2, maxnreg=128),
                 config(with_bins(mid), 8, maxnreg=128), config(with_bins(small), 4, maxnreg=128)])
    query_cols = min(16, halo_c)
    kv = dict(TILE_R=_TILE, TILE_C=_TILE, CHUNK_QR=64 // query_cols, CHUNK_QC=query_cols, BLOCK_D=block_d)
    dkdv = [config(kv, 4), config(kv, 4, maxnreg=128), config(kv, 8, maxnreg=128), config(kv, 4, stages=2, maxnreg=128)]
    return dict(fwd=unique(fwd), dq=dq, dkdv=dkdv)


def _autotuning(t: torch.Tensor) -> bool:
    return t.is_cuda and not _kernels_interpreted() and os.environ.get("DINAT_TRITON_AUTOTUNE", "1") != "0"


@functools.lru_cache(maxsize=None)
def _tuned(which: str, kernel_size: int, head_dim: int, halo_rows: int, halo_cols: int):
    """The kernel wrapped in Triton's autotuner over this shape's candidates, timed at first use
    of each map size, dilation, head_dim and dtype (each of DiNAT's stage shapes gets its own
    choice). Every candidate writes all its outputs without accumulating, so the autotuner's
    repeated runs leave nothing behind."""
    import triton

    configs = [triton.Config(c["meta"], num_warps=c["num_warps"], num_stages=c["num_stages"], maxnreg=c["maxnreg"])
               for c in _candidates(kernel_size, head_dim, halo_rows, halo_cols)[which]]
    key = ["height", "width", "dilation", "head_dim", "HAS_RPB"]
    return triton.autotune(configs=configs, key=key)(getattr(_kernels(), _KERNELS[which]))


def _launch(which: str, grid, args, constexprs: dict, probe: torch.Tensor, dilation: int):
    """Launch kernel ``which`` ("fwd", "dq", "dkdv"): autotuned on a GPU, else its first candidate as it is."""
    kernel_size, head_dim = constexprs["KS"], probe.shape[-1]
    halo = _halo(probe, dilation, kernel_size)
    if _autotuning(probe):
        _tuned(which, kernel_size, head_dim, *halo)[grid](*args, **constexprs)
    else:
        cfg = _config(kernel_size, head_dim, *halo)[which]
        options = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        if cfg["maxnreg"]:
            options["maxnreg"] = cfg["maxnreg"]
        getattr(_kernels(), _KERNELS[which])[grid](*args, **constexprs, **cfg["meta"], **options)
    # (the interpreter ignores warps, stages and register caps)


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs: three TF32 tensor-core products per product (~fp32 accuracy; plain TF32, Triton's
    # default, is off by ~1e-3, and "ieee" compiles to scalar FMAs that spill kilobytes of stack)
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _upcast(dtype: torch.dtype) -> bool:
    return dtype != torch.float32 and _kernels_interpreted()


def _strides(t: torch.Tensor):
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _channels_last_buffer(t: torch.Tensor, dtype=None) -> torch.Tensor:
    """A contiguous ``[B, H, W, heads, D]`` tensor for a ``[B, heads, H, W, D]`` result. The ops
    return it as it is (a plain contiguous output: inductor on CUDA mishandled custom ops whose
    outputs had permuted strides), and the caller's permute back is a view: the layout the
    models read next (``permute`` + ``reshape`` to channels), at no copy."""
    b, n, h, w, d = t.shape
    return torch.empty(b, h, w, n, d, dtype=dtype or t.dtype, device=t.device)


def _heads_first(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2, 4)  # [B, H, W, heads, D] -> [B, heads, H, W, D], a view


def _grid(query: torch.Tensor, dilation: int):
    """Tiles a side of the longest sub-grid, and the launch grid (image·head, sub-grid·tile)."""
    batch, heads, height, width, _ = query.shape
    tiles_r = _cdiv(_cdiv(height, dilation), _TILE)
    tiles_c = _cdiv(_cdiv(width, dilation), _TILE)
    return tiles_r, tiles_c, (batch * heads, dilation * dilation * tiles_r * tiles_c)


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# -- custom ops ----------------------------------------------------------------------------------------


@torch.library.custom_op("dinat_timm::na2d_fwd", mutates_args=())
def na2d_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: Optional[torch.Tensor],
    kernel_size: int, dilation: int, scale: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(output as a contiguous ``[B, H, W, heads, D]``, log2-sum-exp ``[B, heads, H, W]`` fp32)."""
    q, k, v = (_unit_last(t) for t in (q, k, v))
    batch, heads, height, width, head_dim = q.shape
    out_buffer = _channels_last_buffer(q)
    out = _heads_first(out_buffer)
    lse = torch.empty(batch, heads, height, width, dtype=torch.float32, device=q.device)
    tiles_r, tiles_c, grid = _grid(q, dilation)
    table = q if rpb is None else rpb.contiguous()
    args = (q, k, v, table, out, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
            heads, height, width, head_dim, dilation, tiles_r, tiles_c, scale * _kernels().LOG2E.value)
    constexprs = dict(KS=kernel_size, HAS_RPB=rpb is not None, PRECISION=_precision(q.dtype), UPCAST=_upcast(q.dtype))
    with _device_guard(q):
        _launch("fwd", grid, args, constexprs, q, dilation)
    return out_buffer, lse


@na2d_fwd.register_fake
def _(q, k, v, rpb, kernel_size, dilation, scale):
    batch, heads, height, width, _ = q.shape
    return _channels_last_buffer(q), q.new_empty(batch, heads, height, width, dtype=torch.float32)


@torch.library.custom_op("dinat_timm::na2d_bwd", mutates_args=())
def na2d_bwd(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: Optional[torch.Tensor],
    out: torch.Tensor, lse: torch.Tensor, kernel_size: int, dilation: int, scale: float, rpb_grad: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``grad_out`` and ``out`` as ``[B, H, W, heads, D]`` (the forward's output layout); returns
    dq, dk, dv as contiguous ``[B, H, W, heads, D]`` and d-rpb (empty when not asked for)."""
    q, k, v = (_unit_last(t) for t in (q, k, v))
    grad_out, out = (_heads_first(_unit_last(t)) for t in (grad_out, out))
    batch, heads, height, width, head_dim = q.shape
    tiles_r, tiles_c, grid = _grid(q, dilation)
    span = 2 * kernel_size - 1
    buffers = [_channels_last_buffer(t) for t in (q, k, v)]
    dq, dk, dv = (_heads_first(b) for b in buffers)
    delta = torch.empty_like(lse)
    rpb_grad = rpb_grad and rpb is not None
    # one partial bias table per program; every bin a program's queries can reach is written by it
    partial = torch.zeros(grid[0], grid[1], span, span, dtype=torch.float32, device=q.device) if rpb_grad else lse
    table = q if rpb is None else rpb.contiguous()
    precision = _precision(q.dtype)
    shape_args = (heads, height, width, head_dim, dilation, tiles_r, tiles_c, scale * _kernels().LOG2E.value, scale)
    flags = dict(KS=kernel_size, HAS_RPB=rpb is not None, PRECISION=precision, UPCAST=_upcast(q.dtype))
    with _device_guard(q):
        dq_args = (q, k, v, table, out, grad_out, lse, delta, dq, partial, dk, dv,
                   *_strides(q), *_strides(k), *_strides(v), *_strides(out), *_strides(grad_out), *_strides(dq),
                   *_strides(dk), *_strides(dv), *shape_args)
        _launch("dq", grid, dq_args,
                dict(flags, RPB_GRAD=rpb_grad, SPLIT_BINS=q.dtype != torch.float32), q, dilation)
        if not _one_tile_per_sub_grid(*_halo(q, dilation, kernel_size)):  # else the dQ pass wrote dK and dV
            dkdv_args = (q, k, v, table, grad_out, lse, delta, dk, dv, *_strides(q), *_strides(k), *_strides(v),
                         *_strides(grad_out), *_strides(dk), *_strides(dv), *shape_args)
            _launch("dkdv", grid, dkdv_args, flags, q, dilation)
    if rpb_grad:
        drpb = partial.view(batch, heads, -1, span, span).sum((0, 2))
        drpb = drpb.to(rpb.dtype)
    else:
        drpb = q.new_empty(0)
    return (*buffers, drpb)


@na2d_bwd.register_fake
def _(grad_out, q, k, v, rpb, out, lse, kernel_size, dilation, scale, rpb_grad):
    if rpb_grad and rpb is not None:
        drpb = rpb.new_empty(rpb.shape)
    else:
        drpb = q.new_empty(0)
    return _channels_last_buffer(q), _channels_last_buffer(k), _channels_last_buffer(v), drpb


def _setup_context(ctx, inputs, output):
    q, k, v, rpb, kernel_size, dilation, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, rpb, out, lse)
    ctx.geometry = (kernel_size, dilation, scale)
    ctx.rpb_grad = rpb is not None and ctx.needs_input_grad[3]


def _backward(ctx, grad_out, grad_lse):
    q, k, v, rpb, out, lse = ctx.saved_tensors
    kernel_size, dilation, scale = ctx.geometry
    dq, dk, dv, drpb = na2d_bwd(grad_out, q, k, v, rpb, out, lse, kernel_size, dilation, scale, ctx.rpb_grad)
    dq, dk, dv = (_heads_first(t) for t in (dq, dk, dv))
    return dq, dk, dv, (drpb if ctx.rpb_grad else None), None, None, None


na2d_fwd.register_autograd(_backward, setup_context=_setup_context)


def neighborhood_attention(query, key, value, kernel_size, dilation, rpb, scale):
    out, _ = na2d_fwd(query, key, value, rpb, kernel_size, dilation, float(scale))
    return _heads_first(out)
