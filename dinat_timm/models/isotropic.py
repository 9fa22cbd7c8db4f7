"""Isotropic NAT / DiNAT, and the ViT-rpb baseline they are read against.

Paper: "Dilated Neighborhood Attention Transformer", Hassani & Shi, arXiv:2209.15001 (isotropic
variants). Original code: SHI-Labs/Neighborhood-Attention-Transformer ``classification/isotropic.py``.
A 16×16 patch stem and a single resolution (14×14 tokens at 224); DiNAT alternates dilation 1
and ``dilation``; ViT-rpb swaps neighborhood attention for global attention with a (2L-1)²
relative position bias. Blocks are the shared ``NATBlock``.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import ClassifierHead, calculate_drop_path_rates, register_notrace_module, trunc_normal_
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..ops._cache import cached_constant
from . import _args
from ._api import ClassifierModelMixin
from ._blocks import (NATBlock, channels_last_contiguous, check_attn_layout, init_weights, neighborhood_attention_layer,
                      patch_embed)
from ._checkpoint import filter_checkpoint, head_fc_key
from ._factory import build_family_model, make_variant, pretrained_cfg

__all__ = ["NATIsotropic", "GlobalAttentionRPB"]


@cached_constant(maxsize=32)
def _relative_index(height: int, width: int, table: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """[N, N] row and column indices ``Δ + L - 1`` (Δ = key - query) into a (2L-1)² table."""
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    return rows[None, :] - rows[:, None] + table - 1, cols[None, :] - cols[:, None] + table - 1


@register_notrace_module  # torch.fx: a leaf, it indexes its bias by the token grid
class GlobalAttentionRPB(nn.Module):
    """Multi-head self-attention over all tokens of an NHWC map, plus relative position bias.

    The original indexes its table through a flipped ``relative_position_index`` buffer; that
    flip makes the bias of a (query, key) pair ``rpb[h, Δrow + L-1, Δcol + L-1]`` with
    Δ = key - query, the same convention as neighborhood attention, computed here directly.
    Maps up to ``input_size`` per side are covered by the table.
    """

    def __init__(self, dim, num_heads, *, input_size=14, qkv_bias=True, qk_scale=None, proj_drop=0.0, device=None,
                 dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.input_size = input_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.rpb = nn.Parameter(torch.empty(num_heads, 2 * input_size - 1, 2 * input_size - 1, **dd))
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.rpb, std=0.02)

    def forward(self, x):
        batch, height, width, channels = x.shape
        if height > self.input_size or width > self.input_size:
            raise ValueError(
                f"feature map {height}x{width} exceeds the {self.input_size}x{self.input_size} this ViT-rpb's "
                "relative position bias table covers; build it with a larger img_size"
            )
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        rows, cols = _relative_index(height, width, self.input_size, x.device)
        bias = self.rpb[:, rows, cols].to(q.dtype).unsqueeze(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        x = channels_last_contiguous(x.transpose(1, 2)).view(batch, height, width, channels)
        return self.proj_drop(self.proj(x))


class NATIsotropic(ClassifierModelMixin, nn.Module):
    """Isotropic NAT/DiNAT (``attention="neighborhood"``) or ViT-rpb (``attention="global"``).

    Argument names follow the original ``NATIsotropic`` (``embed_dim, depth, num_heads,
    kernel_size, dilation, mlp_ratio``); layer ``i`` uses dilation 1 if ``i`` is even, else ``dilation``.
    """

    def __init__(
        self,
        img_size: Union[int, Tuple[int, int]] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        kernel_size: int = 7,
        dilation: int = 2,
        attention: str = "neighborhood",
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer=nn.LayerNorm,
        patch_norm: bool = True,
        act_layer=nn.GELU,
        attn_backend: str = "auto",
        attn_layout: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        check_attn_layout(attn_layout)
        if attention not in ("neighborhood", "global"):
            raise ValueError(f"attention must be 'neighborhood' or 'global', got {attention!r}")
        _args.image_size("img_size", img_size)
        _args.positive_int("patch_size", patch_size)
        _args.positive_int("in_chans", in_chans)
        _args.positive_int("num_classes", num_classes, minimum=0)
        _args.positive_int("embed_dim", embed_dim)
        _args.positive_int("depth", depth)
        _args.positive_int("num_heads", num_heads)
        _args.heads_divide([embed_dim], [num_heads])
        _args.positive_number("mlp_ratio", mlp_ratio)
        if attention == "neighborhood":
            _args.kernel_size(kernel_size)
            _args.positive_int("dilation", dilation)
        for name, value in (("drop_rate", drop_rate), ("proj_drop_rate", proj_drop_rate),
                            ("attn_drop_rate", attn_drop_rate), ("drop_path_rate", drop_path_rate)):
            _args.rate(name, value)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.img_size = img_size
        self.min_input_size = patch_size
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.output_fmt = "NHWC"  # forward_features' layout, as timm's Swin declares it
        self.grad_checkpointing = False
        self.patch_embed = patch_embed(patch_size, in_chans, embed_dim, norm_layer if patch_norm else None, **dd)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, depth)
        self.dilations = [1 if i % 2 == 0 else dilation for i in range(depth)]
        # what the architecture is, as constructor arguments (written to timm's Hub config.json)
        self.architecture = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                 patch_size=patch_size, attention=attention)
        if attention == "neighborhood":
            self.architecture.update(kernel_size=kernel_size, dilation=dilation)
        if attention == "global":
            grid = (img_size if isinstance(img_size, int) else max(img_size)) // patch_size
            attn_layers = [partial(GlobalAttentionRPB, input_size=grid)] * depth
        else:
            attn_layers = [neighborhood_attention_layer(kernel_size=kernel_size, dilation=d, attn_drop=attn_drop_rate,
                                                        backend=attn_backend, layout=attn_layout) for d in self.dilations]
        self.blocks = nn.Sequential(*[
            NATBlock(
                embed_dim, num_heads, attn_layer=attn_layers[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, proj_drop=proj_drop_rate, drop_path=dpr[i], act_layer=act_layer,
                norm_layer=norm_layer, **dd,
            )
            for i in range(depth)
        ])
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        self.norm = norm_layer(embed_dim, **dd)
        self.head = ClassifierHead(embed_dim, num_classes, pool_type=global_pool, drop_rate=drop_rate, input_fmt="NHWC", **dd)
        self.apply(init_weights)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r"^patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Block outputs (``indices``: last n if int, else which), NCHW or NHWC, and the final features."""
        tap = (lambda i, x: self.norm(x)) if norm else (lambda i, x: x)
        x, intermediates, _ = self._run_collecting(self.blocks, x, indices, tap, stop_early, output_fmt)
        return intermediates if intermediates_only else (self.norm(x), intermediates)

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)


