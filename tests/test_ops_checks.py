"""The operator's input checks and edge inputs (``dinat_timm.ops.checks``): the right answer, as NATTEN gives
it, or one error naming the problem."""
import pytest
import torch

import dinat_timm  # noqa: F401
from dinat_timm.ops import neighborhood_attention_2d
from dinat_timm.ops.chooser import why_not


def _backends(q, rpb, grad):
    return [b for b in ("tiled", "gather", "flex", "triton", "natten_legacy") if why_not(b, q, rpb, grad) is None]


def test_every_backend_serves_an_empty_batch():
    q = torch.randn(0, 2, 14, 14, 8)
    for backend in _backends(torch.randn(1, 2, 14, 14, 8), torch.zeros(2, 13, 13), False):
        leaves = [q.clone().requires_grad_() for _ in range(3)]
        rpb = torch.randn(2, 13, 13, requires_grad=True)
        out = neighborhood_attention_2d(*leaves, 7, 2, rpb, backend=backend)
        out.sum().backward()
        assert out.shape == q.shape, backend
        assert all(t.grad.shape == q.shape for t in leaves) and torch.equal(rpb.grad, torch.zeros_like(rpb)), backend


@pytest.mark.parametrize("rpb,match", [(torch.zeros(2, 13, 13, dtype=torch.bool), "rpb .* floating point .* torch.bool"),
                                       (torch.zeros(2, 13, 13, dtype=torch.int64), "rpb .* floating point .* torch.int64")])
def test_a_non_floating_bias_is_refused(rpb, match):
    q = torch.randn(1, 2, 14, 14, 8)
    with pytest.raises(TypeError, match=match):
        neighborhood_attention_2d(q, q, q, 7, 1, rpb)


def test_head_dim_zero_is_refused():
    q = torch.randn(1, 2, 14, 14, 0)
    with pytest.raises(ValueError, match="head_dim .* must be >= 1"):
        neighborhood_attention_2d(q, q, q, 7, 1)


@pytest.mark.parametrize("where", ["key", "value"])
def test_a_non_finite_key_or_value_reaches_only_the_queries_that_see_it(where):
    """As NATTEN: a query's output depends on its own k² keys only. The tiled and fused backends
    score a shared halo, where NaN - inf is NaN; the operator routes such calls to the exact path."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 28, 28, 16, generator=g) for _ in range(3))
    rpb = torch.randn(2, 13, 13, generator=g)
    (k if where == "key" else v)[1, 0, 5, 6] = float("nan")
    (k if where == "key" else v)[0, 1, 20, 21] = float("inf")
    reference = neighborhood_attention_2d(q.double(), k.double(), v.double(), 7, 2, rpb.double(), backend="gather")
    affected = ~reference.isfinite()
    assert 0 < affected.any(-1).sum() < 2 * 2 * 28 * 28 // 4  # some queries, far from all
    for backend in _backends(q, rpb, False):
        out = neighborhood_attention_2d(q, k, v, 7, 2, rpb, backend=backend)
        assert torch.equal(~out.isfinite(), affected), backend
        torch.testing.assert_close(out[~affected], reference[~affected].float(), atol=1e-5, rtol=0, msg=backend)


def test_every_backend_agrees_on_an_all_minus_inf_bias():
    """Every score -inf: softmax of nothing is NaN (NATTEN's answer), on every backend."""
    q = torch.randn(1, 2, 14, 14, 8)
    rpb = torch.full((2, 13, 13), float("-inf"))
    for backend in _backends(q, rpb, False):
        assert neighborhood_attention_2d(q, q, q, 7, 1, rpb, backend=backend).isnan().all(), backend
