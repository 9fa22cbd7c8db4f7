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


def read_config(path: Path) -> dict:
    """An export's ``config.json``, or a ``HubError`` saying why it cannot be one."""
    if not path.is_file():
        raise HubError(f"{path}: no such file (is {path.parent} an exported model directory?)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise HubError(f"{path} is not JSON: {e}") from None
    if not isinstance(config, dict):
        raise HubError(f"{path} holds a JSON {type(config).__name__}, not a timm config")
    return config


def check_export(directory) -> str:
    """Check an exported directory the way a user loads it: its config names a registered architecture, its
    weights file is whole, and the weights load into that architecture (timm's ``local-dir:``). Returns the
    architecture; every failure is a ``HubError`` naming the file and the problem."""
    from ..models._weights import CorruptCheckpoint, check_checkpoint_file

    directory = Path(directory)
    config_path = directory / "config.json"
    config = read_config(config_path)
    check_config(config, str(config_path))
    weights = directory / "model.safetensors"
    try:
        check_checkpoint_file(weights)
    except CorruptCheckpoint as e:
        raise HubError(str(e)) from None
    recorded = config.get("dinat_timm_weights_sha256")
    if recorded is not None:
        from ..models._weights import file_digest

        actual = file_digest(weights)
        if actual != recorded:
            raise HubError(f"{weights} is not the file {config_path} was written with (its sha256 {actual[:12]}…, the "
                           f"config's {str(recorded)[:12]}…): a partial or interrupted overwrite? Export again")
    try:
        timm.create_model(f"local-dir:{directory}", pretrained=True)
    except Exception as e:  # noqa: BLE001 - a hand-edited config can fail anywhere in timm's builder: said in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HubError(f"{weights} does not load into {config['architecture']!r} as {config_path} describes it: "
                       f"{first}") from None
    return config["architecture"]


def create_model(name: str, **kwargs) -> torch.nn.Module:
    """``timm.create_model`` for ``local-dir:`` and ``hf-hub:`` sources, first checking that the
    config's architecture is one this version registers (timm alone would only say "Unknown model")."""
    source, _, location = name.partition(":")
    if source == "local-dir":
        path = Path(location) / "config.json"
        check_config(read_config(path), str(path))
    elif source == "hf-hub":
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(location.split("@")[0], "config.json")
        check_config(json.loads(Path(path).read_text()), f"{location}'s config.json")
    return timm.create_model(name, **kwargs)
