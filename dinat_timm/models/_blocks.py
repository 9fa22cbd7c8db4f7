"""The attention module and transformer block that every DiNAT/NAT family shares.

Parameter names follow the original code (``qkv``, ``rpb``, ``proj``, ``norm1``, ``mlp.fc1``…) so
that checkpoints convert with little renaming; layer scale uses timm's ``LayerScale`` (``ls1.gamma``).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, LayerScale, Mlp, PatchEmbed, register_notrace_function, register_notrace_module, trunc_normal_

from ..ops import neighborhood_attention_2d
from ..ops._cache import exporting
from ..ops.backends import window as windows
from ..ops.flops import counted_as_the_operator
from ..ops.chooser import check_backend_name


def channels_last_contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x.contiguous()``: free for the fused backends' output, already laid out as
    ``[B, H, W, heads, D]``. Under export an unconditional copy instead: with a symbolic batch,
    ONNX's decompositions cannot tell that a heads-major tensor is not contiguous and drop the
    copy that ``contiguous`` (or ``reshape``) should make, then fail to view it."""
    if exporting():
        return x.clone(memory_format=torch.contiguous_format)
    return x.contiguous()


ATTN_LAYOUTS = ("auto", "neighborhood", "window")


def uses_windows(layout: str, backend: str, device_type: str) -> bool:
    """Whether window-shaped layers run as window attention: ``layout="window"``, or ``"auto"`` where that was
    measured faster, on CPU with the backend left to the chooser (``NeighborhoodAttention2d``)."""
    if layout == "auto":
        return backend == "auto" and device_type == "cpu"
    return layout == "window"


def check_attn_layout(layout: str) -> None:
    if layout not in ATTN_LAYOUTS:
        raise ValueError(f"attn_layout must be one of {list(ATTN_LAYOUTS)}, got {layout!r}")


@register_notrace_module  # torch.fx (timm's feature extraction): a leaf, its padding depends on the map size
class NeighborhoodAttention2d(nn.Module):
    """Multi-head (dilated) neighborhood attention with relative position bias, on NHWC maps.

    A map smaller than ``kernel_size * dilation`` is zero-padded at the bottom/right before the
    qkv projection and cropped after attention, exactly as the original models did (NATTEN <=
    0.15 and transformers): the padded tokens take part in attention, unmasked.

    ``layout="window"``: where every dilation sub-grid is exactly ``k×k`` (a ``k·d`` map, padded or
    not), the input is permuted into windows once before ``qkv`` and back after ``proj``, and
    attention is one window SDPA with the shared bias (``ops.backends.window``); other maps keep the
    neighborhood path on ``backend``. The numbers are the same either way. ``layout="auto"`` (the
    default) is the window layout where it was measured faster, on CPU with the backend left to the
    chooser, and the neighborhood layout elsewhere (on a GPU, unmeasured; with a backend pinned, so that
    every layer runs on it).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kernel_size: int = 7,
        dilation: int = 1,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "auto",
        layout: str = "auto",
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
        check_attn_layout(layout)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.backend = backend
        self.layout = layout
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.rpb = nn.Parameter(torch.empty(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1, **dd))
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)

    def extra_repr(self) -> str:
        return (f"heads={self.num_heads}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"backend={self.backend!r}, layout={self.layout!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        window = self.kernel_size * self.dilation
        pad_bottom, pad_right = max(0, window - height), max(0, window - width)
        if pad_bottom or pad_right:
            x = F.pad(x, (0, 0, 0, pad_right, 0, pad_bottom))
        padded_h, padded_w = x.shape[1], x.shape[2]
        if self._windows(x) and windows.is_window_shaped(int(padded_h), int(padded_w), self.kernel_size, self.dilation):
            x = self._attend_windows(x)  # projected in window order, before the permutation back
            if pad_bottom or pad_right:
                x = x[:, :height, :width]
        else:
            x = self._attend_neighborhoods(x)
            if pad_bottom or pad_right:
                x = x[:, :height, :width]
            x = self.proj(x)
        return self.proj_drop(x)

    def _windows(self, x: torch.Tensor) -> bool:
        return uses_windows(self.layout, self.backend, x.device.type)

    def _attend_neighborhoods(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        qkv = self.qkv(x).reshape(batch, height, width, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)  # each [B, heads, H, W, D]
        x = neighborhood_attention_2d(
            q, k, v, self.kernel_size, self.dilation, self.rpb, self.scale, backend=self.backend
        )
        return channels_last_contiguous(x.permute(0, 2, 3, 1, 4)).view(batch, height, width, channels)

    def _attend_windows(self, x: torch.Tensor) -> torch.Tensor:
        """A ``k·d`` map as ``B·d²`` windows of its ``k×k`` sub-grids: the same numbers as the
        neighborhood path, two copies (the permutations) around a window attention."""
        batch, _, _, channels = x.shape
        k, d, heads = self.kernel_size, self.dilation, self.num_heads
        tokens = windows.partition(x, k, d)  # [B·d², k², C]
        qkv = self.qkv(tokens).reshape(-1, k * k, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, key, v = qkv.unbind(0)  # each [B·d², heads, k², D]
        bias = windows.window_bias(self.rpb, k, heads, q.dtype, q.device)
        with counted_as_the_operator(q.unflatten(2, (k, k)), k):  # FlopCounterMode: the operator's own count
            out = windows.attend(q, key, v, bias, self.scale)
        out = channels_last_contiguous(out.transpose(1, 2)).view(-1, k * k, channels)  # (an explicit copy: export)
        return windows.reverse(self.proj(out), k, d, batch)


class NATBlock(nn.Module):
    """Pre-norm transformer block: attention then MLP, each with layer scale and drop path.

    ``attn_layer`` builds the attention as ``attn_layer(dim, num_heads, qkv_bias=, qk_scale=,
    proj_drop=, device=, dtype=)``; the families pass ``NeighborhoodAttention2d`` (or the global
    attention of the ViT-rpb baseline) with their own arguments bound (``functools.partial``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        attn_layer: Callable[..., nn.Module] = NeighborhoodAttention2d,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        layer_scale: Optional[float] = None,
        act_layer=nn.GELU,
        norm_layer=nn.LayerNorm,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.norm1 = norm_layer(dim, **dd)
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


def neighborhood_attention_layer(*, kernel_size: int, dilation: int, attn_drop: float = 0.0, backend: str = "auto",
                                 layout: str = "auto") -> Callable[..., nn.Module]:
    """``NeighborhoodAttention2d`` with one block's own arguments bound, as ``NATBlock`` takes it."""
    return partial(NeighborhoodAttention2d, kernel_size=kernel_size, dilation=dilation, attn_drop=attn_drop,
                   backend=backend, layout=layout)


def patch_embed(patch_size=4, in_chans=3, embed_dim=96, norm_layer=nn.LayerNorm, device=None, dtype=None) -> nn.Module:
    """The stem of DiNAT_s (4×4) and of the isotropic models (16×16): timm's ``PatchEmbed`` as the original
    ran it: a non-overlapping conv on the input zero-padded to a multiple of the patch, LayerNorm, NHWC out."""
    return PatchEmbed(img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, norm_layer=norm_layer,
                      flatten=False, output_fmt="NHWC", strict_img_size=False, dynamic_img_pad=True, device=device,
                      dtype=dtype)


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
