"""Neighborhood attention operator speed at DiNAT-tiny's stage shapes (224²), per backend.

The yardstick is Swin-style attention over non-overlapping 7×7 windows of the same tokens
(``scaled_dot_product_attention``), timed in the same test, one call before each timed round of
the backend, so that the ratio in each row is immune to the machine's drift.
"""
import statistics
import time

import pytest
import torch
import torch.nn.functional as F

from dinat_timm.bench.session import measure, sync
from dinat_timm.bench.steps import DTYPES
from dinat_timm.ops import neighborhood_attention_2d
from dinat_timm.ops.chooser import why_not

# (stage, map size, heads, dilations used by DiNAT-tiny in that stage); head dim 32
STAGES = [(0, 56, 2, (1, 8)), (1, 28, 4, (1, 4)), (2, 14, 8, (1, 2)), (3, 7, 16, (1,))]
SHAPES = [(s, n, h, d) for s, n, h, ds in STAGES for d in ds]
CSV = "op_speed.csv"
SLOW_ON_CPU = ("gather", "flex", "natten", "triton")  # triton on CPU only runs in Triton's interpreter


def windowed_attention(q, k, v, window=7):
    b, h, height, width, dim = q.shape

    def part(t):
        t = t.view(b, h, height // window, window, width // window, window, dim)
        return t.permute(0, 2, 4, 1, 3, 5, 6).reshape(-1, h, window * window, dim)

    return F.scaled_dot_product_attention(part(q), part(k), part(v))


def _step(fn, inputs, backward):
    def run():
        out = fn(*inputs)
        if backward:
            out.sum().backward()

    return run


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"stage{s[0]}-{s[1]}x{s[1]}-h{s[2]}-d{s[3]}")
@pytest.mark.parametrize("backend", ["windowed_sdpa"] + ["triton", "window", "tiled", "gather", "natten", "natten_legacy", "flex"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_op_speed(benchmark, leaderboard, bench_options, dtype, backend, shape, mode):
    # backends and dtypes the options do not ask for, or the device cannot run, are deselected at
    # collection (conftest.py), with the reason in the end-of-run summary
    stage, size, heads, dilation = shape
    device = bench_options.get("device")
    batch = bench_options.int("op-batch-size", 1)
    backward = mode == "fwd_bwd"
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, size, size, 32, generator=gen).to(device, DTYPES[dtype]).requires_grad_(backward)
               for _ in range(3))
    rpb = torch.randn(heads, 13, 13, generator=gen).to(device).requires_grad_(backward)
    if backend == "windowed_sdpa":
        fn, inputs = windowed_attention, (q, k, v)
    else:
        if why_not(backend, q, rpb, backward) and why_not(backend, q, None, backward) is None:
            rpb = None  # a backend without bias support (NATTEN >= 0.20) is timed without one
        reason = why_not(backend, q, rpb, backward)
        if reason:
            pytest.skip(reason)
        fn, inputs = neighborhood_attention_2d, (q, k, v, 7, dilation, rpb, None, backend)
    columns = dict(
        suite="op", backend=backend, mode=mode, stage=stage, map_size=size, heads=heads, head_dim=32,
        kernel_size=7, dilation=dilation, batch=batch, dtype=dtype, rpb=int(rpb is not None),
    )
    leaderboard.context(CSV, **columns)
    rounds, warmup = bench_options.int("rounds", 1), bench_options.int("warmup")
    if backend in SLOW_ON_CPU and device == "cpu":
        rounds, warmup = min(rounds, 2), min(warmup, 1)  # unfused paths: seconds a call, not milliseconds
    yardstick_step, yardstick_times = _step(windowed_attention, (q, k, v), backward), []

    def time_yardstick():
        start = time.perf_counter()
        yardstick_step()
        sync(device)
        yardstick_times.append(time.perf_counter() - start)

    measured = measure(benchmark, _step(fn, inputs, backward), device, rounds, warmup, time_yardstick)
    seconds, yardstick = measured.seconds, statistics.median(yardstick_times[warmup:])
    benchmark.extra_info.update(columns)
    benchmark.extra_info["ratio_vs_windowed"] = seconds / yardstick
    leaderboard.record(CSV, measured=measured, **columns, median_ms=seconds * 1e3, windowed_ms=yardstick * 1e3,
                       ratio_vs_windowed=seconds / yardstick)
