"""Triton kernels for fused 2-D neighborhood attention with relative position bias.

Layout: q, k, v, out are ``[B, heads, H, W, D]`` with any strides (unit stride on ``D``); the
log-sum-exp and ``delta = rowsum(dO·O)`` are ``[B, heads, H, W]`` fp32, in log2 units for the lse.

Every program works on one dilation sub-grid (rows ``a_r, a_r+d, …``; columns likewise), where the
problem is plain dilation-1 neighborhood attention with NATTEN's clamped windows:

- forward and dQ: a ``TILE_R×TILE_C`` query tile reads the halo of keys holding all its windows
  (``HALO_R = min(TILE_R+k-1, longest sub-grid)`` rows of ``HALO_C`` columns, ``CHUNK_R`` rows at a
  time; a constant trip count, which spills less than one trimmed per tile), scores them with one
  ``tl.dot``, masks the pairs outside each query's window, adds the bias gathered from the rpb
  table in registers and runs an online softmax. Scores, probabilities and bias stay in registers.
- dK/dV: a ``TILE_R×TILE_C`` key tile walks the queries whose windows contain one of its keys (a
  contiguous range per axis, since window starts grow by at most one per query), so every key
  gradient is written once, by one program: no atomics, deterministic. Where every sub-grid fits
  one tile (``FUSED_KV``: k×k sub-grids, as in DiNAT's dilated layers), the dQ program holds all
  of its sub-grid's queries and keys and writes dK/dV itself; this pass is then not launched.
- d-rpb: the dQ program also reduces its ``dS`` onto bias bins. A bin depends only on the row and
  column differences between key and query, so the reduction is two matrix products with 0/1
  matrices, ``Er · (dS' · Ec)``, where ``dS'`` is ``dS`` with its query-column and key-row axes
  swapped; each program writes its partial table once and the sum over programs happens outside.
"""
from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # scores run in log2 units (exp2); the launcher scales by it too


