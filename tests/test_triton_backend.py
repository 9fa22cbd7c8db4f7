"""The fused Triton backend against the float64 reference, forward and every gradient.

On a machine without a GPU the kernels run in Triton's interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``), so CI checks the same kernel code that runs on CUDA; with a GPU they run
compiled on it. Shapes are small: the interpreter executes each program in Python.
"""
import os
import subprocess
import sys

import pytest
import torch

from dinat_timm.ops import neighborhood_attention_2d
from dinat_timm.ops.chooser import why_not
from dinat_timm.ops.testing import outputs_and_grads

from _helpers import fixture

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_probe = torch.empty(1, 1, 9, 9, 16, device=DEVICE)
pytestmark = pytest.mark.skipif(why_not("triton", _probe, None, True) is not None,
                                reason=str(why_not("triton", _probe, None, True)))

# batch, heads, height, width, head_dim, kernel, dilation
SHAPES = [
    (2, 2, 14, 14, 32, 7, 1),  # DiNAT's kernel, one 8x8 tile row plus a partial one, clamped borders
    (1, 2, 13, 17, 16, 5, 2),  # non-square, dilation divides neither side: sub-grids of two lengths
    (1, 1, 21, 23, 16, 7, 3),  # three sub-grids a side, the last shorter
    (1, 3, 9, 11, 8, 3, 3),    # the smallest kernel, head_dim 8 (padded to 16 in registers)
    (1, 1, 24, 26, 64, 13, 1), # the largest kernel: halo rows in several chunks; the isotropic head dim
    (1, 2, 16, 16, 24, 7, 2),  # a head dim that is no power of two
    (1, 1, 11, 13, 32, 11, 1), # a map barely larger than the kernel: every window clamped
    (1, 2, 14, 14, 32, 7, 2),  # DiNAT-T's dilated 14² layer: k×k sub-grids, every window a whole sub-grid
]


def _shape_id(s):
    return "b{}h{}-{}x{}-d{}-k{}-dil{}".format(*s)


def _problem(shape, with_rpb, seed=0, dtype=torch.float32):
    batch, heads, height, width, dim, ks, dil = shape
    g = torch.Generator().manual_seed(seed)
    q, k, v, grad = (torch.randn(batch, heads, height, width, dim, generator=g) for _ in range(4))
    rpb = torch.randn(heads, 2 * ks - 1, 2 * ks - 1, generator=g) if with_rpb else None
    return q, k, v, rpb, grad


_run = outputs_and_grads  # (backend, q, k, v, rpb, grad, ks, dil, dtype, device, rpb_dtype=None)


