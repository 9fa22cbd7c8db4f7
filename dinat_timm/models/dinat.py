"""DiNAT and NAT: hierarchical (dilated) neighborhood attention transformers.

Paper: "Dilated Neighborhood Attention Transformer", Hassani & Shi, arXiv:2209.15001 (DiNAT), and
"Neighborhood Attention Transformer", Hassani et al., arXiv:2204.07143 (NAT, the dilation-1 case).
Original code: https://github.com/SHI-Labs/Neighborhood-Attention-Transformer (MIT).

Both published checkpoint formats load through ``checkpoint_filter_fn``: the original repo's
``.pth`` files (``levels.i.blocks.j.attn.qkv`` …) and the Hugging Face transformers repos
(``dinat.encoder.levels.i.layers.j.attention.self.query`` …).
"""
from __future__ import annotations

import re
from functools import partial
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from ._checkpoint import convert_original_hierarchical, filter_checkpoint
from ._factory import build_family_model, make_variant, pretrained_cfg
from ._hierarchical import HierarchicalNAT

__all__ = ["DiNAT"]


class ConvStem(nn.Module):
    """Two overlapping 3×3 stride-2 convs (C/2 then C), then LayerNorm on NHWC."""

    def __init__(self, in_chans=3, embed_dim=64, norm_layer=nn.LayerNorm, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, 3, stride=2, padding=1, **dd),
            nn.Conv2d(embed_dim // 2, embed_dim, 3, stride=2, padding=1, **dd),
        )
        self.norm = norm_layer(embed_dim, **dd)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsample(nn.Module):
    """3×3 stride-2 conv doubling channels (no bias), then LayerNorm; NHWC in and out."""

    def __init__(self, dim, out_dim, norm_layer=nn.LayerNorm, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.reduction = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1, bias=False, **dd)
        self.norm = norm_layer(out_dim, **dd)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class DiNAT(HierarchicalNAT):
    """Hierarchical (Di)NAT. ``dilations=None`` is NAT (dilation 1 everywhere).

    Argument names follow the original ``NAT``/``DiNAT`` classes (``embed_dim, depths, num_heads,
    mlp_ratio, kernel_size, dilations, layer_scale, drop_path_rate``). ``attn_backend`` picks the
    neighborhood attention's backend, ``attn_layout="window"`` runs the layers whose dilation
    sub-grids are k×k as window attention (the same numbers; ``"auto"``, the default, does so on CPU,
    where it was measured faster, unless a backend is pinned).
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 64,
        depths: Sequence[int] = (3, 4, 6, 5),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        mlp_ratio: float = 3.0,
        kernel_size: int = 7,
        dilations: Optional[Sequence[Sequence[int]]] = None,
        layer_scale: Optional[float] = None,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_layer=nn.LayerNorm,
        act_layer=nn.GELU,
        attn_backend: str = "auto",
        attn_layout: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__(
            stem_layer=partial(ConvStem, norm_layer=norm_layer), downsample_layer=ConvDownsample, stem_stride=4,
            img_size=img_size, in_chans=in_chans, num_classes=num_classes, global_pool=global_pool, embed_dim=embed_dim,
            depths=depths, num_heads=num_heads, mlp_ratio=mlp_ratio, kernel_size=kernel_size, dilations=dilations,
            layer_scale=layer_scale, qkv_bias=qkv_bias, qk_scale=qk_scale, drop_rate=drop_rate,
            proj_drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            norm_layer=norm_layer, act_layer=act_layer, attn_backend=attn_backend, attn_layout=attn_layout,
            device=device, dtype=dtype,
        )


# -- checkpoints ------------------------------------------------------------------------------------

_HF_BLOCK_KEYS = {
    "layernorm_before": "norm1",
    "attention.self.rpb": "attn.rpb",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def _convert_hf(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """transformers' DinatForImageClassification / NatForImageClassification layout -> ours."""
    out, qkv = {}, {}
    for key, value in state_dict.items():
        k = re.sub(r"^(dinat|nat)\.", "", key)
        if k.startswith("embeddings.patch_embeddings.projection."):
            out["patch_embed.proj." + k[len("embeddings.patch_embeddings.projection."):]] = value
        elif k.startswith("embeddings.norm."):
            out["patch_embed.norm." + k[len("embeddings.norm."):]] = value
        elif k.startswith("layernorm."):
            out["norm." + k[len("layernorm."):]] = value
        elif k.startswith("classifier."):
            out["head.fc." + k[len("classifier."):]] = value
        elif m := re.match(r"encoder\.levels\.(\d+)\.downsample\.(.+)", k):
            out[f"stages.{int(m[1]) + 1}.downsample.{m[2]}"] = value
        elif m := re.match(r"encoder\.levels\.(\d+)\.layers\.(\d+)\.(.+)", k):
            prefix, rest = f"stages.{m[1]}.blocks.{m[2]}.", m[3]
            if rest == "layer_scale_parameters":
                out[prefix + "ls1.gamma"], out[prefix + "ls2.gamma"] = value[0], value[1]
            elif qm := re.match(r"attention\.self\.(query|key|value)\.(weight|bias)", rest):
                qkv.setdefault(prefix + "attn.qkv." + qm[2], {})[qm[1]] = value
            else:
                for hf_name, name in _HF_BLOCK_KEYS.items():
                    if rest.startswith(hf_name + "."):
                        out[prefix + name + rest[len(hf_name):]] = value
                        break
                    if rest == hf_name:
                        out[prefix + name] = value
                        break
                else:
                    out[key] = value  # unknown: left as is, so the key check names it
        else:
            out[key] = value
    for name, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            out.update({f"{name}<{p}>": t for p, t in parts.items()})  # incomplete: reported as unexpected
            continue
        out[name] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def checkpoint_filter_fn(state_dict: Dict, model: DiNAT) -> Dict[str, torch.Tensor]:
    """Convert either published format (or ours) to this model's keys, resizing rpb to its kernel."""
    formats = [
        ("transformers", lambda keys: any(k.startswith(("dinat.", "nat.")) for k in keys), _convert_hf),
        ("original", lambda keys: any(k.startswith("levels.") for k in keys),
         lambda sd: convert_original_hierarchical(sd, "levels")),
    ]
    return filter_checkpoint(state_dict, model, formats, first_conv=("patch_embed.proj.0",))


