"""Building a family's registered variants: the pretrained cfg they share, timm's builder with
weights from whichever source serves, and a variant's defaults merged with the caller's arguments."""
from __future__ import annotations

import logging
import warnings
from typing import Callable, Dict, Optional

from ._checkpoint import CheckpointMismatchError
from ._weights import CorruptCheckpoint, PretrainedWeightsUnavailable, resolve_weight_source


def pretrained_cfg(url: str, **kwargs) -> Dict:
    """What every DiNAT-family pretrained cfg shares; families override stem, pool size and the rest."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return {
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "classifier": "head.fc",
        "license": "mit",
        "paper_ids": "arXiv:2209.15001",
        "paper_name": "Dilated Neighborhood Attention Transformer",
        "origin_url": "https://github.com/SHI-Labs/Neighborhood-Attention-Transformer",
        **kwargs,
    }


def _weights_file(kwargs: Dict) -> Optional[str]:
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    return overlay.get("file")


_logger = logging.getLogger(__name__)


def _say_which_weights(loaded) -> None:
    """timm's words for what was loaded; a warning (shown by default) where the file holds two sets."""
    _logger.info("Loaded %s from checkpoint '%s'", loaded.key or "a bare state dict", loaded.path)
    if loaded.others:
        _logger.warning("%s holds %s: loaded '%s' (timm's use_ema convention: the EMA weights when present)",
                        loaded.path, " and ".join(repr(k) for k in (loaded.key, *loaded.others)), loaded.key)


def _warn_if_head_dropped(variant: str, own_file: Optional[str], kwargs: Dict, model) -> None:
    """Where the caller's own checkpoint has a classifier that the model asked for another number of classes
    cannot take, timm leaves the head random: say so, and how to keep the trained one."""
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    file_classes, asked = overlay.get("num_classes"), getattr(model, "num_classes", None)
    if not own_file or file_classes is None or asked in (None, 0, file_classes) or kwargs.get("features_only"):
        return
    warnings.warn(
        f"{own_file}: its classifier head.fc has {file_classes} classes and the model was built for {asked} "
        f"(num_classes={asked}), so the trained head was dropped and {variant}'s head.fc is randomly initialised. "
        f"To keep the trained head: leave num_classes out (or pass num_classes={file_classes}) with "
        f"pretrained_cfg_overlay=dict(file=...), or use timm's timm.create_model({variant!r}, "
        f"checkpoint_path={own_file!r}, num_classes={file_classes})", UserWarning, stacklevel=4)


def build_family_model(model_cls, variant: str, pretrained: bool, filter_fn, num_features: int, **kwargs):
    """``build_model_with_cfg`` with timm's feature getter over ``num_features`` stages or blocks,
    weights from whichever source can serve them (checked before they are read), and a load failure
    reported as which weights, from which file, failed and why."""
    from timm.models import build_model_with_cfg

    out_indices = kwargs.pop("out_indices", tuple(range(num_features)))
    feature_cfg = dict(out_indices=out_indices, feature_cls="getter")
    loaded = None
    own_file = _weights_file(kwargs) if pretrained else None  # the caller's own checkpoint, if one was given
    if pretrained:
        kwargs, loaded = resolve_weight_source(variant, kwargs)
    source = _weights_file(kwargs) if pretrained else None
    where = f" from {source}" if source else ""
    try:
        model = build_model_with_cfg(
            model_cls, variant, pretrained, pretrained_filter_fn=filter_fn, feature_cfg=feature_cfg, **kwargs
        )
        for module in model.modules():  # a features_only wrapper's model has its own cfg
            for attr in ("pretrained_cfg", "default_cfg"):
                cfg = getattr(module, attr, None)
                if isinstance(cfg, dict):
                    cfg.pop("state_dict", None)  # the weights are in the model (a second copy otherwise); the file's name stays
        if loaded is not None:
            _say_which_weights(loaded)
        _warn_if_head_dropped(variant, own_file, kwargs, model)
        return model
    except CheckpointMismatchError as e:
        if source and source not in str(e):
            raise CheckpointMismatchError(f"{source}: {e}") from e
        raise
    except (CorruptCheckpoint, PretrainedWeightsUnavailable):
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with context below
        if not pretrained or isinstance(e, TypeError):
            raise
        raise RuntimeError(f"could not load pretrained weights for {variant!r}{where}: {type(e).__name__}: {e}") from e


def make_variant(create: Callable, variant: str, pretrained: bool, defaults: Dict, kwargs: Dict):
    """A registered variant: its defaults, overridden by whatever the caller passed."""
    return create(variant, pretrained=pretrained, **{**defaults, **kwargs})
