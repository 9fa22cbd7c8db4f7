"""The attention module and transformer block that every DiNAT/NAT family shares.

Parameter names follow the original code (``qkv``, ``rpb``, ``proj``, ``norm1``, ``mlp.fc1``…) so
that checkpoints convert with little renaming; layer scale uses timm's ``LayerScale`` (``ls1.gamma``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerScale, Mlp, register_notrace_function, register_notrace_module, trunc_normal_

from ..ops import neighborhood_attention_2d
from ..ops._cache import exporting
from ..ops.chooser import check_backend_name


def channels_last_contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()``: free for the fused backends' output, already laid out as
    ``[B, H, W, heads, D]``. Under export an unconditional copy instead: with a symbolic batch,
    ONNX's decompositions cannot tell that a heads-major tensor is not contiguous and drop the
    copy that ``contiguous`` (or ``reshape``) should make, then fail to view it."""
    if exporting():
        return x.clone(memory_format=torch.contiguous_format)
    return x.contiguous()


@register_notrace_module  # torch.fx (timm's feature extraction): a leaf, its padding depends on the map size
class NeighborhoodAttention2d(nn.Module):
    """Multi-head (dilated) neighborhood attention with relative position bias, on NHWC maps.

    A map smaller than ``kernel_size * dilation`` is zero-padded at the bottom/right before the
    qkv projection and cropped after attention, exactly as the original models did (NATTEN <=
    0.15 and transformers): the padded tokens take part in attention, unmasked.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 7,
        dilation: int = 1,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if attn_drop:
            raise NotImplementedError(
                "attention dropout is not supported: the exact fused backends never materialise the "
                "attention matrix (the published DiNAT/NAT models all use attn_drop=0)"
            )
        check_backend_name(backend)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.backend = backend
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.rpb = nn.Parameter(torch.empty(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1, **dd))
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, kernel_size={self.kernel_size}, dilation={self.dilation}, backend={self.backend!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        window = self.kernel_size * self.dilation
        pad_bottom, pad_right = max(0, window - height), max(0, window - width)
        if pad_bottom or pad_right:
            x = F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))
        padded_h, padded_w = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(batch, padded_h, padded_w, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # each [B, heads, H, W, D]
        x = neighborhood_attention_2d(
            q, k, v, self.kernel_size, self.dilation, self.rpb, self.scale, backend=self.backend
        )
        x = channels_last_contiguous(x.permute(0, 2, 3, 1, 4)).view(batch, padded_h, padded_w, channels)
        if pad_bottom or pad_right:
            x = x[:, :height, :width]
        return self.proj_drop(self.proj(x))


class NATBlock(nn.Module):
    """Pre-norm transformer block: neighborhood attention then MLP, each with layer scale and drop path."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 7,
        dilation: int = 1,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: Optional[float] = None,
        act_layer=nn.GELU,
        norm_layer=nn.LayerNorm,
        attn_layer=NeighborhoodAttention2d,
        attn_backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = norm_layer(dim, **dd)
        if attn_layer is NeighborhoodAttention2d:
            self.attn = attn_layer(
                dim, num_heads, kernel_size, dilation, qkv_bias, qk_scale, attn_drop, proj_drop, attn_backend, **dd
            )
        else:  # e.g. the isotropic ViT-rpb baseline's global attention
            self.attn = attn_layer(dim, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, proj_drop=proj_drop, **dd)
        self.ls1 = LayerScale(dim, layer_scale, **dd) if layer_scale else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)
        self.ls2 = LayerScale(dim, layer_scale, **dd) if layer_scale else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


def init_weights(module: nn.Module) -> None:
    """The original models' init: truncated-normal linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@register_notrace_function  # torch.fx: a leaf call, checked on real tensors when the graph runs
def check_image_input(x: torch.Tensor, in_chans: int, min_size: int) -> None:
    """Readable errors for the inputs users most often get wrong."""
    if isinstance(x, torch.fx.Proxy):  # symbolic tracing (timm's FX feature extraction): nothing to check yet
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected an image tensor [B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"expected a 4-D image tensor [B, C, H, W], got {x.dim()}-D of shape {tuple(x.shape)}")
    if exporting() and not all(isinstance(size, int) for size in x.shape[2:]):
        raise ValueError(
            "these models export with a static image size: the neighborhood layouts are functions of "
            "the height and width, computed once at trace time. Only the batch can be dynamic, e.g. "
            "dynamic_shapes=({0: torch.export.Dim('batch')},); export once per image size you serve"
        )
    if x.shape[1] != in_chans:
        raise ValueError(
            f"expected {in_chans} input channels, got {x.shape[1]} (input shape {tuple(x.shape)}); "
            f"build the model with in_chans={x.shape[1]} for other inputs"
        )
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f"image {x.shape[2]}x{x.shape[3]} is smaller than this model's minimum {min_size}x{min_size} "
            "(its total downsampling stride)"
        )


def linear_drop_path_rates(drop_path_rate: float, count: int) -> list:
    """``count`` rates from 0 to ``drop_path_rate``, as ``torch.linspace`` gives them, without
    making a tensor (which fails under ``with torch.device("meta")``)."""
    if count <= 1:
        return [0.0] * count
    return [drop_path_rate * i / (count - 1) for i in range(count)]


def stage_drop_path_rates(drop_path_rate: float, depths: Sequence[int]):
    """Stochastic depth rising linearly over all blocks, split per stage (the original schedule)."""
    rates = linear_drop_path_rates(drop_path_rate, sum(depths))
    out, start = [], 0
    for depth in depths:
        out.append(rates[start : start + depth])
        start += depth
    return out


def resize_rpb(rpb: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Bicubically resample a ``[heads, 2k-1, 2k-1]`` bias table to another kernel size."""
    span = 2 * kernel_size - 1
    if rpb.shape[-1] == span and rpb.shape[-2] == span:
        return rpb
    resized = F.interpolate(rpb.float()[None], size=(span, span), mode="bicubic", align_corners=False)
    return resized[0].to(rpb.dtype)
