"""Where a tag's pretrained weights come from, and reading them safely.

The Hub repo or the original URL, in timm's order; a cached copy of either is read here, offline,
after a check of the file (present, not empty, a checkpoint format, its checksum), with
``torch.load(weights_only=True)`` or safetensors, so that every failure names the file.
"""
from __future__ import annotations

import argparse
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlparse

import torch

from ._checkpoint import STATE_DICT_KEYS, CheckpointMismatchError, head_classes, state_dict_key, unwrap_state_dict

_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm reads from a Hub repo, safe first
_URL_TIMEOUT_S = 10.0  # seconds without a byte before an original-URL download gives up
# What timm's train.py pickles beside the tensors (CheckpointSaver: its ``args``): allowed to load with
# ``weights_only=True``; any other global, such as a function a crafted pickle would call, is refused.
TRAINING_CHECKPOINT_GLOBALS = (argparse.Namespace,)


@dataclass
class WeightSources:
    """Every place a tag's weights can come from, in timm's order: the Hub repo, then the URL; and the
    cache they land in (``cache_dir``, as timm's ``create_model(..., cache_dir=...)`` passes it: the
    Hugging Face cache layout for the repo, the file's own name for the URL), else the default caches."""

    hf_repo: Optional[str]
    url: Optional[str]
    cache_dir: Optional[str] = None

    def hf_cache_files(self) -> List[Path]:
        from huggingface_hub import constants

        if not self.hf_repo:
            return []
        root = Path(self.cache_dir) if self.cache_dir else Path(constants.HF_HUB_CACHE)
        repo = root / ("models--" + self.hf_repo.replace("/", "--"))
        return [repo / "snapshots" / "<revision>" / name for name in _HF_FILES]

    def url_cache_file(self) -> Optional[Path]:
        if not self.url:
            return None
        folder = Path(self.cache_dir) if self.cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
        return folder / os.path.basename(urlparse(self.url).path)

    def cached(self) -> Optional[str]:
        """A local copy timm would use, or None."""
        if self.hf_repo:
            from huggingface_hub import try_to_load_from_cache

            for name in _HF_FILES:
                found = try_to_load_from_cache(self.hf_repo, name, cache_dir=self.cache_dir)
                if isinstance(found, str) and os.path.isfile(found):
                    return found
        local = self.url_cache_file()
        return str(local) if local is not None and local.is_file() else None

    def repo_page(self) -> Optional[str]:
        """The repo's page on the endpoint huggingface_hub talks to (``HF_ENDPOINT``: a mirror, if set)."""
        from huggingface_hub import constants

        return f"{constants.ENDPOINT}/{self.hf_repo}" if self.hf_repo else None

    def download_urls(self) -> List[str]:
        from huggingface_hub import hf_hub_url

        urls = [hf_hub_url(self.hf_repo, name) for name in _HF_FILES] if self.hf_repo else []
        return urls + ([self.url] if self.url else [])

    def download(self) -> Tuple[Optional[str], List[str]]:
        """Fetch the weights into the cache: the Hub repo through huggingface_hub (its endpoint, so
        ``HF_ENDPOINT`` mirrors; its HTTP client, so ``HTTPS_PROXY``; its timeouts; one probe first, so
        that an unreachable host fails at once), else the URL (urllib, which also honours the proxy variables). Returns the
        file, or None and why each source failed."""
        problems = []
        if self.hf_repo:
            found, why = self._from_hub()
            if found:
                return found, problems
            problems.append(why)
        if self.url:
            found, why = self._from_url()
            if found:
                return found, problems
            problems.append(why)
        return None, problems

    def _from_hub(self) -> Tuple[Optional[str], str]:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError

        missing = []
        for name in _HF_FILES:
            try:  # one request, no retries: hf_hub_download retries a refused connection for half a minute
                get_hf_file_metadata(hf_hub_url(self.hf_repo, name), timeout=constants.HF_HUB_ETAG_TIMEOUT)
            except EntryNotFoundError:
                missing.append(name)  # the repo has the other format
                continue
            except Exception as e:  # noqa: BLE001 - unreachable, refused, no such repo: said with the endpoint
                return None, f"{constants.ENDPOINT} ({self.hf_repo}) could not serve it: {_first_line(e)}"
            try:
                return hf_hub_download(self.hf_repo, name, cache_dir=self.cache_dir), ""
            except Exception as e:  # noqa: BLE001 - the download itself failed
                return None, f"{constants.ENDPOINT} ({self.hf_repo}) could not serve {name}: {_first_line(e)}"
        return None, f"{self.repo_page()} holds none of {', '.join(missing)}"

    def _from_url(self) -> Tuple[Optional[str], str]:
        """The URL's file, into the cache only once it is whole and a checkpoint: an interrupted download, one cut
        short of its Content-Length, or a page (a login or error page served with 200) never becomes the cached
        copy that every later call would trust."""
        import tempfile
        import urllib.request

        target = self.url_cache_file()
        partial = None
        try:
            with urllib.request.urlopen(self.url, timeout=_URL_TIMEOUT_S) as response:
                expected = response.headers.get("Content-Length")
                kind = response.headers.get("Content-Type", "")
                target.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix,
                                                 delete=False) as part:
                    partial = part.name
                    while chunk := response.read(1 << 20):
                        part.write(chunk)
            got = os.path.getsize(partial)
            if expected is not None and expected.isdigit() and got != int(expected):
                raise CorruptCheckpoint(f"the download was cut at {got} of {expected} bytes")
            if kind.startswith("text/"):
                raise CorruptCheckpoint(f"the server answered with a {kind.split(';')[0]} page, not a checkpoint")
            check_checkpoint_file(partial)
            os.replace(partial, target)  # whole or not at all: an interrupted download leaves no file
            return str(target), ""
        except Exception as e:  # noqa: BLE001 - DNS, refused, timeout, HTTP error, not a checkpoint: said with the URL
            if partial and os.path.exists(partial):
                os.unlink(partial)
            return None, f"{self.url} could not be fetched: {_first_line(e)}"

    def explain(self, variant: str, why: str) -> str:
        lines = [f"no pretrained weights for {variant!r}: {why}.", "Place one of these files and call again:"]
        for path in self.hf_cache_files():
            lines.append(f"  Hugging Face cache: {path}  (hf download {self.hf_repo} {path.name}"
                         + (f" --cache-dir {self.cache_dir}" if self.cache_dir else "") + ")")
        if self.url_cache_file() is not None:
            lines.append(f"  {'cache_dir' if self.cache_dir else 'torch hub cache'}:    {self.url_cache_file()}")
        lines.append("downloadable from:")
        lines += [f"  {url}" for url in self.download_urls()]
        lines.append("(huggingface_hub reads a mirror from HF_ENDPOINT and a proxy from HTTPS_PROXY)")
        lines.append(f"or pass a file you have: timm.create_model({variant!r}, pretrained=True, "
                     "pretrained_cfg_overlay=dict(file='/path/to/checkpoint.pth'))  (.pth, .pth.tar, .bin or "
                     ".safetensors; original, transformers or timm train.py layout)")
        return "\n".join(lines)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


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
    return ("sha256" if len(name) == 64 else "git sha1"), name, file_digest(blob, digest)


