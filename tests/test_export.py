"""Deployment paths: building on the meta device, torch.export (static and dynamic batch), ONNX
through onnxruntime, and the clear refusals (TorchScript, dynamic image sizes, too-small inputs)."""
import pytest
import timm
import torch

import dinat_timm  # noqa: F401
from dinat_timm.bench.steps import is_dinat_model

ALL_MODELS = sorted(n for n in timm.list_models() if is_dinat_model(n))
# one real architecture per family in the fast loop; the other 18 with --full (CI)
REPRESENTATIVES = {"dinat_mini", "dinat_s_tiny", "dinat_isotropic_small", "vitrpb_small"}
BATCH = torch.export.Dim("batch", min=1, max=1024)

# one small configuration per family: the same code paths as the registered models, at CI cost
SMALL = {
    "hierarchical": ("dinat_tiny", dict(embed_dim=16, depths=(2, 1, 1, 1), num_heads=(1, 2, 2, 4),
                                        dilations=[[1, 8], [4], [2], [1]]), 224),
    "dinat_s": ("dinat_s_tiny", dict(embed_dim=24, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                                     dilations=[[8], [4], [1, 2], [1]]), 224),
    "isotropic": ("dinat_isotropic_small", dict(embed_dim=64, depth=2, num_heads=2), 224),
    "vitrpb": ("vitrpb_small", dict(embed_dim=64, depth=2, num_heads=2), 224),
}


def small_model(family):
    name, kwargs, size = SMALL[family]
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10, **kwargs).eval(), size


@pytest.mark.full  # every architecture
def test_every_model_builds_under_a_meta_default_device():
    """``with torch.device("meta")`` (timm's own default-cfg test builds models this way)."""
    assert len(ALL_MODELS) == 22
    for name in ALL_MODELS:
        with torch.device("meta"):
            model = timm.create_model(name)
        assert all(p.device.type == "meta" for p in model.parameters()), name


@pytest.mark.parametrize("name", [n if n in REPRESENTATIVES else pytest.param(n, marks=pytest.mark.full) for n in ALL_MODELS])
def test_every_registered_model_exports_with_a_dynamic_batch(name):
    """The real architecture at its pretrained input size, traced on the meta device (no weights,
    no arithmetic): every layer exports; the families' numbers are checked below."""
    with torch.device("meta"):
        model = timm.create_model(name).eval()
    size = model.pretrained_cfg["input_size"][-1]
    x = torch.empty(2, 3, size, size, device="meta")
    program = torch.export.export(model, (x,), dynamic_shapes=({0: BATCH},))
    out = program.module()(torch.empty(5, 3, size, size, device="meta"))
    assert out.shape == (5, model.num_classes)


@pytest.mark.parametrize("family", list(SMALL))
def test_exported_program_gives_the_eager_logits(family):
    model, size = small_model(family)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        eager = model(x)
    static = torch.export.export(model, (x,))
    torch.testing.assert_close(static.module()(x), eager, atol=1e-5, rtol=0)
    dynamic = torch.export.export(model, (x,), dynamic_shapes=({0: BATCH},))
    x3 = torch.randn(3, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(dynamic.module()(x3), model(x3), atol=1e-5, rtol=0)
        torch.testing.assert_close(dynamic.module()(x[:1]), eager[:1], atol=1e-5, rtol=0)


@pytest.mark.full  # ~12-20 s a family; the fast loop keeps torch.export's numerics per family, which ONNX builds on
@pytest.mark.parametrize("family", list(SMALL))
def test_onnx_export_runs_in_onnxruntime_with_a_dynamic_batch(family, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, size = small_model(family)
    path = tmp_path / f"{family}.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, size, size),), str(path), dynamo=True,
                      dynamic_shapes=({0: BATCH},), input_names=["image"], output_names=["logits"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, size, size)
    (logits,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), atol=1e-4, rtol=0)


# -- what cannot be exported, said at once ---------------------------------------------------------------


def test_dynamic_image_size_is_refused_at_export_time_with_the_constraint():
    model, _ = small_model("hierarchical")
    x = torch.randn(2, 3, 224, 224)
    with pytest.raises(ValueError, match=r"static image size.*Only the batch can be dynamic"):
        torch.export.export(model, (x,), dynamic_shapes=({0: BATCH, 2: torch.export.Dim("h", min=64, max=512)},))


def test_too_small_input_is_refused_at_export_time():
    model, _ = small_model("hierarchical")
    with pytest.raises(ValueError, match=r"16x16 is smaller than this model's minimum 32x32"):
        torch.export.export(model, (torch.randn(1, 3, 16, 16),))


@pytest.mark.parametrize("family", list(SMALL))
def test_torchscript_says_it_is_not_supported_and_what_to_use(family):
    model, _ = small_model(family)
    with pytest.raises(RuntimeError, match=r"not TorchScript-scriptable.*torch\.export"):
        torch.jit.script(model)


@pytest.mark.parametrize("family", list(SMALL))
def test_torch_jit_trace_passes_its_own_check_and_gives_the_eager_logits(family):
    """The layouts enter the trace as constants and a traced call takes the same path as the check's re-trace,
    so ``torch.jit.trace``'s own sanity check passes; the traced module gives the eager logits at that size."""
    import warnings

    model, _ = small_model(family)
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation, and its notes on shape checks
        traced = torch.jit.trace(model, (x,))
    other = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(traced(other), model(other), atol=1e-5, rtol=1e-5)
