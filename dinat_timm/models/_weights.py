"""Where a tag's pretrained weights come from, and reading them safely.

The Hub repo or the original URL, in timm's order; a cached copy of either is read here, offline,
after a check of the file (present, not empty, a checkpoint format, its checksum), with
``torch.load(weights_only=True)`` or safetensors, so that every failure names the file.
"""
from __future__ import annotations

import os
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import urlparse

import torch

from ._checkpoint import CheckpointMismatchError, unwrap_state_dict

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