# -- registry ---------------------------------------------------------------------------------------


def _create_dinat(variant: str, pretrained: bool = False, **kwargs) -> DiNAT:
    stages = len(kwargs.get("depths", (3, 4, 6, 5)))
    return build_family_model(DiNAT, variant, pretrained, checkpoint_filter_fn, stages, **kwargs)


def _cfg(url: str = "", hf_hub_id: Optional[str] = None, **kwargs) -> Dict[str, Any]:
    cfg = pretrained_cfg(url, first_conv="patch_embed.proj.0", **kwargs)
    if hf_hub_id:
        cfg["hf_hub_id"] = hf_hub_id
    return cfg


_DINAT_URL = "https://shi-labs.com/projects/dinat/checkpoints/"
_NAT_URL = "https://shi-labs.com/projects/nat/checkpoints/CLS/"
_NAT = dict(paper_ids="arXiv:2204.07143", paper_name="Neighborhood Attention Transformer")
_IN22K = dict(num_classes=21841, notes=(
    "ImageNet-22K head; upstream does not document its class count, 21841 is the full ImageNet-22K "
    "label set (check the checkpoint's head.weight shape)",
))

default_cfgs = generate_default_cfgs({
    "dinat_mini.in1k": _cfg(_DINAT_URL + "imagenet1k/dinat_mini_in1k_224.pth", "shi-labs/dinat-mini-in1k-224"),
    "dinat_tiny.in1k": _cfg(_DINAT_URL + "imagenet1k/dinat_tiny_in1k_224.pth", "shi-labs/dinat-tiny-in1k-224"),
    "dinat_small.in1k": _cfg(_DINAT_URL + "imagenet1k/dinat_small_in1k_224.pth", "shi-labs/dinat-small-in1k-224"),
    "dinat_base.in1k": _cfg(_DINAT_URL + "imagenet1k/dinat_base_in1k_224.pth", "shi-labs/dinat-base-in1k-224"),
    "dinat_large.in22k_ft_in1k": _cfg(
        _DINAT_URL + "imagenet1k/dinat_large_in22k_in1k_224.pth", "shi-labs/dinat-large-in22k-in1k-224"),
    "dinat_large.in22k": _cfg(_DINAT_URL + "imagenet22k/dinat_large_in22k_224.pth", **_IN22K),
    "dinat_large_384.in22k_ft_in1k": _cfg(
        _DINAT_URL + "imagenet1k/dinat_large_in22k_in1k_384.pth", "shi-labs/dinat-large-in22k-in1k-384",
        input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
    "dinat_large_384_11x11.in22k_ft_in1k": _cfg(
        _DINAT_URL + "imagenet1k/dinat_large_in22k_in1k_384_11x11.pth", "shi-labs/dinat-large-11x11-in22k-in1k-384",
        input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
    "dinat_large_384_11x11.in22k": _cfg(
        _DINAT_URL + "imagenet22k/dinat_large_in22k_224_11x11interp.pth",
        **dict(_IN22K, notes=_IN22K["notes"] + ("224px IN-22K weights with rpb interpolated to 11x11, for fine-tuning",))),
    "nat_mini.in1k": _cfg(_NAT_URL + "nat_mini.pth", "shi-labs/nat-mini-in1k-224", **_NAT),
    "nat_tiny.in1k": _cfg(_NAT_URL + "nat_tiny.pth", "shi-labs/nat-tiny-in1k-224", **_NAT),
    "nat_small.in1k": _cfg(_NAT_URL + "nat_small.pth", "shi-labs/nat-small-in1k-224", **_NAT),
    "nat_base.in1k": _cfg(_NAT_URL + "nat_base.pth", "shi-labs/nat-base-in1k-224", **_NAT),
})

_D224 = dict(dilations=[[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1] * 5])
_MINI = dict(embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0, drop_path_rate=0.2)
_TINY = dict(embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0, drop_path_rate=0.2)
_SMALL = dict(embed_dim=96, depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), mlp_ratio=2.0, drop_path_rate=0.3)
_BASE = dict(embed_dim=128, depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), mlp_ratio=2.0, drop_path_rate=0.5,
             layer_scale=1e-5)
