"""The zoo in timm's own Hub layout: ``model.safetensors``, ``config.json`` and a model card per tag.

timm reads that layout through ``timm.create_model("local-dir:DIR")`` and ``"hf-hub:REPO"``; its
``save_for_hf``, ``push_to_hf_hub`` and ``generate_readme`` write it. What is DiNAT's own lives here:
the published weights come in through this project's converters (either published format), the
config names the architecture's every defining argument, and the card says what the model is, how
fast this project measured it, which attention backends give the same numbers, and how to use it.

    python -m dinat_timm.hub export dinat_tiny.in1k out/dinat_tiny.in1k
    python -m dinat_timm.hub export --all out/ --dry-run
    python -m dinat_timm.hub push dinat_tiny.in1k me/dinat_tiny.in1k --dry-run
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd
import timm
import torch

from .. import __version__
from ..models._weights import WeightSources

ROOT = Path(__file__).resolve().parents[2]
FILES = ("model.safetensors", "config.json", "README.md")  # what an export holds: no pickle among them

CITATION = [
    """@article{hassani2022dilated,
  title   = {Dilated Neighborhood Attention Transformer},
  author  = {Hassani, Ali and Shi, Humphrey},
  journal = {arXiv preprint arXiv:2209.15001},
  year    = {2022}
}""",
    """@inproceedings{hassani2023neighborhood,
  title     = {Neighborhood Attention Transformer},
  author    = {Hassani, Ali and Walton, Steven and Li, Jiachen and Li, Shen and Shi, Humphrey},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023}
}""",
]


class HubError(RuntimeError):
    """A Hub export or push that cannot be done as asked; the message says why (the CLI exits 2)."""


# -- the tags ---------------------------------------------------------------------------------------------


def pretrained_tags() -> List[str]:
    """Every pretrained tag this version registers (``dinat_tiny.in1k`` …)."""
    from ..bench.steps import is_dinat_model

    return sorted(t for t in timm.list_pretrained() if is_dinat_model(t.split(".")[0]))


def tag_table() -> pd.DataFrame:
    """One row per tag: its architecture, where its published weights come from and in which format,
    its classes and input size, the paper's top-1 and the license."""
    from ..results.boards import paper_table

    paper = paper_table().set_index("model")
    rows = []
    for tag in pretrained_tags():
        arch = tag.split(".")[0]
        cfg = timm.models.get_pretrained_cfg(tag)
        top1 = paper["paper_top1"].get(arch) if cfg.num_classes == 1000 else None
        rows.append(dict(tag=tag, architecture=arch, hf_hub_id=cfg.hf_hub_id or "", url=cfg.url or "",
                         weights_format="transformers" if cfg.hf_hub_id else "original .pth",
                         num_classes=cfg.num_classes, input_size=cfg.input_size[-1], paper_top1=top1,
                         license=cfg.license or ""))
    return pd.DataFrame(rows)


# -- the card ---------------------------------------------------------------------------------------------

_USAGE = '''### Image classification
```python
import timm, torch, dinat_timm  # importing dinat_timm registers the DiNAT/NAT architectures with timm
from PIL import Image

model = timm.create_model("hf-hub:{repo}", pretrained=True).eval()
config = timm.data.resolve_data_config({{}}, model=model)
transform = timm.data.create_transform(**config)
image = Image.open("image.jpg").convert("RGB")
with torch.no_grad():
    top5 = model(transform(image).unsqueeze(0)).softmax(-1).topk(5)
```

### Feature maps (a detection or segmentation backbone)
```python
model = timm.create_model("hf-hub:{repo}", pretrained=True, features_only=True).eval()
for feature in model(torch.randn(1, 3, 512, 512)):   # any size from 32 px; NCHW, strides {strides}
    print(feature.shape)
```

### Intermediate layers
```python
model = timm.create_model("hf-hub:{repo}", pretrained=True).eval()
final, intermediates = model.forward_intermediates(torch.randn(1, 3, {size}, {size}))
```
'''

_BACKENDS = (
    "Neighborhood attention with relative position bias runs on whichever backend serves the device "
    "(`model.set_attn_backend(...)`, or `auto`): `triton` (fused, CUDA), `tiled` (pure PyTorch, CPU and GPU), "
    "`natten_legacy` (NATTEN 0.14–0.17, the ops these weights were trained with) and `gather` (the reference). "
    "dinat-timm tests them against outputs and gradients of NATTEN 0.17.5 and against the original code's and "
    "transformers' logits; the models give the same logits (within 1e-4 in fp32) with NATTEN 0.15.1 or 0.17.5 "
    "installed (their legacy ops: within 1e-5), with NATTEN ≥ 0.20 installed, or with no NATTEN at all."
)


def _results_dir(results_dir) -> Optional[Path]:
    path = Path(results_dir) if results_dir else ROOT / "results"
    return path if (path / "leaderboard_speed.csv").exists() or (path / "throughput.csv").exists() else None