@triton.jit
def _window_start(pos, sub_len, KS: tl.constexpr):
    # NATTEN's window: centred, shifted (never padded) at the borders
    return tl.maximum(tl.minimum(pos - KS // 2, sub_len - KS), 0)


@triton.jit
def _decode_tile(pid_tile, tiles_r, tiles_c, dilation, height, width, TILE_R: tl.constexpr, TILE_C: tl.constexpr):
    """Program id -> (sub-grid row/col offsets, first tile row/col, sub-grid lengths)."""
    tc = pid_tile % tiles_c
    rest = pid_tile // tiles_c
    tr = rest % tiles_r
    rest = rest // tiles_r
    a_c = rest % dilation
    a_r = rest // dilation
    len_r = (height - a_r + dilation - 1) // dilation
    len_c = (width - a_c + dilation - 1) // dilation
    return a_r, a_c, tr * TILE_R, tc * TILE_C, len_r, len_c


@triton.jit
def _tile_positions(r0, c0, len_r, len_c, TILE_R: tl.constexpr, TILE_C: tl.constexpr):
    """Sub-grid (row, col) of a tile's slots, row-major, and which slots lie on the sub-grid. Slots
    past a short sub-grid's end are clamped to its last position: computed, never stored."""
    m = tl.arange(0, TILE_R * TILE_C)
    row = r0 + m // TILE_C
    col = c0 + m % TILE_C
    valid = (row < len_r) & (col < len_c)
    return tl.minimum(row, len_r - 1), tl.minimum(col, len_c - 1), valid


@triton.jit
def _query_tile(r0, c0, len_r, len_c, TILE_R: tl.constexpr, TILE_C: tl.constexpr, KS: tl.constexpr):
    qr, qc, valid = _tile_positions(r0, c0, len_r, len_c, TILE_R, TILE_C)
    return qr, qc, valid, _window_start(qr, len_r, KS), _window_start(qc, len_c, KS)


@triton.jit
def _mma(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """``tl.dot`` with fp32 accumulation. ``UPCAST``: Triton's interpreter multiplies bfloat16 as
    its raw uint16 bits, so there the (already rounded) half-precision operands go through fp32."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _scores_log2(q, k, qr, qc, wr, wc, kr, kc, rpb_head, scale_log2,
                 KS: tl.constexpr, HAS_RPB: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """[queries, keys] scores in log2 units, -inf outside each query's window; also the mask."""
    s = _mma(q, tl.trans(k), PRECISION, UPCAST) * scale_log2
    inside = (kr[None, :] >= wr[:, None]) & (kr[None, :] < wr[:, None] + KS)
    inside = inside & (kc[None, :] >= wc[:, None]) & (kc[None, :] < wc[:, None] + KS)
    if HAS_RPB:
        span = 2 * KS - 1
        bias_index = (kr[None, :] - qr[:, None] + KS - 1) * span + (kc[None, :] - qc[:, None] + KS - 1)
        bias = tl.load(rpb_head + bias_index, mask=inside, other=0.0).to(tl.float32)
        s += bias * LOG2E
    return tl.where(inside, s, float("-inf")), inside


@triton.jit
def _offsets(row, col, s_row, s_col, dilation, a_r, a_c):
    """Element offsets (int64) of sub-grid (a_r, a_c)'s positions (row, col) in a map of strides (s_row, s_col)."""
    return (row * dilation + a_r).to(tl.int64) * s_row + (col * dilation + a_c).to(tl.int64) * s_col


@triton.jit
def _load_rows(base, row, col, s_row, s_col, dilation, a_r, a_c, d, mask, BLOCK_D: tl.constexpr, head_dim):
    """Load [n, BLOCK_D] vectors at sub-grid positions (row, col) of sub-grid (a_r, a_c)."""
    off = _offsets(row, col, s_row, s_col, dilation, a_r, a_c)
    return tl.load(base + off[:, None] + d[None, :], mask=mask[:, None] & (d[None, :] < head_dim), other=0.0)


@triton.jit
def _store_rows(base, image_head, values, row, col, s_row, s_col, dilation, a_r, a_c, d, mask, head_dim):
    """Store [n, BLOCK_D] vectors at sub-grid positions (row, col) of sub-grid (a_r, a_c), where ``mask``,
    in the map ``image_head`` elements past ``base`` (the image's and head's offset)."""
    off = image_head + _offsets(row, col, s_row, s_col, dilation, a_r, a_c)
    tl.store(base + off[:, None] + d[None, :], values.to(base.dtype.element_ty),
             mask=mask[:, None] & (d[None, :] < head_dim))


@triton.jit
def _stat_offsets(b, h, heads, height, width, row, col, dilation, a_r, a_c):
    """Offsets of positions (row, col) of sub-grid (a_r, a_c) in a ``[B, heads, H, W]`` statistic (lse, delta)."""
    return ((b * heads + h) * height + row * dilation + a_r) * width + col * dilation + a_c


@triton.jit
def _rpb_head(RPB, h, KS: tl.constexpr):
    """Head ``h``'s ``(2k-1)²`` bias table."""
    return RPB + h * (2 * KS - 1) * (2 * KS - 1)


@triton.jit
def _program(heads, tiles_r, tiles_c, dilation, height, width, TILE_R: tl.constexpr, TILE_C: tl.constexpr):
    """(image, head, sub-grid offsets, first tile row/col, sub-grid lengths) of this program."""
    pid_bh = tl.program_id(0)
    a_r, a_c, r0, c0, len_r, len_c = _decode_tile(tl.program_id(1), tiles_r, tiles_c, dilation, height, width, TILE_R, TILE_C)
    return (pid_bh // heads).to(tl.int64), pid_bh % heads, a_r, a_c, r0, c0, len_r, len_c


@triton.jit
def _halo_origin(r0, c0, len_r, len_c, KS: tl.constexpr):
    """Sub-grid position of the first key of a query tile's halo: its first query's window start."""
    return _window_start(tl.minimum(r0, len_r - 1), len_r, KS), _window_start(tl.minimum(c0, len_c - 1), len_c, KS)


@triton.jit
def _key_chunk(k_base, v_base, skr, skc, svr, svc, halo_r, halo_c, chunk, dilation, a_r, a_c, len_r, len_c, d, head_dim,
               CHUNK_R: tl.constexpr, HALO_C: tl.constexpr, BLOCK_D: tl.constexpr):
    """Halo rows ``[chunk·CHUNK_R, +CHUNK_R)`` of a query tile: key and value vectors, and their positions."""
    n = tl.arange(0, CHUNK_R * HALO_C)
    kr = halo_r + chunk * CHUNK_R + n // HALO_C
    kc = halo_c + n % HALO_C
    k_ok = (kr < len_r) & (kc < len_c)
    k = _load_rows(k_base, kr, kc, skr, skc, dilation, a_r, a_c, d, k_ok, BLOCK_D, head_dim)
    v = _load_rows(v_base, kr, kc, svr, svc, dilation, a_r, a_c, d, k_ok, BLOCK_D, head_dim)
    return kr, kc, k, v


@triton.jit
def na2d_fwd_kernel(
    Q, K, V, RPB, OUT, LSE,
    sqb, sqh, sqr, sqc, skb, skh, skr, skc, svb, svh, svr, svc, sob, soh, sor, soc,
    heads, height, width, head_dim, dilation, tiles_r, tiles_c, scale_log2,
    KS: tl.constexpr, HAS_RPB: tl.constexpr, TILE_R: tl.constexpr, TILE_C: tl.constexpr,
    HALO_R: tl.constexpr, HALO_C: tl.constexpr, CHUNK_R: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    b, h, a_r, a_c, r0, c0, len_r, len_c = _program(heads, tiles_r, tiles_c, dilation, height, width, TILE_R, TILE_C)
    qr, qc, q_valid, wr, wc = _query_tile(r0, c0, len_r, len_c, TILE_R, TILE_C, KS)
    d = tl.arange(0, BLOCK_D)
    q = _load_rows(Q + b * sqb + h * sqh, qr, qc, sqr, sqc, dilation, a_r, a_c, d, q_valid | True, BLOCK_D, head_dim)
    rpb_head = _rpb_head(RPB, h, KS)
    halo_r, halo_c = _halo_origin(r0, c0, len_r, len_c, KS)

    m_i = tl.full([TILE_R * TILE_C], float("-inf"), tl.float32)
    l_i = tl.zeros([TILE_R * TILE_C], tl.float32)
    acc = tl.zeros([TILE_R * TILE_C, BLOCK_D], tl.float32)
    for chunk in range(0, (HALO_R + CHUNK_R - 1) // CHUNK_R):
        kr, kc, k, v = _key_chunk(K + b * skb + h * skh, V + b * svb + h * svh, skr, skc, svr, svc, halo_r, halo_c, chunk,
                                  dilation, a_r, a_c, len_r, len_c, d, head_dim, CHUNK_R, HALO_C, BLOCK_D)
        s, _ = _scores_log2(q, k, qr, qc, wr, wc, kr, kc, rpb_head, scale_log2, KS, HAS_RPB, PRECISION, UPCAST)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # no key of this query in the chunk yet
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _mma(p.to(v.dtype), v, PRECISION, UPCAST)
        m_i = m_new

    _store_rows(OUT, b * sob + h * soh, acc / l_i[:, None], qr, qc, sor, soc, dilation, a_r, a_c, d, q_valid, head_dim)
    tl.store(LSE + _stat_offsets(b, h, heads, height, width, qr, qc, dilation, a_r, a_c), m_i + tl.log2(l_i), mask=q_valid)


@triton.jit
def _store_key_grads(DK, DV, dk, dv, b, h, kr, kc, valid, dilation, a_r, a_c, d, head_dim,
                     skgb, skgh, skgr, skgc, svgb, svgh, svgr, svgc):
    """Write [n, BLOCK_D] key and value gradients at sub-grid positions (kr, kc) of sub-grid (a_r, a_c)."""
    _store_rows(DK, b * skgb + h * skgh, dk, kr, kc, skgr, skgc, dilation, a_r, a_c, d, valid, head_dim)
    _store_rows(DV, b * svgb + h * svgh, dv, kr, kc, svgr, svgc, dilation, a_r, a_c, d, valid, head_dim)


@triton.jit
def na2d_bwd_dq_kernel(
    Q, K, V, RPB, OUT, DOUT, LSE, DELTA, DQ, DRPB, DK, DV,
    sqb, sqh, sqr, sqc, skb, skh, skr, skc, svb, svh, svr, svc, sob, soh, sor, soc,
    sgb, sgh, sgr, sgc, sdb, sdh, sdr, sdc, skgb, skgh, skgr, skgc, svgb, svgh, svgr, svgc,
    heads, height, width, head_dim, dilation, tiles_r, tiles_c, scale_log2, scale,
    KS: tl.constexpr, HAS_RPB: tl.constexpr, RPB_GRAD: tl.constexpr, TILE_R: tl.constexpr, TILE_C: tl.constexpr,
    HALO_R: tl.constexpr, HALO_C: tl.constexpr, CHUNK_R: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BINS_R: tl.constexpr, BINS_C: tl.constexpr, SPLIT_BINS: tl.constexpr, FUSED_KV: tl.constexpr,
):
    """dQ and the per-program d-rpb tables; with ``FUSED_KV`` also dK and dV. That mode serves
    sub-grids no larger than a tile (DiNAT's dilated layers at 224²: 7×7): one program holds every
    query and, in its single key chunk, every key of its sub-grid, so it owns their gradients and
    the dK/dV pass, which would score the same pairs again, is not launched."""
    b, h, a_r, a_c, r0, c0, len_r, len_c = _program(heads, tiles_r, tiles_c, dilation, height, width, TILE_R, TILE_C)
    qr, qc, q_valid, wr, wc = _query_tile(r0, c0, len_r, len_c, TILE_R, TILE_C, KS)
    d = tl.arange(0, BLOCK_D)
    every = q_valid | True
    q = _load_rows(Q + b * sqb + h * sqh, qr, qc, sqr, sqc, dilation, a_r, a_c, d, every, BLOCK_D, head_dim)
    o = _load_rows(OUT + b * sob + h * soh, qr, qc, sor, soc, dilation, a_r, a_c, d, every, BLOCK_D, head_dim)
    do = _load_rows(DOUT + b * sgb + h * sgh, qr, qc, sgr, sgc, dilation, a_r, a_c, d, every, BLOCK_D, head_dim)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    stat_off = _stat_offsets(b, h, heads, height, width, qr, qc, dilation, a_r, a_c)
    lse = tl.load(LSE + stat_off)
    tl.store(DELTA + stat_off, delta, mask=q_valid)
    rpb_head = _rpb_head(RPB, h, KS)
    halo_r, halo_c = _halo_origin(r0, c0, len_r, len_c, KS)

    dq = tl.zeros([TILE_R * TILE_C, BLOCK_D], tl.float32)
    if FUSED_KV:
        tl.static_assert(CHUNK_R >= HALO_R, "FUSED_KV needs the whole sub-grid in one key chunk")
        dk = tl.zeros([CHUNK_R * HALO_C, BLOCK_D], tl.float32)
        dv = tl.zeros([CHUNK_R * HALO_C, BLOCK_D], tl.float32)
    if RPB_GRAD:
        # 0/1 matrices of the bias-bin reduction: columns (query col, key col) -> key col - query col
        x = tl.arange(0, TILE_C * HALO_C)
        jc = tl.arange(0, BINS_C)
        col_bins = ((x % HALO_C - x // HALO_C + TILE_C - 1)[:, None] == jc[None, :]).to(tl.float32)
        y = tl.arange(0, TILE_R * CHUNK_R)
        jr = tl.arange(0, BINS_R)
        bins = tl.zeros([BINS_R, BINS_C], tl.float32)
    for chunk in range(0, (HALO_R + CHUNK_R - 1) // CHUNK_R):
        kr, kc, k, v = _key_chunk(K + b * skb + h * skh, V + b * svb + h * svh, skr, skc, svr, svc, halo_r, halo_c, chunk,
                                  dilation, a_r, a_c, len_r, len_c, d, head_dim, CHUNK_R, HALO_C, BLOCK_D)
        s, inside = _scores_log2(q, k, qr, qc, wr, wc, kr, kc, rpb_head, scale_log2, KS, HAS_RPB, PRECISION, UPCAST)
        p = tl.where(inside & q_valid[:, None], tl.exp2(s - lse[:, None]), 0.0)
        dp = _mma(do, tl.trans(v), PRECISION, UPCAST)
        ds = p * (dp - delta[:, None])  # gradient of the natural-unit score (and of its bias term)
        dq += _mma(ds.to(k.dtype), k, PRECISION, UPCAST)
        if FUSED_KV:
            dv += _mma(tl.trans(p).to(do.dtype), do, PRECISION, UPCAST)
            dk += _mma(tl.trans(ds).to(q.dtype), q, PRECISION, UPCAST)
        if RPB_GRAD:
            # [q_row, q_col, k_row, k_col] -> [(q_row, k_row), (q_col, k_col)]
            ds2 = tl.reshape(tl.permute(tl.reshape(ds, (TILE_R, TILE_C, CHUNK_R, HALO_C)), (0, 2, 1, 3)),
                             (TILE_R * CHUNK_R, TILE_C * HALO_C))
            row_bins = ((y % CHUNK_R + chunk * CHUNK_R - y // CHUNK_R + TILE_R - 1)[None, :] == jr[:, None]).to(tl.float32)
            if SPLIT_BINS:
                # half-precision tensor cores, exact 0/1 factors, dS split in two bf16 parts (~16 bits)
                hi = ds2.to(tl.bfloat16)
                lo = (ds2 - hi.to(tl.float32)).to(tl.bfloat16)
                cb = col_bins.to(tl.bfloat16)
                per_col = _mma(hi, cb, PRECISION, UPCAST) + _mma(lo, cb, PRECISION, UPCAST)
                pc_hi = per_col.to(tl.bfloat16)
                pc_lo = (per_col - pc_hi.to(tl.float32)).to(tl.bfloat16)
                rb = row_bins.to(tl.bfloat16)
                bins += _mma(rb, pc_hi, PRECISION, UPCAST) + _mma(rb, pc_lo, PRECISION, UPCAST)
            else:
                per_col = _mma(ds2, col_bins, PRECISION, UPCAST)
                bins += _mma(row_bins, per_col, PRECISION, UPCAST)

    _store_rows(DQ, b * sdb + h * sdh, dq * scale, qr, qc, sdr, sdc, dilation, a_r, a_c, d, q_valid, head_dim)
    if FUSED_KV:  # the key slots of the one chunk, as _key_chunk laid them out
        n = tl.arange(0, CHUNK_R * HALO_C)
        kr = halo_r + n // HALO_C
        kc = halo_c + n % HALO_C
        _store_key_grads(DK, DV, dk * scale, dv, b, h, kr, kc, (kr < len_r) & (kc < len_c), dilation, a_r, a_c, d, head_dim,
                         skgb, skgh, skgr, skgc, svgb, svgh, svgr, svgc)
    if RPB_GRAD:
        # bin (jr, jc) holds key - query = (jr - (TILE_R-1) + halo_r - r0, jc - (TILE_C-1) + halo_c - c0)
        span = 2 * KS - 1
        br = jr - (TILE_R - 1) + halo_r - r0 + KS - 1
        bc = jc - (TILE_C - 1) + halo_c - c0 + KS - 1
        slot = DRPB + (tl.program_id(0).to(tl.int64) * tl.num_programs(1) + tl.program_id(1)) * span * span
        ok = (br[:, None] >= 0) & (br[:, None] < span) & (bc[None, :] >= 0) & (bc[None, :] < span)
        tl.store(slot + br[:, None] * span + bc[None, :], bins, mask=ok)


@triton.jit
def _first_query(key, KS: tl.constexpr):
    # the first query whose window reaches ``key`` (the clamp at the start is the only border it meets)
    return tl.where(key - KS + 1 <= 0, 0, key - KS + 1 + KS // 2)


@triton.jit
def _last_query(key, sub_len, KS: tl.constexpr):
    # the last query whose window starts at or before ``key``
    return tl.where(key >= sub_len - KS, sub_len - 1, key + KS // 2)


@triton.jit
def na2d_bwd_dkdv_kernel(
    Q, K, V, RPB, DOUT, LSE, DELTA, DK, DV,
    sqb, sqh, sqr, sqc, skb, skh, skr, skc, svb, svh, svr, svc, sgb, sgh, sgr, sgc,
    skgb, skgh, skgr, skgc, svgb, svgh, svgr, svgc,
    heads, height, width, head_dim, dilation, tiles_r, tiles_c, scale_log2, scale,
    KS: tl.constexpr, HAS_RPB: tl.constexpr, TILE_R: tl.constexpr, TILE_C: tl.constexpr,
    CHUNK_QR: tl.constexpr, CHUNK_QC: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    b, h, a_r, a_c, r0, c0, len_r, len_c = _program(heads, tiles_r, tiles_c, dilation, height, width, TILE_R, TILE_C)
    kr, kc, k_valid = _tile_positions(r0, c0, len_r, len_c, TILE_R, TILE_C)
    d = tl.arange(0, BLOCK_D)
    k = _load_rows(K + b * skb + h * skh, kr, kc, skr, skc, dilation, a_r, a_c, d, k_valid, BLOCK_D, head_dim)
    v = _load_rows(V + b * svb + h * svh, kr, kc, svr, svc, dilation, a_r, a_c, d, k_valid, BLOCK_D, head_dim)
    rpb_head = _rpb_head(RPB, h, KS)

    last_r = tl.minimum(r0 + TILE_R, len_r) - 1
    last_c = tl.minimum(c0 + TILE_C, len_c) - 1
    q_lo_r = _first_query(tl.minimum(r0, len_r - 1), KS)
    q_hi_r = _last_query(last_r, len_r, KS)
    q_lo_c = _first_query(tl.minimum(c0, len_c - 1), KS)
    q_hi_c = _last_query(last_c, len_c, KS)

    m = tl.arange(0, CHUNK_QR * CHUNK_QC)
    q_base = Q + b * sqb + h * sqh
    g_base = DOUT + b * sgb + h * sgh
    dk = tl.zeros([TILE_R * TILE_C, BLOCK_D], tl.float32)
    dv = tl.zeros([TILE_R * TILE_C, BLOCK_D], tl.float32)
    for row0 in range(q_lo_r, q_hi_r + 1, CHUNK_QR):
        for col0 in range(q_lo_c, q_hi_c + 1, CHUNK_QC):
            qr = row0 + m // CHUNK_QC
            qc = col0 + m % CHUNK_QC
            q_ok = (qr <= q_hi_r) & (qc <= q_hi_c)
            qr = tl.minimum(qr, q_hi_r)
            qc = tl.minimum(qc, q_hi_c)
            wr = _window_start(qr, len_r, KS)
            wc = _window_start(qc, len_c, KS)
            q = _load_rows(q_base, qr, qc, sqr, sqc, dilation, a_r, a_c, d, q_ok, BLOCK_D, head_dim)
            do = _load_rows(g_base, qr, qc, sgr, sgc, dilation, a_r, a_c, d, q_ok, BLOCK_D, head_dim)
            stat_off = _stat_offsets(b, h, heads, height, width, qr, qc, dilation, a_r, a_c)
            lse = tl.load(LSE + stat_off, mask=q_ok, other=0.0)
            delta = tl.load(DELTA + stat_off, mask=q_ok, other=0.0)
            # the forward's [queries, keys] scores for this chunk of queries and the tile's keys
            s, inside = _scores_log2(q, k, qr, qc, wr, wc, kr, kc, rpb_head, scale_log2, KS, HAS_RPB, PRECISION, UPCAST)
            p = tl.where(inside & q_ok[:, None] & k_valid[None, :], tl.exp2(s - lse[:, None]), 0.0)
            dv += _mma(tl.trans(p).to(do.dtype), do, PRECISION, UPCAST)
            dp = _mma(do, tl.trans(v), PRECISION, UPCAST)
            ds = p * (dp - delta[:, None])
            dk += _mma(tl.trans(ds).to(q.dtype), q, PRECISION, UPCAST)

    _store_key_grads(DK, DV, dk * scale, dv, b, h, kr, kc, k_valid, dilation, a_r, a_c, d, head_dim,
                     skgb, skgh, skgr, skgc, svgb, svgh, svgr, svgc)