@pytest.mark.parametrize("with_rpb", [True, False], ids=["rpb", "norpb"])
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_fp32_forward_and_gradients_match_float64_reference(shape, with_rpb):
    q, k, v, rpb, grad = _problem(shape, with_rpb)
    ks, dil = shape[5], shape[6]
    ref = _run("gather", q, k, v, rpb, grad, ks, dil, torch.float64, "cpu")
    got = _run("triton", q, k, v, rpb, grad, ks, dil, torch.float32, DEVICE)
    names = ["out", "dq", "dk", "dv", "drpb"]
    for name, g, r in zip(names, got, ref):
        tol = 1e-4 if name == "out" else 1e-3  # the bounds; measured errors are ~1e-6
        torch.testing.assert_close(g, r, atol=tol, rtol=0, msg=name)
    assert len(got) == len(ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_is_as_close_as_the_other_backends(dtype):
    """bf16/fp16 inputs (the rpb stays fp32, as under autocast): errors within those of ``gather``
    run in the same precision, forward and backward, each relative to the float64 reference."""
    shape = (2, 2, 14, 15, 32, 7, 2)
    q, k, v, rpb, grad = _problem(shape, True, seed=1)
    ref = _run("gather", q, k, v, rpb, grad, 7, 2, torch.float64, "cpu")
    same_precision = _run("gather", q, k, v, rpb, grad, 7, 2, dtype, "cpu", rpb_dtype=torch.float32)
    got = _run("triton", q, k, v, rpb, grad, 7, 2, dtype, DEVICE, rpb_dtype=torch.float32)
    for name, g, s, r in zip(["out", "dq", "dk", "dv", "drpb"], got, same_precision, ref):
        scale = r.abs().max()
        assert (g - r).abs().max() / scale <= 2 * (s - r).abs().max() / scale + 1e-3, name


@pytest.mark.parametrize("shape", [(1, 1, 24, 17, 16, 7, 1), (1, 1, 14, 14, 16, 7, 2),
                                   pytest.param((1, 1, 24, 20, 16, 13, 1), marks=pytest.mark.full)], ids=_shape_id)
def test_every_launch_candidate_is_exact(shape, monkeypatch):
    """On a GPU the autotuner may pick any candidate configuration (chunk sizes, whole-halo
    forward, bias bins, query chunks), so each must be exact, not only the first one the other
    tests run: every distinct candidate of each kernel, forced in turn, against float64."""
    from dinat_timm.ops.backends import triton_fused

    ks, dil = shape[5], shape[6]
    q, k, v, rpb, grad = _problem(shape, True)
    halo = triton_fused._halo(q, dil, ks)
    fwd, dq, dkdv = (unique_meta(c) for c in triton_fused._candidates(ks, q.shape[-1], *halo).values())
    ref = _run("gather", q, k, v, rpb, grad, ks, dil, torch.float64, "cpu")
    for i in range(max(len(fwd), len(dq), len(dkdv))):
        chosen = dict(fwd=fwd[i % len(fwd)], dq=dq[i % len(dq)], dkdv=dkdv[i % len(dkdv)])
        monkeypatch.setattr(triton_fused, "_config", lambda *key, chosen=chosen: chosen)
        monkeypatch.setenv("DINAT_TRITON_AUTOTUNE", "0")  # on a GPU too: run exactly this configuration
        got = _run("triton", q, k, v, rpb, grad, ks, dil, torch.float32, DEVICE)
        for name, g, r in zip(["out", "dq", "dk", "dv", "drpb"], got, ref):
            torch.testing.assert_close(g, r, atol=1e-4 if name == "out" else 1e-3, rtol=0, msg=f"{name} {chosen}")
    assert len(fwd) >= 2  # the shapes above have several forward chunkings to check


def unique_meta(configs):
    """One configuration per distinct set of kernel parameters (warps, stages and register caps
    change the code's speed, not its arithmetic)."""
    seen = {}
    for c in configs:
        seen.setdefault(tuple(sorted(c["meta"].items())), dict(c, num_stages=1))
    return list(seen.values())


NATTEN_CASES = fixture("na2d_natten.pt")["cases"]
# in the fast loop, the cases that between them hold every kernel size (3, 5, 7, 11), dilations 1 and 3, a
# non-square map and a call without bias; the other six (the same code at other sizes) with --full
FAST_CASES = {0, 2, 3, 5, 8}


@pytest.mark.parametrize("index", [i if i in FAST_CASES else pytest.param(i, marks=pytest.mark.full)
                                   for i in range(len(NATTEN_CASES))])
def test_natten_fixture_cases_forward_and_backward(index):
    """NATTEN 0.17.5's own outputs and gradients (the reference data), through the fused kernels."""
    for case in [NATTEN_CASES[index]]:
        q, k, v = (case[n].to(DEVICE).clone().requires_grad_() for n in "qkv")
        rpb = None if case["rpb"] is None else case["rpb"].to(DEVICE).clone().requires_grad_()
        out = neighborhood_attention_2d(q, k, v, case["kernel_size"], case["dilation"], rpb, backend="triton")
        (out * case["grad_out"].to(DEVICE)).sum().backward()
        torch.testing.assert_close(out.cpu(), case["out"], atol=1e-5, rtol=0)
        for name, t in (("dq", q), ("dk", k), ("dv", v), ("drpb", rpb)):
            if t is not None:
                torch.testing.assert_close(t.grad.cpu(), case[name], atol=1e-4, rtol=0, msg=name)


def test_strided_inputs_as_the_models_pass_them():
    """q, k, v as views of one qkv projection ``[B, H, W, 3, heads, D]``: no copy is needed."""
    batch, height, width, heads, dim = 2, 14, 14, 2, 16
    qkv = torch.randn(batch, height, width, 3, heads, dim, device=DEVICE)
    q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
    rpb = torch.randn(heads, 13, 13, device=DEVICE)
    assert not q.is_contiguous()
    with torch.no_grad():
        out = neighborhood_attention_2d(q, k, v, 7, 2, rpb, backend="triton")
        q64, k64, v64, rpb64 = (t.double().cpu() for t in (q, k, v, rpb))
        ref = neighborhood_attention_2d(q64, k64, v64, 7, 2, rpb64, backend="gather")
    torch.testing.assert_close(out.double().cpu(), ref, atol=1e-5, rtol=0)
    # the output is laid out as [B, H, W, heads, D], so the models' permute back to channels is a view
    assert out.permute(0, 2, 3, 1, 4).is_contiguous()


def test_compiles_to_one_graph_forward_and_backward(compile_backend):
    shape = (1, 2, 14, 14, 16, 5, 2)
    q, k, v, rpb, grad = _problem(shape, True)
    ref = _run("gather", q, k, v, rpb, grad, 5, 2, torch.float64, "cpu")

    def attend(q, k, v, rpb):
        return neighborhood_attention_2d(q, k, v, 5, 2, rpb, backend="triton")

    compiled = torch.compile(attend, fullgraph=True, backend=compile_backend)  # raises on a graph break
    leaves = [t.to(DEVICE).clone().requires_grad_() for t in (q, k, v, rpb)]
    out = compiled(*leaves)
    (out * grad.to(DEVICE)).sum().backward()
    for g, r in zip([out.detach()] + [t.grad for t in leaves], ref):
        torch.testing.assert_close(g.double().cpu(), r, atol=1e-4, rtol=0)


def test_no_rpb_gradient_when_the_table_is_frozen():
    q, k, v, rpb, grad = _problem((1, 2, 14, 14, 16, 7, 1), True)
    leaves = [t.to(DEVICE).clone().requires_grad_() for t in (q, k, v)]
    out = neighborhood_attention_2d(*leaves, 7, 1, rpb.to(DEVICE), backend="triton")
    out.sum().backward()
    assert all(t.grad is not None for t in leaves)


# -- what it refuses, and why --------------------------------------------------------------------------


def test_unsupported_dtype_and_head_dim_are_refused_with_the_reason():
    q64 = torch.randn(1, 1, 9, 9, 16, device=DEVICE, dtype=torch.float64)
    with pytest.raises(ValueError, match="triton.*float32, bfloat16 or float16"):
        neighborhood_attention_2d(q64, q64, q64, 3, backend="triton")
    wide = torch.randn(1, 1, 9, 9, 256, device=DEVICE)
    with pytest.raises(ValueError, match="head_dim <= 128"):
        neighborhood_attention_2d(wide, wide, wide, 3, backend="triton")


def test_cpu_tensors_without_the_interpreter_are_refused_not_run():
    code = (
        "import torch\n"
        "from dinat_timm.ops import neighborhood_attention_2d as na\n"
        "q = torch.randn(1, 1, 9, 9, 16)\n"
        "try:\n"
        "    na(q, q, q, 3, backend='triton')\n"
        "except ValueError as e:\n"
        "    print('REFUSED', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "REFUSED" in out.stdout and "TRITON_INTERPRET=1" in out.stdout, out.stdout + out.stderr


def test_compiled_training_step_of_a_model_matches_eager(compile_backend):
    """forward + backward of a small DiNAT through the custom ops under ``torch.compile(fullgraph=True)``:
    the loss and every parameter's gradient (the rpb tables' included) equal eager's."""
    import timm

    import dinat_timm  # noqa: F401

    torch.manual_seed(0)
    model = timm.create_model("dinat_tiny", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
                              dilations=[[2], [1], [1], [1]], attn_backend="triton", num_classes=5,
                              drop_path_rate=0.0).to(DEVICE)  # no stochastic depth: eager and compiled draw alike
    x, y = torch.randn(2, 3, 64, 64, device=DEVICE), torch.tensor([1, 3], device=DEVICE)

    def step(run):
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(run(x), y)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    eager_loss, eager_grads = step(model)
    torch._dynamo.reset()
    compiled_loss, compiled_grads = step(torch.compile(model, fullgraph=True, backend=compile_backend))
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-5)
    assert any(name.endswith(".rpb") for name in compiled_grads)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
