"""DiNAT_s: the Swin-shaped DiNAT variant (4×4 patch stem, Swin patch merging, MLP ratio 4).

Paper: "Dilated Neighborhood Attention Transformer", Hassani & Shi, arXiv:2209.15001 (Appendix).
Original code: SHI-Labs/Neighborhood-Attention-Transformer ``classification/dinats.py`` (MIT).
Shares its stages, blocks and attention with the hierarchical DiNAT (``_hierarchical.py``).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model
from timm.models.swin_transformer import PatchMerging  # the same 2×2 merge as the original DiNAT_s

from . import _args
from ._blocks import patch_embed
from ._checkpoint import convert_original_hierarchical, filter_checkpoint
from ._factory import build_family_model, make_variant, pretrained_cfg
from ._hierarchical import HierarchicalNAT

__all__ = ["DiNAT_s"]


class DiNAT_s(HierarchicalNAT):
    """Swin-shaped DiNAT. Argument names follow the original ``DiNAT_s`` (``embed_dim, depths,
    num_heads, kernel_size, dilations, mlp_ratio``)."""

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        kernel_size: int = 7,
        dilations: Optional[Sequence[Sequence[int]]] = None,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        norm_layer=nn.LayerNorm,
        patch_norm: bool = True,
        act_layer=nn.GELU,
        attn_backend: str = "auto",
        attn_layout: str = "auto",
        device=None,
        dtype=None,
    ):
        _args.positive_int("patch_size", patch_size)
        super().__init__(
            stem_layer=partial(patch_embed, patch_size=patch_size, norm_layer=norm_layer if patch_norm else None),
            downsample_layer=PatchMerging, stem_stride=patch_size, img_size=img_size, in_chans=in_chans,
            num_classes=num_classes, global_pool=global_pool, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
            mlp_ratio=mlp_ratio, kernel_size=kernel_size, dilations=dilations, layer_scale=None, qkv_bias=qkv_bias,
            qk_scale=qk_scale, drop_rate=drop_rate, proj_drop_rate=proj_drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, norm_layer=norm_layer, act_layer=act_layer, attn_backend=attn_backend,
            attn_layout=attn_layout, device=device, dtype=dtype,
        )
        self.architecture.update(patch_size=patch_size)
        del self.architecture["layer_scale"]  # DiNAT_s has none


def checkpoint_filter_fn(state_dict: Dict, model: DiNAT_s) -> Dict[str, torch.Tensor]:
    """The original ``dinats.py`` layout (``layers.i.blocks.j…``), or ours, to this model's keys."""
    formats = [("original", lambda keys: any(k.startswith("layers.") for k in keys),
                lambda sd: convert_original_hierarchical(sd, "layers"))]
    return filter_checkpoint(state_dict, model, formats, first_conv=("patch_embed.proj",))


def _create_dinat_s(variant: str, pretrained: bool = False, **kwargs) -> DiNAT_s:
    stages = len(kwargs.get("depths", (2, 2, 6, 2)))
    return build_family_model(DiNAT_s, variant, pretrained, checkpoint_filter_fn, stages, **kwargs)


_URL = "https://shi-labs.com/projects/dinat/checkpoints/"
_NAME_NOTE = "file name from the original code (dinats.py); the original DiNAT.md links '{}' instead"


def _cfg(file: str, alt_file: str, notes=(), **kwargs) -> Dict[str, Any]:
    return pretrained_cfg(_URL + file, first_conv="patch_embed.proj", notes=(_NAME_NOTE.format(alt_file), *notes), **kwargs)


default_cfgs = generate_default_cfgs({
    "dinat_s_tiny.in1k": _cfg("imagenet1k/dinat_s_tiny_in1k_224.pth", "dinat_s_tiny_1k_224.pth"),
    "dinat_s_small.in1k": _cfg("imagenet1k/dinat_s_small_in1k_224.pth", "dinat_s_small_1k_224.pth"),
    "dinat_s_base.in1k": _cfg("imagenet1k/dinat_s_base_in1k_224.pth", "dinat_s_base_1k_224.pth"),
    "dinat_s_large.in22k_ft_in1k": _cfg("imagenet1k/dinat_s_large_in1k_224.pth", "dinat_s_large_1k_224.pth"),
    "dinat_s_large.in22k": _cfg(
        "imagenet22k/dinat_s_large_in22k_224.pth", "dinat_s_large_22k_224.pth", num_classes=21841,
        notes=("pre-trained with drop_path_rate=0.2 (the original registers it as dinat_s_large_21k); pass "
               "drop_path_rate=0.2 to train it as it was",)),
    "dinat_s_large_384.in22k_ft_in1k": _cfg(
        "imagenet1k/dinat_s_large_in1k_384.pth", "dinat_s_large_1k_384.pth",
        input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
})

_D224 = [[1, 8], [1, 4], [1, 2] * 9, [1, 1]]
_LARGE = dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), mlp_ratio=4.0, kernel_size=7)


_make = partial(make_variant, _create_dinat_s)


@register_model
def dinat_s_tiny(pretrained: bool = False, **kwargs) -> DiNAT_s:
    defaults = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2,
                    dilations=[[1, 8], [1, 4], [1, 2] * 3, [1, 1]])
    return _make("dinat_s_tiny", pretrained, defaults, kwargs)


@register_model
def dinat_s_small(pretrained: bool = False, **kwargs) -> DiNAT_s:
    defaults = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3, dilations=_D224)
    return _make("dinat_s_small", pretrained, defaults, kwargs)


@register_model
def dinat_s_base(pretrained: bool = False, **kwargs) -> DiNAT_s:
    defaults = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5, dilations=_D224)
    return _make("dinat_s_base", pretrained, defaults, kwargs)


@register_model
def dinat_s_large(pretrained: bool = False, **kwargs) -> DiNAT_s:
    return _make("dinat_s_large", pretrained, dict(_LARGE, drop_path_rate=0.35, dilations=_D224), kwargs)


@register_model
def dinat_s_large_384(pretrained: bool = False, **kwargs) -> DiNAT_s:
    dilations = [[1, 13], [1, 6], [1, 3] * 9, [1, 1]]
    return _make("dinat_s_large_384", pretrained, dict(_LARGE, drop_path_rate=0.35, dilations=dilations, img_size=384), kwargs)