_LARGE = dict(embed_dim=192, depths=(3, 4, 18, 5), num_heads=(6, 12, 24, 48), mlp_ratio=2.0, drop_path_rate=0.35)


_make = partial(make_variant, _create_dinat)


@register_model
def dinat_mini(pretrained: bool = False, **kwargs) -> DiNAT:
    return _make("dinat_mini", pretrained, dict(_MINI, dilations=[[1, 8, 1], [1, 4, 1, 4], [1, 2] * 3, [1] * 5]), kwargs)


@register_model
def dinat_tiny(pretrained: bool = False, **kwargs) -> DiNAT:
    return _make("dinat_tiny", pretrained, dict(_TINY, **_D224), kwargs)


@register_model
def dinat_small(pretrained: bool = False, **kwargs) -> DiNAT:
    return _make("dinat_small", pretrained, dict(_SMALL, **_D224), kwargs)


@register_model
def dinat_base(pretrained: bool = False, **kwargs) -> DiNAT:
    return _make("dinat_base", pretrained, dict(_BASE, **_D224), kwargs)


@register_model
def dinat_large(pretrained: bool = False, **kwargs) -> DiNAT:
    return _make("dinat_large", pretrained, dict(_LARGE, **_D224), kwargs)


@register_model
def dinat_large_384(pretrained: bool = False, **kwargs) -> DiNAT:
    dilations = [[1, 13, 1], [1, 6, 1, 6], [1, 3] * 9, [1] * 5]
    return _make("dinat_large_384", pretrained, dict(_LARGE, dilations=dilations, img_size=384), kwargs)


@register_model
def dinat_large_384_11x11(pretrained: bool = False, **kwargs) -> DiNAT:
    return _make("dinat_large_384_11x11", pretrained, dict(_LARGE, **_D224, kernel_size=11, img_size=384), kwargs)


@register_model
def nat_mini(pretrained: bool = False, **kwargs) -> DiNAT:
    return _make("nat_mini", pretrained, _MINI, kwargs)


@register_model
def nat_tiny(pretrained: bool = False, **kwargs) -> DiNAT:
    return _make("nat_tiny", pretrained, _TINY, kwargs)


@register_model
def nat_small(pretrained: bool = False, **kwargs) -> DiNAT:
    return _make("nat_small", pretrained, dict(_SMALL, layer_scale=1e-5), kwargs)


@register_model
def nat_base(pretrained: bool = False, **kwargs) -> DiNAT:
    return _make("nat_base", pretrained, _BASE, kwargs)
