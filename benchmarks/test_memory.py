"""Peak memory of one inference / training step (see ``dinat_timm.bench.memory`` for how).

``--memory-breakdown 1`` also writes, per row, which blocks hold the bytes alive at the peak
(``memory_breakdown.csv``: one line per block, forward activations and gradients apart).
"""
import pytest

from dinat_timm.bench.memory import peak_memory
from dinat_timm.bench.steps import cannot_run_at, config_columns, model_input_size, unsupported_dtype

CSV = "memory.csv"
BREAKDOWN_CSV = "memory_breakdown.csv"


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_peak_memory(benchmark, leaderboard, bench_config, bench_options, mode):
    cfg = bench_config
    if cfg.compile:
        pytest.skip("memory is measured eagerly, not compiled")
    why = unsupported_dtype(cfg.device, cfg.dtype) or cannot_run_at(cfg)  # said in the summary, not timed
    if why:
        pytest.skip(why)
    columns = dict(suite="memory", **config_columns(cfg), mode=mode, batch=cfg.batch_size,
                   img_size=cfg.img_size or model_input_size(cfg.model))
    leaderboard.context(CSV, **columns)
    breakdown = bench_options.flag("memory-breakdown")
    result = {}

    def measure():
        result.update(peak_memory(cfg, mode, breakdown=breakdown))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    rss = result["rss_peak_mb"]
    row = dict(columns, peak_mem_mb=round(result["peak_mem_mb"], 1), method=result["method"],
               rss_peak_mb=None if rss is None else round(rss, 1))
    benchmark.extra_info.update(row)
    leaderboard.record(CSV, **row)
    leaderboard.record_detail(BREAKDOWN_CSV, [
        dict(columns, suite="memory_breakdown", block=block, held_mb=round(held / 2**20, 3),
             peak_mem_mb=row["peak_mem_mb"], method=row["method"])
        for block, held in (result["by_block"] or {}).items()])
