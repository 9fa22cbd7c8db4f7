"""The operator's cost as PyTorch's FlopCounterMode counts it (``dinat_timm.ops.flops``): one registered formula
per call, whatever backend computes it, equal to what the exact per-neighborhood backend's own matmuls count, and
the models' totals equal to the papers' GFLOPs."""
import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import dinat_timm  # noqa: F401  (registers the models)
from dinat_timm.ops import neighborhood_attention_2d
from dinat_timm.ops.backends import BACKENDS
from dinat_timm.ops.chooser import why_not
from dinat_timm.results.tables import paper_table

SHAPES = [(2, 3, 14, 13, 8, 5, 2, True), (1, 2, 21, 21, 16, 7, 3, False), (1, 1, 7, 7, 4, 7, 1, True)]


def _flops(fn, *args):
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


@pytest.mark.parametrize("backend", ["auto", "tiled", "gather", "window", "flex"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:5])) + f"-k{s[5]}d{s[6]}")
def test_every_backend_counts_what_the_exact_backend_s_own_matmuls_count(backend, shape):
    b, h, height, width, dim, k, d, with_rpb = shape
    gen = torch.Generator().manual_seed(0)
    q, key, v = (torch.randn(b, h, height, width, dim, generator=gen) for _ in range(3))
    rpb = torch.randn(h, 2 * k - 1, 2 * k - 1, generator=gen) if with_rpb else None
    if backend != "auto" and why_not(backend, q, rpb, False):
        pytest.skip(why_not(backend, q, rpb, False))
    if backend == "window" and not height == width == k * d:
        pytest.skip("the window backend serves maps of exactly k·d a side")
    # the gather backend called directly: its matmuls as they run (k² keys per query, no padding)
    exact = _flops(BACKENDS["gather"].neighborhood_attention, q, key, v, k, d, rpb, dim ** -0.5)
    assert exact == 4 * b * h * height * width * k * k * dim
    assert _flops(neighborhood_attention_2d, q, key, v, k, d, rpb, None, backend) == exact


@pytest.mark.parametrize("name", ["dinat_mini", "nat_mini", "dinat_tiny", "dinat_s_tiny", "nat_isotropic_small"])
def test_a_models_count_is_the_papers(name):
    """GMACs of one 224 px forward on the default backend (and DiNAT's window layout): the papers' GFLOPs."""
    paper = paper_table().set_index("model").loc[name, "paper_gflops"]
    model = timm.create_model(name).eval()
    with torch.no_grad():
        gmacs = _flops(model, torch.randn(1, 3, 224, 224)) / 2e9
        assert round(gmacs, 1) == paper, gmacs
        if name.startswith("dinat_") and not name.startswith(("dinat_s", "dinat_iso")):
            model.set_attn_layout("window")
            assert _flops(model, torch.randn(1, 3, 224, 224)) / 2e9 == pytest.approx(gmacs, rel=1e-9)
