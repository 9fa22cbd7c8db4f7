"""Converting and checking state dicts for the families' ``checkpoint_filter_fn``: unwrapping, the
original repo's layouts, resizing rpb tables, and naming every key that does not fit."""
from __future__ import annotations

import re
from typing import Dict, Iterable, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# Keys timm itself reconciles after the filter: the classifier (dropped when num_classes differs)
# and the first conv (adapted when in_chans differs).
_TIMM_ADAPTS = ("head.fc.",)


class CheckpointMismatchError(ValueError):
    """A checkpoint whose converted keys or shapes do not fit the model."""


# Where a checkpoint keeps its weights, in timm's order (``timm.models.load_state_dict`` with its default
# ``use_ema=True``): train.py's EMA weights first, then its plain ones, then the original repo's ``model``.
STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state")
EMA_KEYS = ("state_dict_ema", "model_ema")
# The classifier's weight under each published layout: ours and timm train.py's, the original repo's,
# transformers'.
HEAD_WEIGHTS = ("head.fc.weight", "head.weight", "classifier.weight")


def state_dict_key(checkpoint: Mapping, use_ema: bool = True) -> str:
    """Which entry of ``checkpoint`` holds the weights ('' for a bare state dict); the EMA weights only with
    ``use_ema`` (timm's ``load_state_dict`` takes them by default, its ``validate.py`` only with --use-ema)."""
    keys = STATE_DICT_KEYS if use_ema else tuple(k for k in STATE_DICT_KEYS if k not in EMA_KEYS)
    return next((k for k in keys if isinstance(checkpoint.get(k), Mapping)), "")


def head_classes(state_dict: Mapping) -> Optional[int]:
    """How many classes the checkpoint's classifier has (any published layout, DDP and compile prefixes
    off), or None where it has none."""
    for key, value in state_dict.items():
        for wrapper in ("_orig_mod.", "module.", "_orig_mod."):
            key = key[len(wrapper):] if key.startswith(wrapper) else key
        if key in HEAD_WEIGHTS and isinstance(value, torch.Tensor) and value.ndim == 2:
            return int(value.shape[0])
    return None


def unwrap_state_dict(state_dict: Dict, use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint: bare, or under one of ``STATE_DICT_KEYS``; DDP and compile prefixes off."""
    if not isinstance(state_dict, Mapping):
        raise CheckpointMismatchError(
            f"the checkpoint holds a {type(state_dict).__name__}, not a state dict (a mapping of parameter names "
            "to tensors, as model.state_dict() returns)")
    key = state_dict_key(state_dict, use_ema)
    state_dict = state_dict[key] if key else state_dict
    out = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            continue
        for wrapper in ("_orig_mod.", "module.", "_orig_mod."):  # torch.compile and DDP, in either order
            k = k[len(wrapper):] if k.startswith(wrapper) else k
        out[k] = v
    return out


def convert_original_hierarchical(state_dict: Dict[str, torch.Tensor], level: str) -> Dict[str, torch.Tensor]:
    """The original repo's hierarchical layouts (``levels.i`` in nat.py/dinat.py, ``layers.i`` in
    dinats.py) -> ours: downsamples open the next stage, layer scales become ``ls{1,2}.gamma``,
    the classifier is ``head.fc``."""
    out = {}
    for key, value in state_dict.items():
        k = re.sub(rf"^{level}\.(\d+)\.downsample\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.", key)
        k = re.sub(rf"^{level}\.", "stages.", k)
        k = re.sub(r"\.gamma([12])$", lambda m: f".ls{m[1]}.gamma", k)
        out[head_fc_key(k)] = value
    return out


def head_fc_key(key: str) -> str:
    return "head.fc." + key[len("head."):] if key.startswith("head.") and not key.startswith("head.fc.") else key


def resize_rpb_tables(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> None:
    """Resample every ``*.attn.rpb`` to the kernel size of the model's matching module, in place."""
    targets = {name + ".rpb": p.shape for name, m in model.named_modules() for n, p in m.named_parameters(recurse=False) if n == "rpb"}
    for key, shape in targets.items():
        if key in state_dict and state_dict[key].shape != shape and state_dict[key].shape[0] == shape[0]:
            state_dict[key] = resize_rpb(state_dict[key], (shape[-1] + 1) // 2)


def check_converted(state_dict: Dict[str, torch.Tensor], model: nn.Module, source: str, first_conv: Iterable[str] = ()) -> None:
    """Raise naming every missing, unexpected or misshapen key after conversion."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    adapts = tuple(_TIMM_ADAPTS) + tuple(c + "." for c in first_conv)

    def adapted(key):
        return key.startswith(adapts)

    missing = sorted(k for k in expected if k not in state_dict and not adapted(k))
    unexpected = sorted(k for k in state_dict if k not in expected and not adapted(k))
    misshapen = sorted(
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k])}"
        for k, v in state_dict.items()
        if k in expected and not adapted(k) and tuple(v.shape) != tuple(expected[k])
    )
    if missing or unexpected or misshapen:
        parts = [f"checkpoint ({source} format) does not match {type(model).__name__}:"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_names(missing, ', ')}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_names(unexpected, ', ')}")
        if misshapen:
            parts.append(f"shape mismatches ({len(misshapen)}): {_names(misshapen, '; ')}")
        raise CheckpointMismatchError("\n  ".join(parts))


def _names(items, sep, limit=50):
    """All names up to ``limit``; past it (a checkpoint of another model entirely) the first ones."""
    shown = sep.join(items[:limit])
    return shown if len(items) <= limit else f"{shown}{sep}… (+{len(items) - limit} more)"


def filter_checkpoint(state_dict: Dict, model: nn.Module, formats, first_conv: Iterable[str]) -> Dict[str, torch.Tensor]:
    """Unwrap, detect the format (``formats``: ``(name, detect(keys), convert(state_dict))``, first
    match wins, else ours), convert, resize rpb tables to the model's kernels, validate."""
    state_dict = unwrap_state_dict(state_dict)
    source = "dinat_timm"
    for name, detect, convert in formats:
        if detect(state_dict.keys()):
            source, state_dict = name, convert(state_dict)
            break
    resize_rpb_tables(state_dict, model)
    check_converted(state_dict, model, source, first_conv=first_conv)
    return state_dict


def resize_rpb(rpb: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Bicubically resample a ``[heads, 2k-1, 2k-1]`` bias table to another kernel size."""
    span = 2 * kernel_size - 1
    if rpb.shape[-1] == span and rpb.shape[-2] == span:
        return rpb
    resized = F.interpolate(rpb.float()[None], size=(span, span), mode="bicubic", align_corners=False)
    return resized[0].to(rpb.dtype)
