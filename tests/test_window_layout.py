"""DiNAT's window-shaped layers as window attention: where every dilation sub-grid is exactly k×k, the
clamped neighborhood is the whole sub-grid and the bias one shared matrix, so a strided permutation
and a window SDPA give the same numbers. Checked against float64 ``gather`` (the op) and against the
neighborhood layout (whole models, forward and every parameter's gradient), at maps the dilation
divides and at maps it does not (which keep the general path); compiled and exported too."""
import pytest
import timm
import torch

import dinat_timm  # noqa: F401
from dinat_timm.ops import neighborhood_attention_2d
from dinat_timm.ops.backends import window as windows
from dinat_timm.ops.testing import outputs_and_grads

# DiNAT-T's window-shaped stage shapes at 224² (map, heads, dilation), and one of another kernel size
SHAPES = [(7, 16, 1), (14, 8, 2), (28, 4, 4), (56, 2, 8), (15, 3, 3, 5)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[0]}-d{s[2]}")
def test_the_window_backend_equals_float64_gather_forward_and_backward(shape):
    size, heads, dilation, *kernel = shape
    k = kernel[0] if kernel else 7
    g = torch.Generator().manual_seed(size)
    q, key, v, grad = (torch.randn(2, heads, size, size, 8, generator=g, dtype=torch.float64) for _ in range(4))
    rpb = torch.randn(heads, 2 * k - 1, 2 * k - 1, generator=g, dtype=torch.float64)
    ref = outputs_and_grads("gather", q, key, v, rpb, grad, k, dilation, torch.float64, "cpu")
    got = outputs_and_grads("window", q, key, v, rpb, grad, k, dilation, torch.float64, "cpu")
    for name, a, b in zip(("out", "dq", "dk", "dv", "drpb"), got, ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10, msg=name)
    fp32 = outputs_and_grads("window", q, key, v, rpb, grad, k, dilation, torch.float32, "cpu")
    torch.testing.assert_close(fp32[0], ref[0], atol=1e-4, rtol=0)
    for a, b in zip(fp32[1:], ref[1:]):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=0)


def test_the_window_backend_refuses_other_maps_by_name():
    q = torch.randn(1, 2, 16, 16, 8)
    with pytest.raises(ValueError, match=r"backend 'window' serves maps of exactly kernel_size\*dilation = 14 a side"):
        neighborhood_attention_2d(q, q, q, 7, 2, backend="window")


SMALL = dict(embed_dim=16, depths=(2, 2, 2, 1), num_heads=(1, 2, 2, 4), dilations=[[1, 8], [1, 4], [1, 2], [1]],
             mlp_ratio=2.0, num_classes=5, drop_path_rate=0.0)


def _model(layout, dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model("dinat_tiny", attn_layout=layout, attn_backend="gather", **{**SMALL, **kwargs})
    return model.to(dtype)


def _count_windows(monkeypatch):
    calls = []
    real = windows.attend

    def spy(*args, **kwargs):  # the real window attention, counted
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(windows, "attend", spy)
    return calls


@pytest.mark.parametrize("size,window_layers", [(224, 4), (256, 0), (96, 5)])
def test_a_model_in_window_layout_gives_the_same_logits_and_gradients(size, window_layers, monkeypatch):
    """224²: maps 56, 28, 14, 7: the dilated layers (56/8, 28/4, 14/2) and the 7² one run as windows,
    the d=1 layers of 56, 28, 14 as neighborhoods; 256²: 64, 32, 16, 8: the dilations divide the maps
    but the sub-grids are 8×8, so every layer keeps the general path; 96²: 24, 12, 6, 3: the maps
    smaller than k·d are padded up to it (both dilated layers, and d=1 at 6 and 3) and run as windows."""
    x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    target = torch.tensor([1, 3])
    results = {}
    for layout in ("neighborhood", "window"):
        calls = _count_windows(monkeypatch) if layout == "window" else []
        model = _model(layout)
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        results[layout] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()})
        if layout == "window":
            assert len(calls) == window_layers
    torch.testing.assert_close(results["window"][0], results["neighborhood"][0], atol=1e-12, rtol=0)
    for name, grad in results["neighborhood"][1].items():
        torch.testing.assert_close(results["window"][1][name], grad, atol=1e-12, rtol=1e-10, msg=name)


