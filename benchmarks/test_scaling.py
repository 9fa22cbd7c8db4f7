"""How backbone cost grows with the image: DiNAT-T and NAT-T against window (Swin-T), convolution
(ConvNeXt-T) and global attention (ViT-S), as ``features_only`` backbones, forward and training step,
at growing square sizes (``--scaling-sizes``; 224-448 px on CPU, 224-1024 px on a GPU).

Rows go to ``scaling.csv``; ``boards`` fits each model's growth exponent of time and memory against
the tokens (``leaderboard_scaling.csv``, ``scaling.png``, and a table in ``LEADERBOARD.md``).
"""
import pytest
import torch

from dinat_timm.bench.memory import step_peak_memory
from dinat_timm.bench.scaling import build_backbone, check_fits, scaling_batch, step_fn, tokens
from dinat_timm.bench.session import measure
from dinat_timm.bench.steps import is_dinat_model

CSV = "scaling.csv"


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_scaling(benchmark, leaderboard, bench_options, scaling_model, img_size, mode):
    device, dtype = bench_options.get("device"), bench_options.dtypes()[0]
    batch = scaling_batch(bench_options)
    columns = dict(suite="scaling", model=scaling_model, mode=mode, img_size=img_size, batch_size=batch, dtype=dtype,
                   backend=bench_options.list("backends")[0] if is_dinat_model(scaling_model) else "timm")
    leaderboard.context(CSV, **columns)
    check_fits(scaling_model, img_size, batch, mode, device)  # an estimate, before anything is allocated
    torch.manual_seed(0)
    backbone, dilations = build_backbone(scaling_model, img_size, device, columns["backend"])
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    step = step_fn(backbone, x, mode, dtype)
    measured = measure(benchmark, step, device, bench_options.int("scaling-rounds", 1), warmup=1)
    memory = step_peak_memory(step, device)
    row = dict(columns, dilations=dilations, tokens=tokens(backbone, img_size),
               samples_per_sec=round(batch / measured.seconds, 3), step_time=round(measured.seconds * 1e3, 3),
               peak_mem_mb=round(memory.mb, 1), method=memory.method)
    benchmark.extra_info.update(row)
    leaderboard.record(CSV, measured=measured, **row)
