"""Shared helpers for the families' ``checkpoint_filter_fn``: unwrapping, validation, rpb resizing."""
from __future__ import annotations

import os
import re
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional
from urllib.parse import urlparse

import torch
import torch.nn as nn

from ._blocks import resize_rpb

# Keys timm itself reconciles after the filter: the classifier (dropped when num_classes differs)
# and the first conv (adapted when in_chans differs).
_TIMM_ADAPTS = ("head.fc.",)


class CheckpointMismatchError(ValueError):
    """A checkpoint whose converted keys or shapes do not fit the model."""


def unwrap_state_dict(state_dict: Dict) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint saved as ``{'model': …}``, ``{'state_dict': …}`` or bare, DDP prefix off."""
    if not isinstance(state_dict, Mapping):
        raise CheckpointMismatchError(
            f"the checkpoint holds a {type(state_dict).__name__}, not a state dict (a mapping of parameter names "
            "to tensors, as model.state_dict() returns)")
    for key in ("model", "state_dict", "model_state"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
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


# -- where pretrained weights come from ------------------------------------------------------------------

_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a Hub repo, safe first
_PROBE_TIMEOUT_S = 3.0


@dataclass
class WeightSources:
    """Every place a tag's weights can come from, in timm's order: the Hub repo, then the URL."""

    hf_repo: Optional[str]
    url: Optional[str]

    def hf_cache_files(self) -> List[Path]:
        from huggingface_hub import constants

        if not self.hf_repo:
            return []
        repo = Path(constants.HF_HUB_CACHE) / ("models--" + self.hf_repo.replace("/", "--"))
        return [repo / "snapshots" / "<revision>" / name for name in _HF_FILES]

    def url_cache_file(self) -> Optional[Path]:
        if not self.url:
            return None
        return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(self.url).path)

    def cached(self) -> Optional[str]:
        """A local copy timm would use, or None."""
        if self.hf_repo:
            from huggingface_hub import try_to_load_from_cache

            for name in _HF_FILES:
                found = try_to_load_from_cache(self.hf_repo, name)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
        local = self.url_cache_file()
        return str(local) if local is not None and local.is_file() else None

    def download_urls(self) -> List[str]:
        urls = [f"https://huggingface.co/{self.hf_repo}/resolve/main/{name}" for name in _HF_FILES] if self.hf_repo else []
        return urls + ([self.url] if self.url else [])

    def explain(self, variant: str, why: str) -> str:
        lines = [f"no pretrained weights for {variant!r}: {why}.", "Place one of these files and call again:"]
        for path in self.hf_cache_files():
            lines.append(f"  Hugging Face cache: {path}  (hf download {self.hf_repo} {path.name})")
        if self.url_cache_file() is not None:
            lines.append(f"  torch hub cache:    {self.url_cache_file()}")
        lines.append("downloadable from:")
        lines += [f"  {url}" for url in self.download_urls()]
        lines.append(f"or pass a file you have: timm.create_model({variant!r}, pretrained=True, "
                     "pretrained_cfg_overlay=dict(file='/path/to/checkpoint.pth'))  (.pth, .bin or .safetensors; "
                     "original or transformers layout)")
        return "\n".join(lines)


def _reachable(url: str) -> bool:
    """Whether ``url``'s host accepts a connection within a few seconds (instead of a client's retries)."""
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


class CorruptCheckpoint(RuntimeError):
    """A checkpoint file that is missing, empty, not a checkpoint, or whose bytes fail their checksum."""


_HEX = set("0123456789abcdef")


def _blob_checksum(path: Path):
    """(algorithm, expected digest, digest of the bytes) for a file of the Hugging Face cache, whose
    blobs are named by their checksum (sha256 for LFS files, git's sha1 for small ones); else None."""
    import hashlib

    blob = Path(os.path.realpath(path))
    name = blob.name
    if blob.parent.name != "blobs" or not set(name) <= _HEX or len(name) not in (40, 64):
        return None
    digest = hashlib.sha256() if len(name) == 64 else hashlib.sha1(b"blob %d\0" % blob.stat().st_size)
    with open(blob, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return ("sha256" if len(name) == 64 else "git sha1"), name, digest.hexdigest()


def check_checkpoint_file(path) -> None:
    """Refuse, naming the file and what is wrong, a checkpoint that cannot be the weights: missing,
    empty, not a checkpoint format, or with bytes that fail a checksum (the Hub cache's blob name, or
    the CRC-32 of every member of a ``torch.save`` zip archive)."""
    path = Path(path)
    if not path.exists():
        raise CorruptCheckpoint(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise CorruptCheckpoint(f"checkpoint {path} is a directory, not a file")
    size = path.stat().st_size
    if size == 0:
        raise CorruptCheckpoint(f"checkpoint {path} is empty (0 bytes): an interrupted download? Fetch it again")
    checksum = _blob_checksum(path)
    if checksum and checksum[1] != checksum[2]:
        raise CorruptCheckpoint(f"checkpoint {path}: its {checksum[0]} is {checksum[2]}, the Hub's is {checksum[1]}: "
                                "the file is corrupted; delete it and download it again")
    with open(path, "rb") as f:
        head = f.read(16)
    if zipfile.is_zipfile(path):  # torch.save's format
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError) as e:
            raise CorruptCheckpoint(f"checkpoint {path} is a damaged zip archive ({e}): download it again") from None
        if bad is not None:
            raise CorruptCheckpoint(f"checkpoint {path}: member {bad!r} fails its CRC-32 checksum: the file is "
                                    "corrupted; download it again")
        return
    if path.suffix == ".safetensors" or (len(head) == 16 and head[8:9] == b"{"):
        header = int.from_bytes(head[:8], "little")
        if len(head) < 9 or header <= 0 or header > size - 8:
            raise CorruptCheckpoint(f"checkpoint {path} is not a valid safetensors file (header length {header}, "
                                    f"file size {size})")
        return
    if head[:1] == b"\x80":  # a legacy (pre-zip) torch.save pickle stream
        return
    raise CorruptCheckpoint(f"checkpoint {path} is not a checkpoint: neither a torch.save archive nor safetensors "
                            f"({size} bytes, starting {head[:12]!r})")


def read_checkpoint(path) -> Dict:
    """The state dict in a checkpoint file, read safely (safetensors, or ``torch.load(weights_only=True)``:
    no pickled code runs), after ``check_checkpoint_file``; every failure names the file."""
    check_checkpoint_file(path)
    path = str(path)
    try:
        if path.endswith(".safetensors") or (not zipfile.is_zipfile(path) and _looks_safetensors(path)):
            import safetensors.torch

            state = safetensors.torch.load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader's failure, named with the file
        raise CorruptCheckpoint(f"checkpoint {path} could not be read: {type(e).__name__}: {e}") from None
    try:
        return unwrap_state_dict(state)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{path}: {e}") from None


def _looks_safetensors(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def resolve_weight_source(variant: str, kwargs: Dict) -> Dict:
    """Read the weights here when a local copy exists (the caller's file, or a cached download),
    checked and named in every error, and hand them to timm; try the URL when the Hub is out of reach,
    and fail at once, saying what to place where, when no source can serve."""
    from timm.models._builder import resolve_pretrained_cfg

    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    cfg = resolve_pretrained_cfg(variant, kwargs.get("pretrained_cfg"), overlay)
    if cfg.source == "hf-hub":  # timm's own Hub layout, read by timm: check the cached file's checksum first
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(cfg.hf_hub_id.split("@")[0], "model.safetensors")
        if isinstance(cached, str):
            check_checkpoint_file(cached)
        return kwargs
    if cfg.state_dict or cfg.source == "local-dir":  # handed over, or an exported directory timm reads
        return kwargs
    local = cfg.file or WeightSources(cfg.hf_hub_id, cfg.url).cached()
    if local:
        overlay.update(state_dict=read_checkpoint(local), file=str(local))
        return dict(kwargs, pretrained_cfg_overlay=overlay)
    sources = WeightSources(cfg.hf_hub_id, cfg.url)
    if _offline():
        raise PretrainedWeightsUnavailable(sources.explain(variant, "offline (HF_HUB_OFFLINE) and not in a local cache"))
    else:
        hub_up = bool(sources.hf_repo) and _reachable("https://huggingface.co")
        if not hub_up and sources.url and _reachable(sources.url):
            overlay["hf_hub_id"] = None  # the Hub is out of reach: timm takes the URL
        elif not hub_up:
            raise PretrainedWeightsUnavailable(sources.explain(variant, "neither huggingface.co nor the URL's host could be reached"))
    return dict(kwargs, pretrained_cfg_overlay=overlay)


class PretrainedWeightsUnavailable(RuntimeError):
    """No source of a tag's weights is reachable or cached; the message says what to place where."""


def _weights_file(kwargs: Dict) -> Optional[str]:
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    return overlay.get("file")


def build_family_model(model_cls, variant: str, pretrained: bool, filter_fn, num_features: int, **kwargs):
    """``build_model_with_cfg`` with timm's feature getter over ``num_features`` stages or blocks,
    weights from whichever source can serve them (checked before they are read), and a load failure
    reported as which weights, from which file, failed and why."""
    from timm.models import build_model_with_cfg

    out_indices = kwargs.pop("out_indices", tuple(range(num_features)))
    feature_cfg = dict(out_indices=out_indices, feature_cls="getter")
    if pretrained:
        kwargs = resolve_weight_source(variant, kwargs)
    source = _weights_file(kwargs) if pretrained else None
    where = f" from {source}" if source else ""
    try:
        model = build_model_with_cfg(
            model_cls, variant, pretrained, pretrained_filter_fn=filter_fn, feature_cfg=feature_cfg, **kwargs
        )
        for cfg in {id(c): c for c in (getattr(model, "pretrained_cfg", None), getattr(model, "default_cfg", None))
                    if isinstance(c, dict)}.values():
            cfg.pop("state_dict", None)  # the weights are in the model; the cfg keeps the file's name
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