def test_window_layout_compiles_to_one_graph_and_exports(compile_backend):
    model = _model("window", dtype=torch.float32).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        eager = model(x)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend=compile_backend)(x)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x[:1]), eager[:1], atol=1e-5, rtol=0)


def test_the_layout_is_chosen_per_model_and_in_the_benchmarks():
    from dinat_timm.bench.steps import StepConfig, build_model, config_columns

    model = timm.create_model("dinat_mini", attn_layout="window")
    assert {m.layout for m in model.modules() if hasattr(m, "layout")} == {"window"}
    model.set_attn_layout("neighborhood")
    assert {m.layout for m in model.modules() if hasattr(m, "layout")} == {"neighborhood"}
    with pytest.raises(ValueError, match=r"attn_layout must be one of \['auto', 'neighborhood', 'window'\], got 'windows'"):
        timm.create_model("dinat_mini", attn_layout="windows")
    cfg = StepConfig("dinat_mini", batch_size=1, backend="window:tiled")
    built = build_model(cfg)
    assert {(m.layout, m.backend) for m in built.modules() if hasattr(m, "layout")} == {("window", "tiled")}
    assert config_columns(StepConfig("dinat_mini", backend="window:auto"))["backend"] == "window:auto:tiled"
    # the chooser keeps its choices: the window backend is never picked automatically
    from dinat_timm.ops.chooser import preference

    assert "window" not in preference("cuda") + preference("cpu") + preference("cuda", compiling=True)


def test_the_default_layout_runs_windows_on_cpu_unless_a_backend_is_pinned():
    """``attn_layout="auto"`` (the default): window-shaped layers as windows on CPU with the backend left to the
    chooser (measured faster there, docs/operator.md); the neighborhood path with a pinned backend, so that every
    layer runs on it. The logits are the neighborhood layout's (float64)."""
    from dinat_timm.bench.steps import StepConfig, config_columns
    from dinat_timm.models._blocks import NeighborhoodAttention2d

    torch.manual_seed(0)
    model = timm.create_model("dinat_mini", dtype=torch.float64).eval()
    attns = [m for m in model.modules() if isinstance(m, NeighborhoodAttention2d)]
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    assert {m.layout for m in attns} == {"auto"} and all(m._windows(x) for m in attns)
    with torch.no_grad():
        auto = model(x)
        model.set_attn_layout("neighborhood")
        torch.testing.assert_close(auto, model(x), atol=1e-12, rtol=0)
    model.set_attn_layout("auto")
    model.set_attn_backend("tiled")
    assert not any(m._windows(x) for m in attns)
    assert config_columns(StepConfig("dinat_mini"))["backend"] == "window:auto:tiled"
    assert config_columns(StepConfig("dinat_mini", backend="neighborhood:auto"))["backend"] == "auto:tiled"
    assert config_columns(StepConfig("dinat_mini", backend="tiled"))["backend"] == "tiled"


def test_bf16_autocast_on_cpu_gives_the_fp32_logits_within_bf16s_precision():
    """The CPU default (window-shaped layers as windows, the rest on ``tiled``) under bf16 autocast, as the suites
    time it: the logits of fp32 within what bf16's 8 bits of mantissa allow."""
    torch.manual_seed(0)
    model = timm.create_model("dinat_mini", embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                              dilations=[[1], [1], [1, 2], [1]]).eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.dtype == torch.bfloat16
    scale = ref.abs().max()
    assert (low.float() - ref).abs().max() <= 0.05 * scale, ((low.float() - ref).abs().max(), scale)


def test_bf16_is_timed_only_where_the_cpu_has_bf16_arithmetic(monkeypatch):
    """oneDNN says whether the CPU has bf16 arithmetic (AVX512-BF16 or AMX); where it does not, the suites leave
    the bf16 rows out with the reason instead of timing an emulation."""
    from dinat_timm.bench.steps import unsupported_dtype

    assert unsupported_dtype("cpu", "fp32") is None and unsupported_dtype("cpu", "fp16") == "fp16 is a GPU configuration"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert unsupported_dtype("cpu", "bf16").startswith("this CPU has no bf16 arithmetic")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert unsupported_dtype("cpu", "bf16") is None