def _measured(arch: str, results_dir: Optional[Path]) -> Dict[str, object]:
    """What this project measured of ``arch``: GMACs, speed rows (device, dtype, mode) and ImageNet top-1."""
    from ..results.boards import accuracy_kind
    from ..results.writer import read_csv

    found: Dict[str, object] = dict(gmacs=None, speed=[], top1=[])
    if results_dir is None:
        return found
    raw = read_csv(results_dir / "throughput.csv")
    if not raw.empty and "gmacs" in raw:
        gmacs = raw.loc[raw["model"] == arch, "gmacs"].dropna()
        found["gmacs"] = float(gmacs.iloc[-1]) if len(gmacs) else None
    board = read_csv(results_dir / "leaderboard_speed.csv")
    if not board.empty:
        rows = board[(board["model"] == arch) & board["status"].fillna("ok").eq("ok")]
        for row in rows.to_dict("records"):
            for mode, label in (("infer", "inference"), ("train", "training step")):
                sps = row.get(f"{mode}_samples_per_sec")
                if sps is None or pd.isna(sps):
                    continue
                ratio = row.get(f"{mode}_vs_reference")
                found["speed"].append(
                    f"| {row.get('device')} | {row.get('dtype')}{', compiled' if row.get('compile') in (1, '1') else ''} "
                    f"| {label} | {int(row.get(f'{mode}_batch_size'))} | {sps:.4g} | "
                    f"{'×%.2f' % ratio if ratio is not None and pd.notna(ratio) else '–'} | {row.get('backend')} | "
                    f"{row.get('git_commit') if pd.notna(row.get('git_commit')) else '–'} |")
    accuracy = read_csv(results_dir / "leaderboard_accuracy.csv")
    if not accuracy.empty:
        real = accuracy[(accuracy["model"] == arch) & (accuracy_kind(accuracy) == "imagenet")]
        found["top1"] = [f"{r['top1']:.2f} on {r.get('samples')} images ({r.get('device')})" for r in real.to_dict("records")]
    return found


def model_card(model: torch.nn.Module, tag: str, repo_id: Optional[str] = None, measured: Optional[dict] = None,
               gmacs: Optional[float] = None) -> dict:
    """The card as ``timm.models._hub.generate_readme`` takes it (metadata, details, usage, comparison,
    citation); ``measured``: ``_measured``'s rows (none by default); ``gmacs`` when they have none."""
    from ..results.boards import paper_table

    arch, cfg = tag.split(".")[0], model.pretrained_cfg
    repo = repo_id or f"<user>/{tag}"
    measured = measured or dict(gmacs=None, speed=[], top1=[])
    gmacs = measured["gmacs"] if measured["gmacs"] is not None else gmacs
    paper = paper_table().set_index("model")
    sources = WeightSources(cfg.get("hf_hub_id"), cfg.get("url"))
    pretrain = "ImageNet-22k" if "in22k" in tag else "ImageNet-1k"
    family = ("Swin-shaped DiNAT (DiNAT_s)" if arch.startswith("dinat_s_") else
              "isotropic" if "isotropic" in arch else "ViT with relative position bias (the DiNAT paper's baseline)"
              if arch.startswith("vitrpb") else "hierarchical")
    details = {
        "Model Type": f"Image classification / feature backbone ({family})",
        "Model Stats": {"Params (M)": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                        "GMACs": round(gmacs, 2) if gmacs is not None else "not measured yet",
                        "Image size": f"{cfg['input_size'][-1]} x {cfg['input_size'][-1]}"},
        "Papers": ["Dilated Neighborhood Attention Transformer: https://arxiv.org/abs/2209.15001",
                   "Neighborhood Attention Transformer: https://arxiv.org/abs/2204.07143"],
        "Original": cfg.get("origin_url", "https://github.com/SHI-Labs/Neighborhood-Attention-Transformer"),
        "Published weights": [f"{sources.repo_page()} (transformers layout)"] * bool(sources.hf_repo)
                             + [f"{sources.url} (the original repo's .pth)"] * bool(sources.url),
        "Dataset": "ImageNet-1k" if cfg.get("num_classes") == 1000 else pretrain,
    }
    if "in22k" in tag and cfg.get("num_classes") == 1000:
        details["Pretrain Dataset"] = "ImageNet-22k"
    top1 = paper["paper_top1"].get(arch) if cfg.get("num_classes") == 1000 else None
    comparison = ["| | top-1 (%) |", "|---|---|",
                  f"| paper | {top1 if top1 is not None and pd.notna(top1) else '– (no ImageNet-1k head)'} |"]
    comparison += [f"| dinat-timm | {t} |" for t in measured["top1"]] or [
        "| dinat-timm | not measured on ImageNet yet |"]
    speed = measured["speed"]
    if speed:
        comparison += ["", "Speed measured by dinat-timm's benchmark suite (images/s; ×Swin-T: over Swin-T's in the same run):",
                       "", "| device | dtype | mode | batch | img/s | ×Swin-T | attention | commit |",
                       "|---|---|---|---|---|---|---|---|"] + speed
    strides = "/".join(str(r) for r in sorted({f["reduction"] for f in model.feature_info}))
    return {
        "license": cfg.get("license", "mit"),
        "tags": ["image-classification", "timm", "dinat", "neighborhood-attention"],
        "library_name": "timm",
        "description": (f"A {arch.replace('_', '-')} image classification model (DiNAT/NAT family), trained on "
                        f"{pretrain}{' and fine-tuned on ImageNet-1k' if 'ft_in1k' in tag else ''} by the paper's "
                        f"authors, in timm's layout. The weights are the published ones, converted by dinat-timm "
                        f"{__version__} to safetensors. Needs `pip install dinat-timm` and `import dinat_timm` (which "
                        f"registers the architecture with timm).\n\n"
                        + _BACKENDS),
        "details": details,
        "usage": _USAGE.format(repo=repo, strides=strides, size=cfg["input_size"][-1]),
        "comparison": "\n".join(comparison),
        "citation": CITATION,
    }


# -- export -------------------------------------------------------------------------------------------------


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


def _split(tag: str):
    if tag not in pretrained_tags():
        close = [t for t in pretrained_tags() if t.split(".")[0] == tag.split(".")[0]]
        raise HubError(f"unknown pretrained tag {tag!r}" + (f"; this architecture has {close}" if close else
                       "; python -m dinat_timm.hub tags lists them"))
    return tag.split(".")[0], timm.models.get_pretrained_cfg(tag)


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

    _split(tag)
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


# -- loading -------------------------------------------------------------------------------------------------


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
