"""Reading a Hub config back: refuse, saying what to do, an architecture this version does not register."""
from __future__ import annotations

import json
from pathlib import Path

import timm
import torch

from .. import __version__
from .tags import HubError


def check_config(config: dict, where: str) -> None:
    """Refuse, saying what to do, a Hub config naming an architecture this version does not register."""
    arch = config.get("architecture")
    if arch is None:
        raise HubError(f"{where} names no architecture: not a timm Hub config")
    if not timm.models.is_model(arch):
        made_by = config.get("dinat_timm_version")
        raise HubError(
            f"{where} names architecture {arch!r}, which dinat_timm {__version__} does not register"
            + (f" (it was exported by dinat_timm {made_by})" if made_by else "")
            + ": upgrade dinat-timm (pip install -U dinat-timm), and `import dinat_timm` before timm.create_model")


def create_model(name: str, **kwargs) -> torch.nn.Module:
    """``timm.create_model`` for ``local-dir:`` and ``hf-hub:`` sources, first checking that the
    config's architecture is one this version registers (timm alone would only say "Unknown model")."""
    source, _, location = name.partition(":")
    if source == "local-dir":
        path = Path(location) / "config.json"
        if not path.is_file():
            raise HubError(f"{path}: no such file (is {location} an exported model directory?)")
        check_config(json.loads(path.read_text()), str(path))
    elif source == "hf-hub":
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(location.split("@")[0], "config.json")
        check_config(json.loads(Path(path).read_text()), f"{location}'s config.json")
    return timm.create_model(name, **kwargs)