def file_digest(path, digest=None) -> str:
    """The hex digest of a file's bytes, read a chunk at a time: sha256, or ``digest`` (a hashlib object, perhaps
    already fed a prefix). ``hashlib.file_digest`` does this from Python 3.11 on."""
    import hashlib

    digest = hashlib.sha256() if digest is None else digest
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    if head[:4] == b"PK\x03\x04":  # a zip whose end (the directory) is gone: cut off
        raise CorruptCheckpoint(f"checkpoint {path} is a damaged zip archive (torch.save's format) whose end is "
                                f"missing ({size} bytes): a truncated copy or download? Fetch it again")
    if path.suffix == ".safetensors" or (len(head) == 16 and head[8:9] == b"{"):
        import safetensors

        try:  # safetensors' own reader: the header's JSON, and that the file covers every tensor it lists
            with safetensors.safe_open(str(path), framework="pt"):
                pass
        except Exception as e:  # noqa: BLE001 - the reader's words, with the file
            raise CorruptCheckpoint(f"checkpoint {path} is not a valid safetensors file ({size} bytes): "
                                    f"{_first_line(e)}") from None
        return
    if head[:1] == b"\x80":  # a legacy (pre-zip) torch.save pickle stream
        return
    raise CorruptCheckpoint(f"checkpoint {path} is not a checkpoint: neither a torch.save archive nor safetensors "
                            f"({size} bytes, starting {head[:12]!r})")


class UnsafeCheckpoint(CorruptCheckpoint):
    """A pickle that would import something beyond tensors and what timm's train.py writes: not loaded."""


@dataclass
class LoadedCheckpoint:
    path: str
    state_dict: Dict[str, torch.Tensor]
    key: str  # the entry the weights came from ('' for a bare state dict)
    others: Tuple[str, ...] = ()  # other entries holding weights that were not taken (train.py's plain ones)


