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
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ._blocks import NATBlock, check_image_input, init_weights, stage_drop_path_rates
from ._checkpoint import build_family_model, check_converted, resize_rpb_tables, unwrap_state_dict

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


class DiNATStage(nn.Module):
    """Optional downsample (the original's end-of-level downsample, moved to the next stage's
    start as timm's Swin does, so a stage's output is its feature map), then blocks."""

    def __init__(self, dim, out_dim, depth, num_heads, kernel_size, dilations, downsample, mlp_ratio, qkv_bias,
                 qk_scale, proj_drop, attn_drop, drop_path, layer_scale, norm_layer, act_layer, attn_backend,
                 device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.grad_checkpointing = False
        self.downsample = ConvDownsample(dim, out_dim, norm_layer, **dd) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            NATBlock(
                out_dim, num_heads, kernel_size, dilations[i], mlp_ratio, qkv_bias, qk_scale, proj_drop, attn_drop,
                drop_path[i], layer_scale, act_layer, norm_layer, attn_backend=attn_backend, **dd,
            )
            for i in range(depth)
        ])

    def forward(self, x):
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class DiNAT(nn.Module):
    """Hierarchical (Di)NAT. ``dilations=None`` is NAT (dilation 1 everywhere).

    Argument names follow the original ``NAT``/``DiNAT`` classes (``embed_dim, depths, num_heads,
    mlp_ratio, kernel_size, dilations, layer_scale, drop_path_rate``).
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
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        depths, num_heads = tuple(depths), tuple(num_heads)
        if len(num_heads) != len(depths):
            raise ValueError(f"num_heads {num_heads} needs one entry per stage of depths {depths}")
        if dilations is None:
            dilations = [[1] * d for d in depths]
        dilations = [list(d) for d in dilations]
        if [len(d) for d in dilations] != list(depths):
            raise ValueError(f"dilations {dilations} needs one entry per block of depths {depths}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.img_size = img_size
        self.depths = depths
        self.dilations = dilations
        self.kernel_size = kernel_size
        self.min_input_size = 4 * 2 ** (len(depths) - 1)
        self.grad_checkpointing = False

        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.num_features = self.head_hidden_size = dims[-1]
        self.patch_embed = ConvStem(in_chans, embed_dim, norm_layer, **dd)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = stage_drop_path_rates(drop_path_rate, depths)
        stages, self.feature_info = [], []
        for i, depth in enumerate(depths):
            stages.append(DiNATStage(
                dims[max(i - 1, 0)], dims[i], depth, num_heads[i], kernel_size, dilations[i], i > 0, mlp_ratio,
                qkv_bias, qk_scale, proj_drop_rate, attn_drop_rate, dpr[i], layer_scale, norm_layer, act_layer,
                attn_backend, **dd,
            ))
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2**i, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features, **dd)
        self.head = ClassifierHead(
            self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, input_fmt="NHWC", **dd
        )
        self.apply(init_weights)

    # -- timm model API ------------------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith(".rpb")}

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

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head.reset(num_classes, pool_type=global_pool)

    def set_attn_backend(self, backend: str) -> None:
        """Route every neighborhood attention through ``backend`` ("auto", "tiled", "natten"…)."""
        for module in self.modules():
            if hasattr(module, "rpb") and hasattr(module, "backend"):
                module.backend = backend

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
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        check_image_input(x, self.in_chans, self.min_input_size)
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        x = self.pos_drop(self.patch_embed(x))
        last = len(self.stages) - 1
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        i = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                x_inter = self.norm(x) if norm and i == last else x
                intermediates.append(x_inter.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else x_inter)
        if intermediates_only:
            return intermediates
        if i == last:
            x = self.norm(x)
        return x, intermediates

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
        check_image_input(x, self.in_chans, self.min_input_size)
        x = self.pos_drop(self.patch_embed(x))
        x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


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


def _convert_original(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """SHI-Labs classification/nat.py & dinat.py layout -> ours."""
    out = {}
    for key, value in state_dict.items():
        k = re.sub(r"^levels\.(\d+)\.downsample\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.", key)
        k = re.sub(r"^levels\.", "stages.", k)
        k = re.sub(r"\.gamma([12])$", lambda m: f".ls{m[1]}.gamma", k)
        if k.startswith("head.") and not k.startswith("head.fc."):
            k = "head.fc." + k[len("head."):]
        out[k] = value
    return out


def checkpoint_filter_fn(state_dict: Dict, model: DiNAT) -> Dict[str, torch.Tensor]:
    """Convert either published format (or ours) to this model's keys, resizing rpb to its kernel."""
    state_dict = unwrap_state_dict(state_dict)
    if any(k.startswith(("dinat.", "nat.")) for k in state_dict):
        source, state_dict = "transformers", _convert_hf(state_dict)
    elif any(k.startswith("levels.") for k in state_dict):
        source, state_dict = "original", _convert_original(state_dict)
    else:
        source = "dinat_timm"
    resize_rpb_tables(state_dict, model)
    check_converted(state_dict, model, source, first_conv=("patch_embed.proj.0",))
    return state_dict


# -- registry ---------------------------------------------------------------------------------------


def _create_dinat(variant: str, pretrained: bool = False, **kwargs) -> DiNAT:
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (3, 4, 6, 5))))))
    return build_family_model(
        DiNAT, variant, pretrained, checkpoint_filter_fn, dict(out_indices=out_indices, feature_cls="getter"), **kwargs
    )


def _cfg(url: str = "", hf_hub_id: Optional[str] = None, **kwargs) -> Dict[str, Any]:
    cfg = {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj.0",
        "classifier": "head.fc",
        "license": "mit",
        "paper_ids": "arXiv:2209.15001",
        "paper_name": "Dilated Neighborhood Attention Transformer",
        "origin_url": "https://github.com/SHI-Labs/Neighborhood-Attention-Transformer",
    }
    if hf_hub_id:
        cfg["hf_hub_id"] = hf_hub_id
    cfg.update(kwargs)
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


def _make(variant, pretrained, defaults, kwargs):
    return _create_dinat(variant, pretrained=pretrained, **{**defaults, **kwargs})


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
