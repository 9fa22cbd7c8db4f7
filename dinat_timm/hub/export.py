"""Export a tag in timm's Hub layout (``model.safetensors``, ``config.json``, ``README.md``), and push it."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import timm
import torch

from .. import __version__
from ..models._weights import WeightSources, file_digest
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


def _config(model: torch.nn.Module, tmp: Path, label_names=None) -> dict:
    from timm.models._hub import save_config_for_hf

    model_config = {"dinat_timm_version": __version__}
    if label_names:
        model_config["label_names"] = list(label_names)
    save_config_for_hf(model, str(tmp / "config.json"), model_config=model_config, model_args=model_args(model))
    return json.loads((tmp / "config.json").read_text())


def read_label_names(path) -> list:
    """One class name a line (blank lines and surrounding spaces dropped), as a config's ``label_names``."""
    path = Path(path)
    if not path.is_file():
        raise HubError(f"--label-names {path}: no such file")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as e:
        raise HubError(f"--label-names {path} is not UTF-8 text ({e.reason})") from None
    if not names:
        raise HubError(f"--label-names {path} names no class: one name a line")
    return names


def check_output(out_dir, overwrite: bool = False) -> Path:
    """Where an export may go: not a file, in a folder that can be written, and without an export's file
    names already there (a user's README.md, the project's) unless ``overwrite``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise HubError(f"{out} is a file, not a directory: give the directory to export into")
    clashes = [out / name for name in FILES if (out / name).exists()]
    if clashes and not overwrite:
        raise HubError(f"{clashes[0]} exists" + (f" (and {len(clashes) - 1} more of {', '.join(FILES)})" if len(clashes) > 1
                       else "") + ": an export never replaces files it did not write; pass --overwrite to replace them")
    parent = next(p for p in [out, *out.parents] if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise HubError(f"{out}: {parent} is not writable")
    return out


def _stale_staging(out: Path):
    """Staging folders an earlier export of ``out`` left behind (it was killed): their process is gone."""
    for staged in out.parent.glob(f".{out.name}.export-*"):
        pid = staged.name.rsplit("-", 2)[-2] if staged.name.count("-") >= 2 else ""
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            yield staged
        except PermissionError:
            pass  # another user's live process


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where it is not available."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _write_into(out: Path, files: Dict[str, Callable[[Path], None]]) -> None:
    """Every file written into a staging folder beside ``out`` first (with the modes a plain ``mkdir`` and ``open``
    would give, not a temporary folder's private ones); only when all are written does the folder take ``out``'s
    place, in one step: renamed into place where ``out`` is new; where it exists, the staging folder gets
    ``out``'s other entries (hard links) and the two folders are exchanged atomically. A failure or a kill at any
    point leaves ``out`` as it was: old files with old files, never new weights under an old config. Staging
    folders a killed export left are removed first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_staging(out):
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-{os.getpid()}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(staging, 0o777 & ~umask)
        for name, write in files.items():
            try:
                write(staging / name)
            except OSError:
                raise
            except Exception as e:  # noqa: BLE001 - a writer's own error (safetensors' on a full disk): one line
                raise HubError(f"writing {name} failed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None
        if not out.exists():
            os.rename(staging, out)
            return
        for entry in out.iterdir():
            if entry.name not in files:
                target = staging / entry.name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.copytree(entry, target, symlinks=True, copy_function=os.link)
                elif entry.is_symlink():
                    os.symlink(os.readlink(entry), target)
                else:
                    os.link(entry, target)
        if _exchange(staging, out):
            return  # staging now holds the old folder: removed below
        backup = staging.with_name(staging.name + "-old")
        os.rename(out, backup)  # where the kernel cannot exchange: two renames, the old folder kept until the second
        os.rename(staging, out)
        shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export(tag: str, out_dir=None, checkpoint=None, dry_run: bool = False, repo_id: Optional[str] = None,
           results_dir=None, overwrite: bool = False, label_names=None) -> Export:
    """Write ``tag`` in timm's Hub layout to ``out_dir``: the published weights (from ``checkpoint``, else the
    caches; either format) or your own checkpoint of the tag's architecture (timm train.py's, with any number
    of classes: the model takes its classifier's; its EMA weights where it has them, as timm loads them) as
    safetensors, ``config.json`` (with ``label_names`` where given) and the card, all three or none, never over
    files it did not write (unless ``overwrite``). ``dry_run``: every check of the real run (the tag, the output
    folder, the checkpoint file), then the architecture without weights: nothing downloaded, nothing written,
    and it says what would be."""
    from timm.models._hub import generate_readme

    from ..bench.steps import count_gmacs
    from ..models._weights import check_checkpoint_file, load_checkpoint

    split_tag(tag)
    if out_dir is not None:
        check_output(out_dir, overwrite)
    loaded = None
    if checkpoint is not None:
        check_checkpoint_file(checkpoint)
    source = _weights_source(tag, checkpoint)
    if dry_run:
        with torch.device("meta"):
            model = timm.create_model(tag)
    else:
        overlay = {}
        if checkpoint:
            loaded = load_checkpoint(checkpoint)  # read once, here: its entry and classes are said below
            overlay = dict(file=str(checkpoint), state_dict=loaded.state_dict)
            source = f"{checkpoint}" + (f" ({loaded.key})" if loaded.key else "")
        model = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=overlay)
    if label_names is not None and len(label_names) != model.num_classes:  # the model took the weights' classes
        raise HubError(f"the label names list {len(label_names)} classes and the weights have "
                       f"{model.num_classes}: one name a class, in the classifier's order")
    result = Export(tag, Path(out_dir) if out_dir else None, source)
    with tempfile.TemporaryDirectory() as tmp:
        result.config = _config(model, Path(tmp), label_names)
    own = loaded is not None and loaded.key in ("state_dict", "state_dict_ema", "model_ema")  # timm train.py's
    measured = _measured(tag.split(".")[0], _results_dir(results_dir)) if not own else None
    gmacs = None
    if not dry_run and (measured is None or measured["gmacs"] is None):  # counted here, as the suite does
        gmacs = count_gmacs(tag.split(".")[0], model.pretrained_cfg["input_size"][-1])
    card = model_card(model, tag, repo_id, measured, gmacs, fine_tune=str(checkpoint) if own else None)
    result.card = generate_readme(card, tag)
    if dry_run:
        result.files = {name: 0 for name in FILES}
        return result
    import safetensors.torch

    out = Path(out_dir)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}

    def config(path: Path) -> None:  # written after the weights: it records their sha256, which `check` verifies
        result.config["dinat_timm_weights_sha256"] = file_digest(path.with_name("model.safetensors"))
        path.write_text(json.dumps(result.config, indent=2))

    _write_into(out, {
        "model.safetensors": lambda p: safetensors.torch.save_file(state, str(p), metadata={"format": "pt"}),
        "config.json": config,
        "README.md": lambda p: p.write_text(result.card, encoding="utf-8"),
    })
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
    layout; ``dry_run`` checks what the real push would (the repo id, the checkpoint), exports to a
    temporary directory and says what would be uploaded (the token and the network are not tried)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            raise HFValidationError("give it as NAMESPACE/NAME")
    except HFValidationError as e:
        raise HubError(f"{repo_id!r} is not a Hub repo id: {str(e).splitlines()[0]}") from None
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
