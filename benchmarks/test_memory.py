"""Peak memory of one inference / training step (see ``dinat_timm.bench.memory`` for how)."""
import pytest

from dinat_timm.bench.memory import peak_memory_mb
from dinat_timm.bench.steps import config_columns, model_input_size

CSV = "memory.csv"


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_peak_memory(benchmark, leaderboard, bench_config, mode):
    cfg = bench_config
    if cfg.compile:
        pytest.skip("memory is measured eagerly, not compiled")
    method = "cuda.max_memory_allocated" if cfg.device.startswith("cuda") else "VmHWM-VmRSS in a fresh process"
    columns = dict(suite="memory", **config_columns(cfg), mode=mode, batch=cfg.batch_size,
                   img_size=cfg.img_size or model_input_size(cfg.model), method=method)
    leaderboard.context(CSV, **columns)
    result = {}

    def measure():
        result["mb"] = peak_memory_mb(cfg, mode)

    benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(columns, peak_mem_mb=result["mb"])
    leaderboard.record(CSV, **columns, peak_mem_mb=round(result["mb"], 1))
