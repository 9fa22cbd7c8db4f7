"""Inference and training throughput (images/s, step time) per model and configuration.

Reference timm models (``--reference-models``, Swin-T by default) run in the same session, so
that speed can be read — and compared in CI — as a ratio to them on the same machine.
"""
import pytest

from dinat_timm.bench.session import measure
from dinat_timm.bench.steps import (
    build_model,
    cannot_run_at,
    config_columns,
    count_gmacs,
    inference_step,
    param_count,
    resolve_img_size,
    train_step,
    unsupported_dtype,
)

CSV = "throughput.csv"
_GMACS = {}


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_throughput(benchmark, leaderboard, bench_options, bench_config, mode):
    cfg = bench_config
    why = unsupported_dtype(cfg.device, cfg.dtype) or cannot_run_at(cfg)  # said in the summary, not timed
    if why:
        pytest.skip(why)
    model = build_model(cfg)
    size = resolve_img_size(model, cfg.img_size)
    columns = dict(suite="throughput", **config_columns(cfg), **{f"{mode}_img_size": size, f"{mode}_batch_size": cfg.batch_size})
    leaderboard.context(CSV, **columns)
    step = (inference_step if mode == "infer" else train_step)(cfg, model)
    measured = measure(benchmark, step, cfg.device, bench_options.int("rounds", 1), bench_options.int("warmup"))
    key = (cfg.model, size)
    if key not in _GMACS:
        _GMACS[key] = count_gmacs(cfg.model, size)
    seconds = measured.seconds
    row = dict(
        columns,
        **{f"{mode}_samples_per_sec": round(cfg.batch_size / seconds, 3), f"{mode}_step_time": round(seconds * 1e3, 3)},
        param_count=round(param_count(model), 2),
        gmacs=round(_GMACS[key], 3),
    )
    benchmark.extra_info.update(row)
    leaderboard.record(CSV, measured=measured, **row)
