"""Edge inputs of the operator, bad model arguments and broken checkpoints: the right answer (as
NATTEN gives it) or one error naming the problem."""
import zipfile

import pytest
import timm
import torch

import dinat_timm  # noqa: F401
from dinat_timm.ops import neighborhood_attention_2d
from dinat_timm.ops.chooser import why_not

from _helpers import fixture, put_in_hf_cache, serialized

# -- the operator's edge inputs ------------------------------------------------------------------------------


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


# -- model arguments and checkpoints, named ----------------------------------------------------------------


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


UPSTREAM = fixture("upstream_dinat_small.pt")
TINY = dict(embed_dim=32, depths=(2, 2, 3, 2), num_heads=(1, 2, 4, 8), mlp_ratio=2.0,
            dilations=[[1, 8], [1, 4], [1, 2, 1], [1, 1]], layer_scale=1e-5, num_classes=10)


def _load(path):
    return timm.create_model("dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                             **TINY)


def test_a_named_checkpoint_that_is_missing_empty_or_not_one_is_named(tmp_path):
    with pytest.raises(RuntimeError, match=rf"checkpoint {tmp_path / 'nowhere.pth'}: no such file"):
        _load(tmp_path / "nowhere.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(RuntimeError, match=rf"checkpoint {tmp_path / 'empty.pth'} is empty"):
        _load(tmp_path / "empty.pth")
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    with pytest.raises(RuntimeError, match=rf"{tmp_path / 'notes.pth'} is not a checkpoint"):
        _load(tmp_path / "notes.pth")


def test_a_checkpoint_holding_a_list_names_the_file_and_what_it_holds(tmp_path):
    path = tmp_path / "list.pth"
    path.write_bytes(serialized([t for t in UPSTREAM["state_dict"].values()]))
    with pytest.raises(ValueError, match=rf"{path}: the checkpoint holds a list, not a state dict"):
        _load(path)


def test_corrupted_bytes_in_a_pth_fail_its_checksum(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(serialized(UPSTREAM["state_dict"]))
    _load(path)  # intact: loads
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda i: i.file_size)  # the largest tensor's storage
    data = bytearray(path.read_bytes())
    data[member.header_offset + 30 + len(member.filename) + len(member.extra) + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=rf"{path}: member .* fails its CRC-32 checksum"):
        _load(path)


def test_a_hub_file_whose_bytes_differ_from_its_checksum_is_refused(hf_cache, torch_hub_dir):
    payload = serialized(UPSTREAM["state_dict"])
    snapshot = put_in_hf_cache(hf_cache, "shi-labs/dinat-tiny-in1k-224", "pytorch_model.bin", payload)
    blob = snapshot.resolve()
    blob.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))  # one flipped bit, same size
    with pytest.raises(RuntimeError, match=r"its sha256 is [0-9a-f]{64}, the Hub's is [0-9a-f]{64}: the file is corrupted"):
        timm.create_model("dinat_tiny", pretrained=True, pretrained_cfg_overlay=dict(num_classes=10), **TINY)
