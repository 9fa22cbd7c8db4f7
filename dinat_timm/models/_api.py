"""The part of timm's model API that every family implements the same way."""
from __future__ import annotations

from typing import Optional, Set

import torch
import torch.nn as nn

from ._blocks import NeighborhoodAttention2d


class ClassifierModelMixin:
    """Expects ``self.head`` (a timm ``ClassifierHead`` on NHWC features), ``self.num_classes``,
    ``self.global_pool`` and ``forward_features``."""

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
        self.head.reset(num_classes, pool_type=global_pool)

    def set_attn_backend(self, backend: str) -> None:
        """Route every neighborhood attention through ``backend`` ("auto", "tiled", "natten"…)."""
        for module in self.modules():
            if isinstance(module, NeighborhoodAttention2d):
                module.backend = backend

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
