"""The part of timm's model API that every family implements the same way."""
from __future__ import annotations

from typing import Callable, List, Optional, Set, Union

import torch
import torch.nn as nn
from timm.layers import get_device_dtype
from timm.models._features import feature_take_indices

from ..ops.chooser import check_backend_name
from ._blocks import NeighborhoodAttention2d, check_attn_layout, check_image_input


class ClassifierModelMixin:
    """Expects ``self.patch_embed``, ``self.pos_drop``, ``self.head`` (a timm ``ClassifierHead`` on
    NHWC features), ``self.in_chans``, ``self.min_input_size``, ``self.num_classes``,
    ``self.global_pool`` and ``forward_features``."""

    def __prepare_scriptable__(self):
        # torch.jit.script calls this first: say plainly why not, instead of a parse error deep inside
        raise RuntimeError(
            f"{type(self).__name__} is not TorchScript-scriptable: its attention picks a backend at run time "
            "(fused Triton, NATTEN, pure PyTorch) and caches shape-dependent layouts, which TorchScript cannot "
            "express. Use torch.export.export(model.eval(), (x,)), torch.onnx.export(..., dynamo=True) or "
            "torch.jit.trace(model.eval(), (x,)) at one image size: see docs/export.md, section 'TorchScript'."
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """Relative position bias tables, as the original training excluded them."""
        return {n for n, _ in self.named_parameters() if n.endswith(".rpb")}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        # the model's device and dtype: after reset_classifier(0) the head has no parameter to take them from
        self.head.reset(num_classes, pool_type=global_pool, **get_device_dtype(self))

    def set_attn_backend(self, backend: str) -> None:
        """Route every neighborhood attention through ``backend`` ("auto", "triton", "tiled", "natten"…).
        An unknown name is refused here; whether a known backend can serve a call is checked per call."""
        check_backend_name(backend)
        for module in self.modules():
            if isinstance(module, NeighborhoodAttention2d):
                module.backend = backend

    def set_attn_layout(self, layout: str) -> None:
        """"window": run every layer whose dilation sub-grids are exactly k×k as window attention (the
        same numbers, see ``NeighborhoodAttention2d``); "neighborhood": every layer on its backend; "auto"
        (the default): the window layout on CPU when the backend is left to the chooser."""
        check_attn_layout(layout)
        for module in self.modules():
            if isinstance(module, NeighborhoodAttention2d):
                module.layout = layout

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The input checked (channels, size, 4-D), through the patch embedding and its dropout."""
        check_image_input(x, self.in_chans, self.min_input_size)
        return self.pos_drop(self.patch_embed(x))

    def _run_collecting(
        self,
        units: nn.Sequential,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]],
        norm_tap: Callable[[int, torch.Tensor], torch.Tensor],
        stop_early: bool,
        output_fmt: str,
    ):
        """Stem, then ``units`` (stages or blocks) in order, keeping the outputs ``indices`` asks
        for (``norm_tap(i, x)`` may normalise one); returns (x, intermediates, index of last unit run)."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(units), indices)
        x = self.stem(x)
        run = units if torch.jit.is_scripting() or not stop_early else units[: max_index + 1]
        intermediates, i = [], 0
        for i, unit in enumerate(run):
            x = unit(x)
            if i in take_indices:
                tap = norm_tap(i, x)
                intermediates.append(tap.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else tap)
        return x, intermediates, i

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