def load_checkpoint(path, use_ema: bool = True) -> LoadedCheckpoint:
    """The weights in a checkpoint file, read safely after ``check_checkpoint_file``: safetensors, or
    ``torch.load(weights_only=True)`` allowing exactly what timm's train.py pickles beside the tensors
    (``TRAINING_CHECKPOINT_GLOBALS``), so no pickled code runs; train.py's EMA weights are taken when
    present and ``use_ema`` (timm's default for pretrained weights). Every failure names the file."""
    check_checkpoint_file(path)
    path = str(path)
    try:
        if path.endswith(".safetensors") or (not zipfile.is_zipfile(path) and _looks_safetensors(path)):
            import safetensors.torch

            state = safetensors.torch.load_file(path, device="cpu")
        else:
            with torch.serialization.safe_globals(list(TRAINING_CHECKPOINT_GLOBALS)):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader's failure, named with the file
        refused = re.search(r"GLOBAL (\S+)", str(e))
        if refused:
            raise UnsafeCheckpoint(
                f"checkpoint {path} refused: loading it would import {refused[1]}, which is neither a tensor nor "
                "what timm's train.py saves, so its pickle could run code; nothing of it was run. Save the weights "
                "alone (torch.save(model.state_dict(), ...) or safetensors) and pass that file") from None
        raise CorruptCheckpoint(f"checkpoint {path} could not be read: {_first_line(e)}") from None
    try:
        key = state_dict_key(state, use_ema) if isinstance(state, Mapping) else ""
        others = tuple(k for k in STATE_DICT_KEYS if k != key and key and isinstance(state.get(k), Mapping))
        return LoadedCheckpoint(path, unwrap_state_dict(state, use_ema), key, others)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"{path}: {e}") from None


def read_checkpoint(path) -> Dict[str, torch.Tensor]:
    """``load_checkpoint``'s state dict."""
    return load_checkpoint(path).state_dict


def _looks_safetensors(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def resolve_weight_source(variant: str, kwargs: Dict) -> Tuple[Dict, Optional[LoadedCheckpoint]]:
    """Read the weights here, checked and named in every error, and hand them to timm: the caller's file,
    a copy in the cache (``cache_dir`` if given), else a download into that cache (the Hub through
    huggingface_hub, then the original URL); offline or when no source serves, fail at once saying what
    to place where. Returns timm's keyword arguments and what was read (None: timm reads it itself)."""
    from timm.models import resolve_pretrained_cfg

    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    cache_dir = kwargs.get("cache_dir")
    cfg = resolve_pretrained_cfg(variant, kwargs.get("pretrained_cfg"), overlay)
    if cfg.source == "hf-hub":  # timm's own Hub layout, read by timm: check the cached file's checksum first
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(cfg.hf_hub_id.split("@")[0], "model.safetensors", cache_dir=cache_dir)
        if isinstance(cached, str):
            check_checkpoint_file(cached)
        return kwargs, None
    if cfg.state_dict is not None and "num_classes" not in overlay:  # handed over: its head says its classes
        classes = head_classes(cfg.state_dict)
        if classes is not None:
            return dict(kwargs, pretrained_cfg_overlay=dict(overlay, num_classes=classes)), None
    if cfg.state_dict or cfg.source == "local-dir":  # handed over, or an exported directory timm reads
        return kwargs, None
    sources = WeightSources(cfg.hf_hub_id, cfg.url, str(cache_dir) if cache_dir else None)
    local = cfg.file or sources.cached()
    if not local:
        if _offline():
            raise PretrainedWeightsUnavailable(sources.explain(variant, "offline (HF_HUB_OFFLINE) and not in a local cache"))
        local, problems = sources.download()
        if not local:
            raise PretrainedWeightsUnavailable(sources.explain(variant, "; ".join(problems) or "no source is configured"))
    loaded = load_checkpoint(local)
    overlay.update(state_dict=loaded.state_dict, file=str(local))
    classes = head_classes(loaded.state_dict)
    if classes is not None and "num_classes" not in overlay:
        # the file's own classes: timm keeps its head when the model asks for as many (or does not ask), and
        # drops it only when the model asks for another number (said then, see ``_factory``)
        overlay["num_classes"] = classes
    return dict(kwargs, pretrained_cfg_overlay=overlay), loaded


class PretrainedWeightsUnavailable(RuntimeError):
    """No source of a tag's weights is reachable or cached; the message says what to place where."""
