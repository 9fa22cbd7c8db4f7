"""A tag's model card, as timm's ``generate_readme`` takes it: what the model is, its published
weights, this project's measured rows, the backends that give the same numbers, usage, citations."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import pandas as pd
import torch

from .. import __version__
from ..bench.steps import param_count
from ..models._weights import WeightSources

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
    """Where the measured rows for the card are: the folder given, else ``results/`` of the working directory
    (a checkout's root); None where neither holds rows (the card then says none were measured)."""
    path = Path(results_dir) if results_dir else Path("results")
    return path if (path / "leaderboard_speed.csv").exists() or (path / "throughput.csv").exists() else None


def _measured(arch: str, results_dir: Optional[Path]) -> Dict[str, object]:
    """What this project measured of ``arch``: GMACs, speed rows (device, dtype, mode) and ImageNet top-1."""
    from ..results.tables import accuracy_kind
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
        on_imagenet = (accuracy["eval_set"].fillna("").astype(str).isin(["", "imagenet"]) if "eval_set" in accuracy
                       else True)
        real = accuracy[(accuracy["model"] == arch) & (accuracy_kind(accuracy) == "imagenet") & on_imagenet]
        found["top1"] = [f"{r['top1']:.2f} on {r.get('samples')} images ({r.get('device')})" for r in real.to_dict("records")]
    return found


def model_card(model: torch.nn.Module, tag: str, repo_id: Optional[str] = None, measured: Optional[dict] = None,
               gmacs: Optional[float] = None, fine_tune: Optional[str] = None) -> dict:
    """The card as ``timm.models._hub.generate_readme`` takes it (metadata, details, usage, comparison,
    citation); ``measured``: ``_measured``'s rows (none by default); ``gmacs`` when they have none;
    ``fine_tune``: the checkpoint of a user's own training the weights come from (not the published ones)."""
    from ..results.tables import paper_table

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
        "Model Stats": {"Params (M)": round(param_count(model), 2),
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
    if fine_tune:
        details["Published weights"] = "not these: see the description"
        details["Dataset"] = f"not recorded ({model.num_classes} classes)"
        details.pop("Pretrain Dataset", None)
        comparison = ["This is a fine-tune of its exporter's: the paper's top-1 does not apply."]
    description = (f"A {arch.replace('_', '-')} image classification model (DiNAT/NAT family), trained on "
                   f"{pretrain}{' and fine-tuned on ImageNet-1k' if 'ft_in1k' in tag else ''} by the paper's authors, "
                   f"in timm's layout. The weights are the published ones, converted by dinat-timm {__version__} to "
                   "safetensors.")
    if fine_tune:
        description = (f"A {arch.replace('_', '-')} image classification model (DiNAT/NAT family) with "
                       f"{model.num_classes} classes, exported by dinat-timm {__version__} from its trainer's "
                       f"checkpoint `{Path(fine_tune).name}` (timm's train.py layout): not the published weights.")
    return {
        "license": cfg.get("license", "mit"),
        "tags": ["image-classification", "timm", "dinat", "neighborhood-attention"],
        "library_name": "timm",
        "description": (description + " Needs `pip install dinat-timm` and `import dinat_timm` (which registers the "
                        "architecture with timm).\n\n" + _BACKENDS),
        "details": details,
        "usage": _USAGE.format(repo=repo, strides=strides, size=cfg["input_size"][-1]),
        "comparison": "\n".join(comparison),
        "citation": CITATION,
    }
