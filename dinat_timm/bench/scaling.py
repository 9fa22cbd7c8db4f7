"""How a backbone's cost grows with the image: the scaling suite's models, sizes and steps.

DiNAT's main use is as a detection and segmentation backbone (UperNet, Mask R-CNN, Mask2Former) at
512–1333 px, where neighborhood and window attention grow linearly with the tokens and global
attention quadratically. Each model runs as timm's ``features_only`` backbone, forward and a
training step (forward, a loss on every feature map, backward, AdamW), at square sizes; peak memory
is ``dinat_timm.bench.memory``'s, as in the memory suite.

At sizes where DiNAT's published segmentation and detection configs use other dilations than the
ImageNet ones, those are used, and the row says which (``dilations``).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import timm
import torch

from .steps import DTYPES, autocast, is_dinat_model

CPU_SIZES = (224, 320, 448)
GPU_SIZES = (224, 384, 512, 768, 1024)

# DiNAT-T's dilations in the original repo's configs (SHI-Labs/Neighborhood-Attention-Transformer):
# classification at 224 (classification/dinat.py), UperNet on ADE20K at 512x512
# (segmentation/configs/dinat/upernet_dinat_tiny_512x512_160k_ade20k.py), Mask R-CNN on COCO at
# up to 800x1333 (detection/configs/dinat/mask_rcnn_dinat_tiny_3x_coco.py).
DINAT_TINY_DILATIONS = {
    "imagenet-224": [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1] * 5],
    "ade20k-512": [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4] * 3, [1, 2, 1, 2, 1]],
    "coco-800": [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7] * 3, [1, 3, 1, 3, 1]],
}


MAX_SIZE = 4096  # px a side; far past what a detection or segmentation backbone is run at


def scaling_sizes(options) -> List[int]:
    sizes = options.ints("scaling-sizes", minimum=32, maximum=MAX_SIZE) if options.get("scaling-sizes") else None
    return list(sizes or (GPU_SIZES if options.on_gpu else CPU_SIZES))


# Bytes per input pixel a step needs at most, from the measured rows of DiNAT-T (the hungriest local-attention
# backbone here: 586.5 MB for a 448² training step, 48.5 MB forward, CPU, 2026-12-03), with room to spare;
# global attention (ViT) also grows with the square of the tokens.
_BYTES_PER_PIXEL = {"forward": 600, "train": 6000}


def estimated_step_bytes(model: str, img_size: int, batch: int, mode: str) -> int:
    """A generous estimate of what one step of ``model`` needs at ``img_size``, before anything is allocated."""
    per_pixel = _BYTES_PER_PIXEL[check_mode(mode)]
    quadratic = (img_size / 224) ** 2 if model.startswith("vit") else 1.0
    return int(batch * img_size * img_size * per_pixel * max(1.0, quadratic))


def available_bytes(device: str) -> Optional[int]:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return None


def check_fits(model: str, img_size: int, batch: int, mode: str, device: str) -> None:
    """Refuse, before allocating, a size whose step cannot fit in the device's free memory."""
    need, have = estimated_step_bytes(model, img_size, batch, mode), available_bytes(device)
    if have is not None and need > have:
        raise MemoryError(f"{model} {mode} at {img_size} px, batch {batch}: a step needs about {need / 2**30:,.1f} GiB "
                          f"(estimated) and {device} has {have / 2**30:,.1f} GiB free; not run")


def check_mode(mode: str) -> str:
    if mode not in ("forward", "train"):
        raise ValueError(f"unknown step mode {mode!r}: 'forward' or 'train'")
    return mode


def scaling_batch(options) -> int:
    return options.int("scaling-batch-size", 1) if options.get("scaling-batch-size") else (8 if options.on_gpu else 1)


def dilations_for(model: str, img_size: int) -> Tuple[str, Optional[list]]:
    """(label, dilations) the published configs use for ``model`` at ``img_size``; NAT and the
    reference models have none ('-')."""
    if model.split(".")[0] != "dinat_tiny":
        return ("1 everywhere" if is_dinat_model(model) else "-"), None
    label = "coco-800" if img_size >= 800 else "ade20k-512" if img_size >= 512 else "imagenet-224"
    return label, DINAT_TINY_DILATIONS[label]


def build_backbone(model: str, img_size: int, device: str, backend: str = "auto") -> Tuple[torch.nn.Module, str]:
    """``model`` as a ``features_only`` backbone for ``img_size`` inputs, and its dilations' label."""
    label, dilations = dilations_for(model, img_size)
    kwargs: Dict = dict(features_only=True)
    if dilations is not None:
        kwargs["dilations"] = dilations
    if is_dinat_model(model):
        kwargs["attn_backend"] = backend
    if model.startswith(("swin", "vit")) or is_dinat_model(model):
        kwargs["img_size"] = img_size  # Swin's masks and ViT's position embedding are sized for it
    return timm.create_model(model, **kwargs).to(device), label


def tokens(backbone: torch.nn.Module, img_size: int) -> int:
    """Tokens at the backbone's first feature level (stride 4 for the hierarchical models, 16 for ViT)."""
    stride = backbone.feature_info.reduction()[0]
    return (img_size // stride) ** 2


def _loss(features) -> torch.Tensor:
    return sum(f.float().mean() for f in features)


def step_fn(backbone: torch.nn.Module, x: torch.Tensor, mode: str, dtype: str) -> Callable[[], None]:
    """One forward (``mode="forward"``) or training step (``"train"``) of the backbone on ``x``."""
    check_mode(mode)
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    device = x.device.type
    if mode == "forward":
        backbone.eval()

        def forward():
            with torch.inference_mode(), autocast(device, dtype):
                backbone(x)

        return forward
    backbone.train()
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-4)

    def train():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = _loss(backbone(x))
        loss.backward()
        optimizer.step()

    return train
