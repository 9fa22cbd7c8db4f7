"""Every backend against outputs and gradients computed by NATTEN 0.17.5 itself."""
import pytest
import torch

from dinat_timm.ops import available_backends, neighborhood_attention_2d
from dinat_timm.ops.chooser import why_not

from _helpers import fixture, skip_unusable

CASES = fixture("na2d_natten.pt")["cases"]
BACKENDS = ["tiled", "gather", "flex", "natten", pytest.param("natten_legacy", marks=pytest.mark.natten_legacy)]


def case_id(c):
    b, h, H, W, D = c["q"].shape
    return f"{H}x{W}-k{c['kernel_size']}-d{c['dilation']}-{'rpb' if c['rpb'] is not None else 'norpb'}"


def _skip_unless_usable(backend, case, grad):
    skip_unusable(backend, why_not(backend, case["q"], case["rpb"], grad))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_matches_natten(backend, case):
    _skip_unless_usable(backend, case, grad=False)
    with torch.no_grad():
        out = neighborhood_attention_2d(
            case["q"], case["k"], case["v"], case["kernel_size"], case["dilation"], case["rpb"], backend=backend
        )
    torch.testing.assert_close(out, case["out"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backward_matches_natten(backend, case):
    _skip_unless_usable(backend, case, grad=True)
    q, k, v = (case[n].clone().requires_grad_() for n in "qkv")
    rpb = None if case["rpb"] is None else case["rpb"].clone().requires_grad_()
    out = neighborhood_attention_2d(q, k, v, case["kernel_size"], case["dilation"], rpb, backend=backend)
    (out * case["grad_out"]).sum().backward()
    torch.testing.assert_close(out, case["out"], atol=1e-5, rtol=0)
    for name, tensor in (("dq", q), ("dk", k), ("dv", v), ("drpb", rpb)):
        if tensor is not None:
            torch.testing.assert_close(tensor.grad, case[name], atol=1e-4, rtol=0, msg=name)


def test_fixture_covers_what_the_issue_asks():
    kernels = {c["kernel_size"] for c in CASES}
    dilations = {c["dilation"] for c in CASES}
    assert {3, 5, 7, 11} <= kernels and {1, 2, 3, 4} <= dilations
    assert any(c["q"].shape[2] != c["q"].shape[3] for c in CASES)  # non-square
    assert any(c["rpb"] is None for c in CASES) and any(c["rpb"] is not None for c in CASES)


def test_installed_natten_is_exercised():
    """Where the test extra installed natten >= 0.20, its backend really runs (not skipped)."""
    try:
        import natten  # noqa: F401
    except Exception:
        pytest.skip("natten not importable in this environment")
    status = available_backends()
    assert status["natten"] is None or status["natten_legacy"] is None, status
