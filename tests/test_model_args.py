"""The families' constructor checks (``dinat_timm.models._args``): every bad argument named."""
import pytest
import timm

import dinat_timm  # noqa: F401


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel_size=0), "kernel_size: kernel_size must be an odd integer >= 3, got 0"),
    (dict(kernel_size=-3), "kernel_size"),
    (dict(embed_dim=0), "embed_dim must be an integer >= 1, got 0"),
    (dict(depths=[]), r"depths must be a non-empty list"),
    (dict(drop_path_rate=-0.5), r"drop_path_rate must be a number in \[0, 1\), got -0.5"),
    (dict(drop_path_rate=1.5), "drop_path_rate"),
    (dict(mlp_ratio=0), "mlp_ratio must be a finite number > 0"),
    (dict(num_heads=(3, 4, 8, 16)), r"num_heads\[0\] = 3 does not divide that stage's channels \(64\)"),
    (dict(dilations=[[1, 0, 1], [1] * 4, [1] * 6, [1] * 5]), "dilations must hold integers >= 1"),
    (dict(layer_scale=-1e-5), "layer_scale must be a finite number > 0"),
])
def test_bad_constructor_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model("dinat_mini", **kwargs)


@pytest.mark.parametrize("name,kwargs,match", [
    ("dinat_isotropic_small", dict(depth=0), "depth must be an integer >= 1"),
    ("dinat_isotropic_small", dict(dilation=0), "dilation must be an integer >= 1"),
    ("dinat_s_tiny", dict(patch_size=0), "patch_size must be an integer >= 1"),
    ("vitrpb_small", dict(num_heads=5), r"num_heads\[0\] = 5 does not divide"),
])
def test_bad_arguments_of_the_other_families_are_named(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model(name, **kwargs)
