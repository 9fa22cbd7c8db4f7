"""Backends against the reference gather on random shapes, in low precision, and bad input."""
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dinat_timm.ops import choose_backend, neighborhood_attention_2d
from dinat_timm.ops.chooser import preference, why_not
from dinat_timm.ops.geometry import neighborhood_1d, padded_halo_fits


@st.composite
def problems(draw):
    kernel_size = draw(st.sampled_from([3, 5, 7, 9]))
    dilation = draw(st.integers(1, 4))
    height = draw(st.integers(kernel_size * dilation, kernel_size * dilation + 12))
    width = draw(st.integers(kernel_size * dilation, kernel_size * dilation + 12))
    batch, heads, dim = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.sampled_from([4, 8, 16]))
    with_rpb = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return batch, heads, height, width, dim, kernel_size, dilation, with_rpb, seed


def _inputs(batch, heads, height, width, dim, kernel_size, with_rpb, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, height, width, dim, generator=g).to(dtype) for _ in range(3))
    rpb = torch.randn(heads, 2 * kernel_size - 1, 2 * kernel_size - 1, generator=g).to(dtype) if with_rpb else None
    return q, k, v, rpb


def _grads(backend, q, k, v, kernel_size, dilation, rpb):
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    rpb_leaf = None if rpb is None else rpb.clone().requires_grad_()
    out = neighborhood_attention_2d(*leaves, kernel_size, dilation, rpb_leaf, backend=backend)
    out.backward(torch.ones_like(out) * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype))
    grads = [t.grad for t in leaves] + ([] if rpb is None else [rpb_leaf.grad])
    return out.detach(), grads


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_tiled_matches_reference_forward_and_backward(problem):
    batch, heads, height, width, dim, ks, dil, with_rpb, seed = problem
    q, k, v, rpb = _inputs(batch, heads, height, width, dim, ks, with_rpb, seed)
    ref_out, ref_grads = _grads("gather", q, k, v, ks, dil, rpb)
    out, grads = _grads("tiled", q, k, v, ks, dil, rpb)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tile", [3, 5, 8, (4, 7), (7, 4), (2, 9)], ids=str)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_tiled_is_exact_for_every_tile_size(tile, problem):
    """Tiles of any shape (partial last tiles, whole sub-grids, the indexed fallback), both ways."""
    from dinat_timm.ops.backends import tiled

    batch, heads, height, width, dim, ks, dil, with_rpb, seed = problem
    q, k, v, rpb = _inputs(batch, heads, height, width, dim, ks, with_rpb, seed)
    ref_out, ref_grads = _grads("gather", q, k, v, ks, dil, rpb)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)] + ([] if rpb is None else [rpb.clone().requires_grad_()])
    rpb_leaf = leaves[3] if rpb is not None else None
    out = tiled.neighborhood_attention(*leaves[:3], ks, dil, rpb_leaf, dim**-0.5, tile=tile)
    out.backward(torch.ones_like(out) * torch.linspace(-1, 1, out.shape[-1]))
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for leaf, r in zip(leaves, ref_grads):
        torch.testing.assert_close(leaf.grad, r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel_size", [3, 5, 7, 9, 11])
def test_padded_halo_fits_exactly_when_every_window_lies_in_its_tiles_halo(kernel_size):
    """The strip path's precondition, checked against the neighborhoods themselves."""
    half = kernel_size // 2
    for dilation in (1, 2, 3):
        for length in range(kernel_size * dilation, kernel_size * dilation + 30):
            sub_len = -(-length // dilation)
            neighbors, _ = neighborhood_1d(length, kernel_size, dilation, None)
            for tile in range(1, 12):
                if tile >= sub_len or length % dilation:
                    assert not padded_halo_fits(length, kernel_size, dilation, tile)
                    continue
                inside = all(
                    first - half <= neighbors[p * dilation].min() // dilation
                    and neighbors[p * dilation].max() // dilation < first + tile + half
                    for first in range(0, sub_len, tile)
                    for p in range(first, min(first + tile, sub_len))
                )
                assert padded_halo_fits(length, kernel_size, dilation, tile) == inside, (length, dilation, tile)


def test_strip_halos_keep_images_apart():
    """Halos read past their strip into masked slack; that slack is per image, so a non-finite
    key in one image leaves every other image exact (the backend itself, without the operator's
    routing of non-finite calls to the exact per-neighbourhood path)."""
    from dinat_timm.ops.backends import tiled

    q, k, v, rpb = _inputs(3, 2, 28, 28, 16, 7, True, 0)
    k[1, 0, 0, 0] = float("nan")
    v[1, 1, 27, 27] = float("inf")
    ref = neighborhood_attention_2d(q, k, v, 7, 1, rpb, backend="gather")
    out = tiled.neighborhood_attention(q, k, v, 7, 1, rpb, 16**-0.5)
    torch.testing.assert_close(out[[0, 2]], ref[[0, 2]], atol=1e-5, rtol=1e-5)
    assert not out[1].isfinite().all()


@pytest.mark.parametrize("backend", ["flex", "natten"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(problems())
def test_other_backends_match_reference_forward(backend, problem):
    if why_not(backend, torch.empty(1, 1, 9, 9, 8), None, needs_grad=False) is not None:
        pytest.skip(why_not(backend, torch.empty(1, 1, 9, 9, 8), None, needs_grad=False))
    batch, heads, height, width, dim, ks, dil, with_rpb, seed = problem
    q, k, v, rpb = _inputs(batch, heads, height, width, dim, ks, with_rpb, seed)
    assume(why_not(backend, q, rpb, needs_grad=False) is None)  # e.g. natten >= 0.20 and a bias
    ref = neighborhood_attention_2d(q, k, v, ks, dil, rpb, backend="gather")
    out = neighborhood_attention_2d(q, k, v, ks, dil, rpb, backend=backend)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype,atol", [(torch.bfloat16, 3e-2), (torch.float16, 5e-3)])
@pytest.mark.parametrize("shape", [(2, 2, 14, 14, 32, 7, 1), (1, 4, 28, 28, 32, 7, 4), (1, 2, 17, 23, 16, 5, 3)])
def test_low_precision_close_to_fp32_reference(dtype, atol, shape):
    batch, heads, height, width, dim, ks, dil = shape
    q, k, v, rpb = _inputs(batch, heads, height, width, dim, ks, True, 0)
    ref = neighborhood_attention_2d(q, k, v, ks, dil, rpb, backend="gather")
    q, k, v, rpb = (t.to(dtype) for t in (q, k, v, rpb))
    out = neighborhood_attention_2d(q, k, v, ks, dil, rpb, backend="tiled")
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=atol, rtol=0)


@pytest.mark.parametrize("dilation", [1, 2])
def test_tiled_sums_the_bias_gradient_in_the_tables_precision(dilation):
    """A bf16 model's bias table (fp32) gets the sum of every query's gradient for each offset.
    That sum is the bias gather's backward, a scatter-add; in bf16 it rounds (on CUDA after every
    atomic add), so the gather reads the fp32 table and casts after. With a gradient of ones the
    sum is the number of queries that use each offset, from the neighborhoods themselves (tiles
    that divide the map exactly: no padded query stands in)."""
    from dinat_timm.ops.backends import tiled

    height, width, ks, heads, dtype = 56, 56, 7, 2, torch.bfloat16
    args = (height, width, ks, dilation, tiled.DEFAULT_TILE, torch.device("cpu"))
    layout = tiled._strip_layout(*args)
    assert layout is not None
    rpb = torch.zeros(heads, 2 * ks - 1, 2 * ks - 1, requires_grad=True)
    bias = tiled._bias(layout, tiled._strip_layout, args, rpb, heads, dtype)
    assert bias.dtype == dtype
    bias.backward(torch.ones_like(bias))
    per_axis = [
        torch.bincount(neighborhood_1d(n, ks, dilation, None)[1].flatten(), minlength=2 * ks - 1).float()
        for n in (height, width)
    ]
    expected = (per_axis[0][:, None] * per_axis[1][None, :]).expand(heads, -1, -1)
    assert expected.max() > 256  # past bf16's exact integers
    torch.testing.assert_close(rpb.grad, expected, atol=0, rtol=0)


def test_neighborhood_semantics_by_hand():
    """Clamped (shifted) windows on each dilation sub-grid, and the bias index Δ + k - 1."""
    neighbors, bias = neighborhood_1d(9, 3, 2, None)
    # sub-grid 0 = positions 0,2,4,6,8 ; sub-grid 1 = 1,3,5,7
    assert neighbors[0].tolist() == [0, 2, 4]  # left border: shifted, not padded
    assert neighbors[4].tolist() == [2, 4, 6]  # interior: centred
    assert neighbors[8].tolist() == [4, 6, 8]  # right border
    assert neighbors[7].tolist() == [3, 5, 7]  # shorter sub-grid clamps at its own end
    assert bias[0].tolist() == [2, 3, 4] and bias[4].tolist() == [1, 2, 3] and bias[8].tolist() == [0, 1, 2]


# -- the chooser ------------------------------------------------------------------------------------


def test_auto_picks_tiled_on_cpu_in_every_mode():
    q = torch.randn(1, 2, 14, 14, 8)
    rpb = torch.randn(2, 13, 13)
    assert choose_backend(q, rpb, needs_grad=True) == "tiled"
    assert choose_backend(q, None, needs_grad=False) == "tiled"


def test_cuda_preference_never_drops_the_bias():
    order = preference("cuda")
    assert order[0] == "triton"  # fused, with the bias and its gradient
    assert order.index("natten") < order.index("natten_legacy") < order.index("tiled")
    from dinat_timm.ops.backends import natten_modern

    q = torch.randn(1, 2, 14, 14, 8)
    # whatever is installed, the modern backend itself refuses a bias (never drops it)
    assert "relative position bias" in natten_modern.supports(q, torch.zeros(2, 13, 13), needs_grad=False)
    assert why_not("natten", q, torch.zeros(2, 13, 13), needs_grad=False) is not None
    assert "gather" not in preference("cuda") and "gather" not in preference("cpu")
    # compiled flex is far slower than triton on GPUs, and natten / natten_legacy break the graph
    assert preference("cuda", compiling=True) == ["triton", "tiled"]


def test_cpu_flex_backward_is_refused_with_a_reason():
    q = torch.randn(1, 1, 9, 9, 8, requires_grad=True)
    with pytest.raises(ValueError, match="no backward on CPU"):
        neighborhood_attention_2d(q, q, q, 3, 1, backend="flex")


def test_unknown_backend():
    q = torch.randn(1, 1, 9, 9, 8)
    with pytest.raises(ValueError, match="unknown attention backend 'cudnn'"):
        neighborhood_attention_2d(q, q, q, 3, backend="cudnn")


def test_natten_with_bias_is_refused_not_dropped():
    q = torch.randn(1, 2, 14, 14, 8)
    # "relative position bias" where natten >= 0.20 is installed, else why it is unavailable
    with pytest.raises(ValueError, match="backend 'natten' cannot compute this call"):
        neighborhood_attention_2d(q, q, q, 7, 1, torch.zeros(2, 13, 13), backend="natten")


# -- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: (torch.randn(1, 14, 14, 8),) * 3 + (7, 1, None), "must be 5-D"),
        (lambda: (torch.randn(1, 2, 14, 14, 8), torch.randn(1, 2, 14, 13, 8), torch.randn(1, 2, 14, 14, 8), 7, 1, None), "same shape"),
        (lambda: (torch.randn(1, 2, 13, 14, 8),) * 3 + (7, 2, None), r"13x14 is smaller than kernel_size\*dilation"),
        (lambda: (torch.randn(1, 2, 14, 14, 8),) * 3 + (6, 1, None), "odd integer"),
        (lambda: (torch.randn(1, 2, 14, 14, 8),) * 3 + (7, 0, None), "dilation must be >= 1"),
        (lambda: (torch.randn(1, 2, 14, 14, 8),) * 3 + (7, 1, torch.zeros(2, 7, 7)), r"rpb must have shape .*\[2, 13, 13\]"),
        (lambda: (torch.randint(0, 3, (1, 2, 14, 14, 8)),) * 3 + (7, 1, None), "floating point"),
    ],
)
def test_bad_input_is_named(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        neighborhood_attention_2d(*make())


def test_tiled_under_torch_compile_is_one_graph_forward_and_backward(compile_backend):
    q, k, v, rpb = _inputs(2, 2, 28, 28, 16, 7, True, 0)
    ref_out, ref_grads = _grads("gather", q, k, v, 7, 4, rpb)

    def attend(q, k, v, rpb):
        return neighborhood_attention_2d(q, k, v, 7, 4, rpb, backend="tiled")

    compiled = torch.compile(attend, fullgraph=True, backend=compile_backend)  # raises on a graph break
    leaves = [t.clone().requires_grad_() for t in (q, k, v, rpb)]
    out = compiled(*leaves)
    out.backward(torch.ones_like(out) * torch.linspace(-1, 1, out.shape[-1]))
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for leaf, r in zip(leaves, ref_grads):
        torch.testing.assert_close(leaf.grad, r, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", [(2, 2, 25, 40, 8, 5, 5), (1, 3, 56, 56, 8, 7, 1), (2, 1, 14, 21, 4, 7, 1)])
def test_tiled_fp64_is_exact_to_fp64_precision(shape):
    """No hidden fp32 step: forward and backward in fp64 agree with the reference to ~1e-12."""
    batch, heads, height, width, dim, ks, dil = shape
    q, k, v, rpb = _inputs(batch, heads, height, width, dim, ks, True, 3, dtype=torch.float64)
    ref_out, ref_grads = _grads("gather", q, k, v, ks, dil, rpb)
    out, grads = _grads("tiled", q, k, v, ks, dil, rpb)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=1e-10)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-10, rtol=1e-10)