def _convert_original(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        if key.endswith("relative_position_index"):
            continue  # derived from the map size here, not stored
        if key.startswith("layers."):
            key = "blocks." + key[len("layers."):]
        out[head_fc_key(key)] = value
    return out


def checkpoint_filter_fn(state_dict: Dict, model: NATIsotropic) -> Dict[str, torch.Tensor]:
    """The original ``isotropic.py`` layout (``layers.i…``, ViT-rpb's index buffers), or ours, to this model."""
    formats = [("original", lambda keys: any(k.startswith("layers.") for k in keys), _convert_original)]
    return filter_checkpoint(state_dict, model, formats, first_conv=("patch_embed.proj",))


def _create(variant: str, pretrained: bool = False, **kwargs) -> NATIsotropic:
    kwargs.setdefault("out_indices", 3)  # the last three blocks, as timm's ViTs
    return build_family_model(NATIsotropic, variant, pretrained, checkpoint_filter_fn, kwargs.get("depth", 12), **kwargs)


def _cfg(name: str, **kwargs) -> Dict[str, Any]:
    url = f"https://shi-labs.com/projects/dinat/checkpoints/isotropic/{name}_in1k_224.pth"
    return pretrained_cfg(url, first_conv="patch_embed.proj", pool_size=(14, 14), **kwargs)


default_cfgs = generate_default_cfgs({
    f"{name}.in1k": _cfg(name)
    for name in ("nat_isotropic_small", "dinat_isotropic_small", "vitrpb_small",
                 "nat_isotropic_base", "dinat_isotropic_base", "vitrpb_base")
})

_SMALL = dict(embed_dim=384, depth=12, num_heads=12, mlp_ratio=4.0, drop_path_rate=0.1)
_BASE = dict(embed_dim=768, depth=12, num_heads=24, mlp_ratio=4.0, drop_path_rate=0.4)


_make = partial(make_variant, _create)


@register_model
def nat_isotropic_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _make("nat_isotropic_small", pretrained, dict(_SMALL, kernel_size=7, dilation=1), kwargs)


@register_model
def dinat_isotropic_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _make("dinat_isotropic_small", pretrained, dict(_SMALL, kernel_size=7, dilation=2), kwargs)


@register_model
def vitrpb_small(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _make("vitrpb_small", pretrained, dict(_SMALL, attention="global"), kwargs)


@register_model
def nat_isotropic_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _make("nat_isotropic_base", pretrained, dict(_BASE, kernel_size=7, dilation=1), kwargs)


@register_model
def dinat_isotropic_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _make("dinat_isotropic_base", pretrained, dict(_BASE, kernel_size=7, dilation=2), kwargs)


@register_model
def vitrpb_base(pretrained: bool = False, **kwargs) -> NATIsotropic:
    return _make("vitrpb_base", pretrained, dict(_BASE, attention="global"), kwargs)
