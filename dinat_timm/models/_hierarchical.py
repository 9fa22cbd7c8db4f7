"""The body and timm API shared by the two hierarchical families (DiNAT/NAT and DiNAT_s).

They differ only in their stem and downsampler; stages of ``NATBlock``s, the final norm, the
head and everything timm asks of a model (features, intermediates, pruning, checkpointing,
parameter groups) are the same and live here once.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import ClassifierHead, calculate_drop_path_rates
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices

from . import _args
from ._api import ClassifierModelMixin
from ._blocks import NATBlock, check_attn_layout, init_weights, neighborhood_attention_layer


class NATStage(nn.Module):
    """Optional downsample, then blocks. The original code downsamples at the end of a level;
    like timm's Swin, the downsample opens the next stage here, so a stage's output is its
    feature map (the filter fns move the keys)."""

    def __init__(
        self,
        *,
        downsample: nn.Module,
        dim: int,
        depth: int,
        num_heads: int,
        kernel_size: int,
        dilations: Sequence[int],
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: Optional[float],
        proj_drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        layer_scale: Optional[float],
        act_layer,
        norm_layer,
        attn_backend: str,
        attn_layout: str,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.grad_checkpointing = False
        self.downsample = downsample
        self.blocks = nn.Sequential(*[
            NATBlock(
                dim, num_heads,
                attn_layer=neighborhood_attention_layer(kernel_size=kernel_size, dilation=dilations[i], attn_drop=attn_drop,
                                                        backend=attn_backend, layout=attn_layout),
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, proj_drop=proj_drop, drop_path=drop_path[i],
                layer_scale=layer_scale, act_layer=act_layer, norm_layer=norm_layer, **dd,
            )
            for i in range(depth)
        ])

    def forward(self, x):
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


def resolve_dilations(dilations, depths) -> List[List[int]]:
    if dilations is None:
        return [[1] * d for d in depths]
    try:
        dilations = [list(d) for d in dilations]
    except TypeError:
        raise ValueError(f"dilations must be a list per stage of one integer per block, got {dilations!r}") from None
    if [len(d) for d in dilations] != list(depths):
        raise ValueError(f"dilations {dilations} needs one entry per block of depths {list(depths)}")
    for stage in dilations:
        _args.int_list("dilations", stage)
    return dilations


class HierarchicalNAT(ClassifierModelMixin, nn.Module):
    """Stem (stride ``stem_stride``) -> stages doubling channels and halving resolution -> norm -> head."""

    def __init__(
        self,
        *,
        stem_layer: Callable[..., nn.Module],
        downsample_layer: Callable[..., nn.Module],
        stem_stride: int,
        img_size,
        in_chans: int,
        num_classes: int,
        global_pool: str,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        mlp_ratio: float,
        kernel_size: int,
        dilations,
        layer_scale: Optional[float],
        qkv_bias: bool,
        qk_scale: Optional[float],
        drop_rate: float,
        proj_drop_rate: float,
        attn_drop_rate: float,
        drop_path_rate: float,
        norm_layer,
        act_layer,
        attn_backend: str,
        attn_layout: str,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        check_attn_layout(attn_layout)
        _args.image_size("img_size", img_size)
        _args.positive_int("in_chans", in_chans)
        _args.positive_int("num_classes", num_classes, minimum=0)
        _args.positive_int("embed_dim", embed_dim)
        depths = _args.int_list("depths", depths)
        if isinstance(num_heads, Sequence) and len(num_heads) != len(depths):
            raise ValueError(f"num_heads {tuple(num_heads)} needs one entry per stage of depths {depths}")
        num_heads = _args.int_list("num_heads", num_heads, len(depths))
        _args.positive_number("mlp_ratio", mlp_ratio)
        _args.kernel_size(kernel_size)
        _args.optional_positive_number("layer_scale", layer_scale)
        for name, value in (("drop_rate", drop_rate), ("proj_drop_rate", proj_drop_rate),
                            ("attn_drop_rate", attn_drop_rate), ("drop_path_rate", drop_path_rate)):
            _args.rate(name, value)
        _args.heads_divide([embed_dim * 2**i for i in range(len(depths))], num_heads)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.img_size = img_size
        self.depths = depths
        self.dilations = resolve_dilations(dilations, depths)
        self.kernel_size = kernel_size
        # what the architecture is, as constructor arguments (written to timm's Hub config.json)
        self.architecture = dict(embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads), mlp_ratio=mlp_ratio,
                                 kernel_size=kernel_size, dilations=self.dilations, layer_scale=layer_scale)
        self.min_input_size = stem_stride * 2 ** (len(depths) - 1)
        self.output_fmt = "NHWC"  # forward_features' layout, as timm's Swin declares it
        self.grad_checkpointing = False

        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.num_features = self.head_hidden_size = dims[-1]
        self.patch_embed = stem_layer(in_chans=in_chans, embed_dim=embed_dim, **dd)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)  # per block, split by stage
        stages, self.feature_info = [], []
        for i, depth in enumerate(depths):
            downsample = downsample_layer(dims[i - 1], dims[i], norm_layer=norm_layer, **dd) if i else nn.Identity()
            stages.append(NATStage(
                downsample=downsample, dim=dims[i], depth=depth, num_heads=num_heads[i], kernel_size=kernel_size,
                dilations=self.dilations[i], mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], layer_scale=layer_scale,
                act_layer=act_layer, norm_layer=norm_layer, attn_backend=attn_backend, attn_layout=attn_layout, **dd,
            ))
            self.feature_info.append(dict(num_chs=dims[i], reduction=stem_stride * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features, **dd)
        self.head = ClassifierHead(
            self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, input_fmt="NHWC", **dd
        )
        self.apply(init_weights)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^patch_embed",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (``indices``: last n if int, else which), NCHW or NHWC, and the final features."""
        last = len(self.stages) - 1

        def tap(i, x):  # the final norm is sized for, and only applied to, the last stage
            return self.norm(x) if norm and i == last else x

        x, intermediates, ran = self._run_collecting(self.stages, x, indices, tap, stop_early, output_fmt)
        if intermediates_only:
            return intermediates
        return (self.norm(x) if ran == last else x), intermediates

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        prune_end = max_index < len(self.feature_info) - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))
