"""ImageNet-style top-1 / top-5 evaluation with a model's own pretrained-cfg preprocessing.

Single process, or distributed under ``torchrun`` (each rank takes a disjoint slice through a
``DistributedSampler`` that does not pad, and the counts are all-reduced, so the result equals
the single-process one exactly)::

    torchrun --nproc_per_node=8 -m dinat_timm.bench.accuracy --model dinat_tiny --pretrained \\
        --data-dir /data/imagenet --split validation
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

import timm
import torch
import torch.distributed as dist
from timm.data import create_dataset, create_transform, resolve_data_config
from torch.utils.data import DataLoader, DistributedSampler, Subset

GENERATED_TAG = "generated-tiny"


def make_tiny_dataset(root, num_classes: int = 5, per_class: int = 4, size: int = 72, seed: int = 0) -> Path:
    """A small labelled ImageFolder (``class_XXX/img_Y.png``) of smooth random images, made once.

    Not ImageNet: it exists to run the real pipeline (decode, resize by crop_pct, center crop,
    normalise, batch, top-k, reduce) where no data set can be downloaded.
    """
    from PIL import Image

    root = Path(root)
    gen = torch.Generator().manual_seed(seed)
    for c in range(num_classes):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / f"img_{i}.png"
            if path.exists():
                continue
            low = torch.rand(3, 6, 6, generator=gen)
            img = torch.nn.functional.interpolate(low[None], size=(size, size + 8), mode="bilinear")[0]
            pixels = (img.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(path)
    return root


class UnpaddedDistributedSampler(DistributedSampler):
    """DistributedSampler without the duplicated tail it pads with (which would be counted twice)."""

    def __init__(self, dataset, num_replicas=None, rank=None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self):
        return max(0, math.ceil((len(self.dataset) - self.rank) / self.num_replicas))


def evaluate(
    model_name: str,
    data_dir,
    split: str = "validation",
    batch_size: int = 32,
    max_samples: int = 0,
    device: str = "cpu",
    pretrained: bool = False,
    workers: int = 0,
    model: Optional[torch.nn.Module] = None,
    progress: Optional[bool] = None,
    **model_kwargs,
) -> dict:
    """Top-1/top-5 (%) of ``model_name`` on an ImageFolder-style set, with its cfg's transforms."""
    if model is None:
        model = timm.create_model(model_name, pretrained=pretrained, **model_kwargs)
    model = model.to(device).eval()
    data_config = resolve_data_config({}, model=model)
    transform = create_transform(**data_config, is_training=False)
    dataset = create_dataset("", root=str(data_dir), split=split, is_training=False, transform=transform)
    if max_samples:
        dataset = Subset(dataset, range(min(max_samples, len(dataset))))
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    sampler = UnpaddedDistributedSampler(dataset) if distributed else None
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers)
    if progress is None:
        progress = rank == 0 and sys.stderr.isatty()
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"eval {model_name}", unit="batch")
    counts = torch.zeros(3, dtype=torch.float64)  # top-1 hits, top-5 hits, samples
    with torch.inference_mode():
        for images, targets in batches:
            logits = model(images.to(device))
            k = min(5, logits.shape[-1])
            top = logits.topk(k, dim=-1).indices.cpu()
            hits = top.eq(targets[:, None])
            counts += torch.tensor([hits[:, 0].sum().item(), hits.any(dim=-1).sum().item(), len(targets)], dtype=torch.float64)
    if distributed:
        dist.all_reduce(counts)
    hits1, hits5, n = counts.tolist()
    top1, top5, n = 100 * hits1 / max(n, 1), 100 * hits5 / max(n, 1), int(n)
    return {
        "model": model_name,
        "img_size": data_config["input_size"][-1],
        "top1": round(top1, 3),
        "top1_err": round(100 - top1, 3),
        "top5": round(top5, 3),
        "top5_err": round(100 - top5, 3),
        "samples": n,
        "param_count": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "crop_pct": data_config["crop_pct"],
        "interpolation": data_config["interpolation"],
        "world_size": dist.get_world_size() if distributed else 1,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="top-1/top-5 of a timm model (torchrun for several processes)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", default="", help="ImageFolder root; empty = a generated tiny set")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-samples", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pretrained", action="store_true")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--model-kwargs", default="{}", help="JSON of extra timm.create_model kwargs")
    parser.add_argument("--results", default="", help="append the row to this CSV (rank 0)")
    parser.add_argument("--tf32", type=int, choices=(0, 1), default=0,
                        help="TF32 for matmuls and cuDNN convolutions (default 0: reproducible fp32 on GPUs)")
    args = parser.parse_args(argv)

    import dinat_timm  # noqa: F401  (registers the models)
    from ..results.environment import set_tf32

    set_tf32(args.tf32)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(args.device)
    data_dir, dataset_tag = args.data_dir, args.data_dir
    if not data_dir:
        data_dir = make_tiny_dataset(Path(os.environ.get("TMPDIR", "/tmp")) / "dinat_timm_tiny_imagefolder")
        dataset_tag = GENERATED_TAG
    torch.manual_seed(0)  # identical random init on every rank when not pretrained
    row = evaluate(
        args.model, data_dir, args.split, args.batch_size, args.max_samples, args.device, args.pretrained,
        args.workers, **json.loads(args.model_kwargs),
    )
    row.update(dataset=dataset_tag, pretrained=args.pretrained)
    if not dist.is_initialized() or dist.get_rank() == 0:
        if args.results:
            from ..results.environment import environment
            from ..results.writer import append_rows

            append_rows(args.results, [{**row, **environment(args.device), "suite": "accuracy", "status": "ok"}])
        print(json.dumps(row))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
