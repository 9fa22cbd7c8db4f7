"""Export a tag in timm's Hub layout (``model.safetensors``, ``config.json``, ``README.md``), and push it."""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import timm
import torch

from .. import __version__
from ..models._weights import WeightSources
from .card import _measured, _results_dir, model_card
from .tags import HubError, split_tag

FILES = ("model.safetensors", "config.json", "README.md")  # what an export holds: no pickle among them


@dataclass
class Export:
    tag: str
    out_dir: Optional[Path]
    weights_from: str  # the checkpoint read, or where it would be read from
    files: Dict[str, int] = field(default_factory=dict)  # name -> bytes (0 in a dry run: not written)
    config: dict = field(default_factory=dict)
    card: str = ""


def model_args(model: torch.nn.Module) -> dict:
    """The arguments that rebuild this architecture: every defining one, and the classes."""
    return dict(model.architecture, num_classes=model.num_classes)


def _weights_source(tag: str, checkpoint) -> str:
    if checkpoint:
        return str(checkpoint)
    cfg = timm.models.get_pretrained_cfg(tag)
    sources = WeightSources(cfg.hf_hub_id, cfg.url)
    cached = sources.cached()
    if cached:
        return cached
    where = [sources.repo_page()] if cfg.hf_hub_id else []
    return "not cached: would download from " + " or ".join(where + ([cfg.url] if cfg.url else []))


def _config(model: torch.nn.Module, tmp: Path) -> dict:
    from timm.models._hub import save_config_for_hf

    save_config_for_hf(model, str(tmp / "config.json"), model_config={"dinat_timm_version": __version__},
                       model_args=model_args(model))
    return json.loads((tmp / "config.json").read_text())


def export(tag: str, out_dir=None, checkpoint=None, dry_run: bool = False, repo_id: Optional[str] = None,
           results_dir=None) -> Export:
    """Write ``tag`` in timm's Hub layout to ``out_dir``: the published weights (from ``checkpoint``,
    else the caches; either format) as safetensors, ``config.json`` and the card. ``dry_run``: build
    the architecture without weights (nothing downloaded, nothing written) and say what would be."""
    from timm.models._hub import generate_readme

    from ..bench.steps import count_gmacs

    split_tag(tag)
    source = _weights_source(tag, checkpoint)
    if dry_run:
        with torch.device("meta"):
            model = timm.create_model(tag)
    else:
        overlay = dict(file=str(checkpoint)) if checkpoint else {}
        model = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=overlay)
    result = Export(tag, Path(out_dir) if out_dir else None, source)
    with tempfile.TemporaryDirectory() as tmp:
        result.config = _config(model, Path(tmp))
    measured = _measured(tag.split(".")[0], _results_dir(results_dir))
    gmacs = None
    if not dry_run and measured["gmacs"] is None:  # measured here, as the suite does (through exact gather)
        gmacs = count_gmacs(tag.split(".")[0], model.pretrained_cfg["input_size"][-1])
    result.card = generate_readme(model_card(model, tag, repo_id, measured, gmacs), tag)
    if dry_run:
        result.files = {name: 0 for name in FILES}
        return result
    import safetensors.torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(result.config, indent=2))
    (out / "README.md").write_text(result.card, encoding="utf-8")
    result.files = {name: (out / name).stat().st_size for name in FILES}
    return result


# -- push ---------------------------------------------------------------------------------------------------


def _token(token: Optional[str]) -> str:
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise HubError("HF_HUB_OFFLINE is set: pushing to the Hub needs the network (unset it)")
    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: log in with `hf auth login`, set HF_TOKEN, or pass --token")
    return token


def push(tag: str, repo_id: str, token: Optional[str] = None, checkpoint=None, private: bool = False,
         dry_run: bool = False, results_dir=None) -> Export:
    """Export ``tag`` and upload it to ``repo_id`` (created if missing) with timm's ``push_to_hf_hub``
    layout; ``dry_run`` exports to a temporary directory and says what would be uploaded."""
    if dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            return export(tag, tmp, checkpoint, dry_run=checkpoint is None and not _cached(tag), repo_id=repo_id,
                          results_dir=results_dir)
    token = _token(token)
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        result = export(tag, tmp, checkpoint, repo_id=repo_id, results_dir=results_dir)
        api = HfApi(token=token, library_name="timm", library_version=timm.__version__)
        try:
            repo = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
            api.upload_folder(repo_id=repo, folder_path=tmp, commit_message=f"Add {tag} (dinat-timm {__version__})")
        except Exception as e:  # noqa: BLE001 - network, auth or permission: said in one line
            raise HubError(f"could not push to {repo_id}: {type(e).__name__}: {e}") from e
    return result


def _cached(tag: str) -> bool:
    cfg = timm.models.get_pretrained_cfg(tag)
    return WeightSources(cfg.hf_hub_id, cfg.url).cached() is not None
