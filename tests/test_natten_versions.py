"""Each NATTEN version in the matrix, really exercised: an environment named for a version
(``DINAT_TIMM_EXPECT_NATTEN``, set by tox and CI) fails when that version's backend cannot run,
instead of skipping; and on the legacy ops the published weights were trained with, whole models
give the original code's logits and the pure-PyTorch backend's gradients.

The legacy tests carry the ``natten_legacy`` marker: ``pytest tests -m natten_legacy`` runs them alone
(CI does, in a NATTEN 0.15.1 environment)."""
import os
import subprocess
from pathlib import Path

import pytest
import timm
import torch
from _helpers import expected_natten, fixture, skip_unusable

import dinat_timm  # noqa: F401
from dinat_timm.models import dinat, dinat_s, isotropic
from dinat_timm.ops import available_backends
from dinat_timm.ops.backends._natten import natten_version
from dinat_timm.ops.backends.natten_env import check_expected

EXPECTED = expected_natten()


@pytest.mark.skipif(not EXPECTED, reason="not an environment named for a NATTEN version (DINAT_TIMM_EXPECT_NATTEN unset)")
def test_the_environments_natten_version_is_installed_and_its_backend_usable():
    assert check_expected(EXPECTED) == ""


def test_the_environment_check_names_the_version_and_why():
    version, _ = natten_version()
    installed = ".".join(map(str, version[:2])) if version else "none"
    assert check_expected(installed) == "" or "cannot run" in check_expected(installed)
    other = "0.15" if installed != "0.15" else "0.17"
    assert check_expected(other).startswith(f"NATTEN {other} expected")


def _legacy_or_skip():
    skip_unusable("natten_legacy", available_backends()["natten_legacy"])


UPSTREAM = fixture("upstream_dinat_small.pt")


SWIN_SHAPED = fixture("upstream_dinat_s_small.pt")


ISOTROPIC = fixture("upstream_isotropic_small.pt")


def _hierarchical(backend):
    c = UPSTREAM["config"]
    model = timm.create_model("dinat_tiny", attn_backend=backend, embed_dim=c["embed_dim"], depths=c["depths"],
                              num_heads=c["num_heads"], mlp_ratio=c["mlp_ratio"], dilations=c["dilations"],
                              layer_scale=c["layer_scale"], num_classes=10)
    model.load_state_dict(dinat.checkpoint_filter_fn(UPSTREAM["state_dict"], model))
    return model, UPSTREAM


def _swin_shaped(backend):
    c = SWIN_SHAPED["config"]
    model = timm.create_model("dinat_s_tiny", attn_backend=backend, num_classes=10,
                              **{k: c[k] for k in ("embed_dim", "depths", "num_heads", "kernel_size", "dilations")})
    model.load_state_dict(dinat_s.checkpoint_filter_fn(SWIN_SHAPED["state_dict"], model))
    return model, SWIN_SHAPED


def _isotropic(backend):
    c = ISOTROPIC["config"]
    model = timm.create_model("dinat_isotropic_small", attn_backend=backend, num_classes=10,
                              **{k: c[k] for k in ("embed_dim", "depth", "num_heads", "kernel_size", "dilation",
                                                   "mlp_ratio", "patch_size")})
    model.load_state_dict(isotropic.checkpoint_filter_fn(ISOTROPIC["state_dict"], model))
    return model, ISOTROPIC


FAMILIES = {"hierarchical": _hierarchical, "dinat_s": _swin_shaped, "isotropic": _isotropic}


@pytest.mark.natten_legacy
@pytest.mark.parametrize("family", list(FAMILIES))
def test_models_on_legacy_natten_give_the_original_codes_logits(family):
    _legacy_or_skip()
    model, reference = FAMILIES[family]("natten_legacy")
    with torch.no_grad():
        logits = model.eval()(reference["input"])
    torch.testing.assert_close(logits, reference["logits"], atol=1e-5, rtol=0)


@pytest.mark.natten_legacy
@pytest.mark.parametrize("family", list(FAMILIES))
def test_models_on_legacy_natten_train_as_on_tiled(family):
    """The gradient of every parameter (the bias tables' included) of one training step's loss."""
    _legacy_or_skip()
    grads = {}
    for backend in ("natten_legacy", "tiled"):
        model, reference = FAMILIES[family](backend)
        model.train()
        for module in model.modules():  # stochastic depth off: both backends see the same network
            if isinstance(module, timm.layers.DropPath):
                module.drop_prob = 0.0
        loss = torch.nn.functional.cross_entropy(model(reference["input"][:1]), torch.tensor([3]))
        loss.backward()
        grads[backend] = {n: p.grad for n, p in model.named_parameters()}
    assert any(n.endswith(".rpb") for n in grads["tiled"])
    for name, grad in grads["tiled"].items():
        torch.testing.assert_close(grads["natten_legacy"][name], grad, atol=1e-5, rtol=1e-4, msg=name)


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("arch,ok", [("9.0", True), ("8.0;9.0", True), ("10.0", False), ("sm_90", False), ("9", False)])
def test_legacy_natten_build_takes_a_cuda_arch_list(arch, ok):
    run = subprocess.run(["bash", str(ROOT / "tools" / "build_legacy_natten.sh"), "0.15.1", arch],
                         env=dict(os.environ, DRY_RUN="1"), capture_output=True, text=True, timeout=60)
    if ok:
        assert run.returncode == 0 and f"NATTEN_CUDA_ARCH={arch} FORCE_CUDA=1" in run.stdout
    else:
        assert run.returncode == 2 and "major.minor" in run.stderr and run.stdout == ""
