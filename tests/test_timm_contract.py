"""The parts of timm's own model tests (tests/test_models.py of the installed timm's sdist) that
caught real defects in these models: the default-cfg shape contract, reset_classifier keeping the
model's device/dtype/mode, and symbolic tracing (torch.fx) for timm's feature extraction."""
import pytest
import timm
import torch
from timm.models import get_notrace_functions, get_notrace_modules

import dinat_timm  # noqa: F401

ONE_PER_FAMILY = ["nat_mini", "dinat_s_tiny", "dinat_isotropic_small", "vitrpb_small"]


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_features_match_the_default_cfg_pool_size_in_the_declared_format(name):
    with torch.device("meta"):
        model = timm.create_model(name).eval()
    assert model.output_fmt == "NHWC"
    size = model.default_cfg["input_size"]
    features = model.forward_features(torch.empty(1, *size, device="meta"))
    assert tuple(features.shape[1:3]) == tuple(model.default_cfg["pool_size"])
    assert features.shape[3] == model.num_features
    assert model.forward_head(features, pre_logits=True).shape == (1, model.head_hidden_size)


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_reset_classifier_keeps_the_models_device_dtype_and_mode(name):
    with torch.device("meta"):
        model = timm.create_model(name).eval()
    model.to(dtype=torch.float64)
    model.reset_classifier(0)  # no classifier parameters left to take device/dtype from
    model.reset_classifier(7)
    fc = model.get_classifier()
    assert (fc.weight.device.type, fc.weight.dtype, fc.out_features) == ("meta", torch.float64, 7)
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_symbolic_tracing_with_timms_leaf_registry(name):
    """timm's FX feature extraction traces with its registered leaves and autowrapped functions."""
    from torch.fx import symbolic_trace  # noqa: F401
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model = timm.create_model(name, embed_dim=32, num_classes=5, **_small(name)).eval()
    tracer = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions(), param_shapes_constant=True)
    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer)
    traced = create_feature_extractor(model, return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(list(traced(x).values())[0], model(x), atol=1e-5, rtol=0)


def _small(name):
    if "isotropic" in name or name.startswith("vitrpb"):
        return dict(depth=2, num_heads=2)
    return dict(depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), dilations=[[8], [4], [2], [1]])
