"""ImageNet-style top-1 / top-5 evaluation with a model's own pretrained-cfg preprocessing.

Single process, or distributed under ``torchrun`` (each rank takes a disjoint slice through a
``DistributedSampler`` that does not pad, and the counts are all-reduced, so the result equals
the single-process one exactly)::

    torchrun --nproc_per_node=8 -m dinat_timm.bench.accuracy --model dinat_tiny --pretrained \\
        --data-dir /data/imagenet --split validation
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import timm
import torch
import torch.distributed as dist
from timm.data import create_dataset, create_transform, resolve_data_config
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..models._checkpoint import CheckpointMismatchError, head_classes
from ..models._weights import CorruptCheckpoint, PretrainedWeightsUnavailable, file_digest, load_checkpoint
from .environment import environment
from ..results.timm_format import append_timm_row
from ..results.writer import CsvWriteError, append_rows
from .steps import param_count

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


class UnreadableImages(RuntimeError):
    """Images of the data set that cannot be decoded; the message names them and the way to skip them."""


class _EachImageOnce(Dataset):
    """Index ``i`` reads image ``i`` and nothing else. timm's ``ImageDataset`` replaces an image it
    cannot decode by the next one (a warning in the log), which counts that one twice and says
    nothing in the result; here an unreadable image comes back as ``None`` with its file name and
    the error, for the caller to skip and report, or to fail on."""

    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        from PIL import Image

        samples = getattr(self.dataset.reader, "samples", None)
        target = samples[index][1] if samples is not None else None
        try:
            source, target, *_ = self.dataset.reader[index]
            with contextlib.ExitStack() as stack:
                if hasattr(source, "close"):
                    stack.callback(source.close)
                image = as_rgb(Image.open(source))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            name = printable(self.dataset.filename(index))
            return None, -1 if target is None else target, f"{name} ({_why_unreadable(self.dataset, index, e)})", name
        return (self.transform(image), -1 if target is None else target, None,
                printable(self.dataset.filename(index, basename=True)))


def as_rgb(image):
    """An image as 8-bit RGB, decoding every pixel. 16-bit grey (PNG's ``I;16``, or ``I`` holding 16-bit values)
    is scaled to 8 bits: PIL's own conversion clips it, and every image would read as white."""
    import numpy as np
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or pixels.max(initial=0) > 255:
            pixels = pixels * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def printable(name: str) -> str:
    """A file name as a row can hold it: bytes that are not UTF-8 (kept by Python as surrogates) as escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _why_unreadable(dataset, index, error) -> str:
    path = dataset.filename(index, absolute=True)
    if os.path.islink(path) and not os.path.exists(path):
        return f"a dangling symlink: its target {printable(os.readlink(path))} does not exist"
    return f"{type(error).__name__}: {error}"


class LabelProblem(ValueError):
    """A data set whose labels would not be the model's classes: scoring it would give a confident, wrong
    top-1. The message names the folders and what to do."""


_SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "eval", "evaluation", "test"}
_SYNSET = re.compile(r"n\d{8}")


def image_root(data_dir, split: str) -> Path:
    """The folder timm's ``create_dataset`` would read for ``split`` (its search: the split's own name, then
    its synonyms); a split asked for where the root holds other splits but not it is refused, where timm
    would fall back to the root and score, say, the training images as one class."""
    from timm.data.dataset_factory import _EVAL_SYNONYM, _TRAIN_SYNONYM

    root = Path(data_dir)
    name = split.split("[")[0]
    candidates = [name] + [s for group in (_TRAIN_SYNONYM, _EVAL_SYNONYM) if name in group for s in group]
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    splits = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name.lower() in _SPLIT_NAMES) if root.is_dir() else []
    if splits:
        raise LabelProblem(f"{root} has no split {split!r} (it has {', '.join(splits)}): give --split one of those, "
                           "or --data-dir the folder of the images to score")
    return root


def check_tree(folder: Path) -> None:
    """Refuse a folder that timm's ImageFolder reader (it walks every sub-folder, following links, and names a
    class by the folder an image is in) would read into other classes than its class folders, or twice: images in
    a sub-folder of a class folder (a class of their own, every later label shifted), images beside the class
    folders (a class named ''), a linked folder inside a class folder (a loop never ends; another folder's images
    repeat), two class folders that are one folder; and a folder without any image."""
    from timm.data.readers.img_extensions import get_img_extensions

    extensions = set(get_img_extensions())

    def images(names):
        return [n for n in names if os.path.splitext(n)[1].lower() in extensions]

    if not folder.is_dir():
        return  # a tar or another reader: timm checks it
    classes = sorted(d for d in folder.iterdir() if d.is_dir())
    top = images(f.name for f in folder.iterdir() if f.is_file())
    if classes and top:
        raise LabelProblem(f"{folder}: image file(s) beside the class folders ({printable(top[0])}"
                           f"{f' and {len(top) - 1} more' if len(top) > 1 else ''}): timm reads them as a class "
                           "named '' and numbers every class folder one higher. Move them into their class folder")
    seen, found = {}, bool(top)
    for cls in classes:
        real = cls.resolve()
        if real in seen:
            raise LabelProblem(f"{folder}: class folders {printable(seen[real].name)} and {printable(cls.name)} are one "
                               "folder (a link): its images would be scored twice, as two classes")
        seen[real] = cls
        for root, dirs, files in os.walk(cls):
            for d in dirs:
                if os.path.islink(os.path.join(root, d)):
                    where = printable(os.path.relpath(os.path.join(root, d), folder))
                    raise LabelProblem(f"{folder}: {where} is a link to a folder inside a class folder: timm follows "
                                       "it (a link that loops never ends; another folder's images are read again)")
            here = images(files)
            found = found or bool(here)
            if here and root != str(cls):
                inner = printable(os.path.relpath(root, folder))
                raise LabelProblem(f"{folder}: {inner} holds images inside a class folder: timm reads them as a class "
                                   f"named {os.path.basename(root)!r} and shifts every label after it. Move them up "
                                   "into their class folder")
    if not found:
        raise LabelProblem(f"{folder} holds no image (none of {', '.join(sorted(extensions))}): nothing to score")


def check_labels(folder: Path, num_classes: int) -> None:
    """Refuse a folder whose ImageFolder labels would not be the model's class indices: an empty class
    folder (every later class would be numbered one lower), more classes than the model has, or ImageNet
    synset folders that are not the 1000 of ImageNet-1k (ImageFolder numbers them 0, 1, … in their own
    order, not by the synsets' indices)."""
    from timm.data import ImageNetInfo
    from timm.data.readers.img_extensions import get_img_extensions

    if not folder.is_dir():
        return  # a tar or another reader: timm checks it
    classes = sorted(d for d in folder.iterdir() if d.is_dir())
    if not classes:
        return  # images directly in the folder: one unlabelled class, as timm reads it
    extensions = set(get_img_extensions())
    empty = [d.name for d in classes if not any(f.suffix.lower() in extensions for f in d.rglob("*") if f.is_file())]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise LabelProblem(f"{folder}: class folder(s) without an image: {shown}; every later class would be numbered "
                           "one lower and scored against the wrong class. Remove them or put their images back")
    if len(classes) > num_classes:
        raise LabelProblem(f"{folder} has {len(classes)} class folders and the model {num_classes} classes: its labels "
                           "cannot be the model's classes")
    names = [d.name for d in classes]
    synset_folders = all(_SYNSET.fullmatch(n) for n in names)
    if num_classes != 1000 and synset_folders:
        raise LabelProblem(f"{folder} holds ImageNet synset folders and the model has {num_classes} classes: score "
                           "ImageNet-1k with a 1000-class head (an in22k model's in1k fine-tune), not this one")
    if num_classes == 1000 and synset_folders:
        synsets = list(ImageNetInfo().label_names())
        if names != synsets:
            unknown = [n for n in names if n not in synsets]
            raise LabelProblem(
                f"{folder} holds {len(names)} ImageNet synset folders, not the 1000 of ImageNet-1k"
                + (f" ({len(unknown)} are no ImageNet-1k synset, e.g. {unknown[0]})" if unknown else "")
                + ": ImageFolder would number them 0..{} in their own order, not by their ImageNet indices, and "
                  "every score would be wrong".format(len(names) - 1))


# timm's evaluation sets (its validate.py and results/ files), with the defaults each one needs from timm's own
# lists (timm/data/_info): A and R score the 200 classes they keep (logits sliced to those 1000-class indices);
# their "clean" baselines score the same 200 classes on the ordinary validation set (a class map of their synsets);
# ReaL scores against the relabelled lists (timm ships them), skipping images whose list is empty.
EVAL_SETS = {
    "imagenet": {},
    "imagenet-real": {"real_labels": "imagenet_real_labels.json"},
    "imagenetv2-matched-frequency": {},
    "sketch": {},
    "imagenet-a": {"valid_labels": "imagenet_a_indices.txt", "subset": "imagenet_a_synsets.txt"},
    "imagenet-r": {"valid_labels": "imagenet_r_indices.txt", "subset": "imagenet_r_synsets.txt"},
    "imagenet-a-clean": {"valid_labels": "imagenet_a_indices.txt", "class_map": "imagenet_a_synsets.txt"},
    "imagenet-r-clean": {"valid_labels": "imagenet_r_indices.txt", "class_map": "imagenet_r_synsets.txt"},
}
_REAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")


def timm_info(name: str) -> Path:
    """A file of timm's own label lists (``timm/data/_info``)."""
    import timm.data

    return Path(timm.data.__file__).parent / "_info" / name


@dataclass
class EvalSet:
    """What scoring a set takes: its name, the logits' columns to keep, a class map, ReaL's lists."""

    name: Optional[str] = None
    valid_labels: Optional[List[int]] = None
    subset: Optional[List[str]] = None  # the synsets the valid labels stand for, in order
    class_map: Optional[str] = None
    class_names: List[str] = field(default_factory=list)  # the class map's names, in index order
    real_labels: Optional[list] = None

    @classmethod
    def resolve(cls, dataset=None, real_labels=None, class_map=None, valid_labels=None,
                num_classes: int = 1000) -> "EvalSet":
        """The set's defaults (``dataset``), overridden by the files given; every file checked and named."""
        if dataset is not None and dataset not in EVAL_SETS:
            raise LabelProblem(f"unknown evaluation set {dataset!r}; known: {', '.join(EVAL_SETS)}")
        if real_labels is not None and dataset not in (None, "imagenet-real"):
            raise LabelProblem(f"--real-labels scores ReaL, and --dataset says {dataset}: give --dataset imagenet-real "
                               "(or leave it out), so that the row is not named as the other set's")
        if real_labels is not None:
            dataset = "imagenet-real"
        defaults = EVAL_SETS.get(dataset, {})
        if dataset is not None and num_classes != 1000:
            raise LabelProblem(f"{dataset} is scored with ImageNet-1k's 1000 classes and the model has {num_classes}: "
                               "use its in1k head (an in22k model's in1k fine-tune)")
        out = cls(name=dataset)
        valid = valid_labels or (timm_info(defaults["valid_labels"]) if "valid_labels" in defaults else None)
        if valid is not None:
            try:
                out.valid_labels = [int(line) for line in Path(valid).read_text().split()]
            except (OSError, ValueError) as e:
                raise LabelProblem(f"valid labels {valid}: not one class index a line ({e})") from None
            bad = [i for i in out.valid_labels if not 0 <= i < num_classes]
            if bad or not out.valid_labels:
                raise LabelProblem(f"valid labels {valid}: {bad[:3] or 'none'} outside the model's {num_classes} classes")
        if "subset" in defaults and not valid_labels:
            out.subset = timm_info(defaults["subset"]).read_text().split()
        cmap = class_map or (timm_info(defaults["class_map"]) if "class_map" in defaults else None)
        if cmap is not None:
            out.class_map = str(cmap)
            out.class_names = read_class_map(cmap, len(out.valid_labels) if out.valid_labels else num_classes)
        real = real_labels or (timm_info(defaults["real_labels"]) if "real_labels" in defaults else None)
        if real is not None:
            try:
                out.real_labels = json.loads(Path(real).read_text())
            except (OSError, ValueError) as e:
                raise LabelProblem(f"ReaL labels {real}: not a JSON list ({e})") from None
            if not isinstance(out.real_labels, list) or not all(isinstance(x, list) for x in out.real_labels):
                raise LabelProblem(f"ReaL labels {real}: not a list of label lists, one per validation image")
            bad = next(((i, x) for i, labels in enumerate(out.real_labels) for x in labels
                        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < num_classes), None)
            if bad is not None:
                raise LabelProblem(f"ReaL labels {real}: image {bad[0] + 1}'s label {bad[1]!r} is not a class index of "
                                   f"the model's {num_classes}: it could never be hit")
            if not any(out.real_labels):
                raise LabelProblem(f"ReaL labels {real}: every image's list is empty, so no image would be scored")
        return out

    def check_folder(self, folder: Path, num_classes: int) -> None:
        """The folder's labels against what the set scores."""
        check_tree(folder)
        if self.class_map:
            names = {d.name for d in folder.iterdir() if d.is_dir()} if folder.is_dir() else set()
            missing = [n for n in self.class_names if n not in names]
            if missing:
                raise LabelProblem(f"{folder} has no folder for {len(missing)} of the class map's {len(self.class_names)} "
                                   f"classes (e.g. {printable(missing[0])}): they would never be scored")
            return  # the map numbers the classes; folders it does not name are not read
        if self.subset is not None:
            names = sorted(d.name for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
            stray = [n for n in names if n not in self.subset]
            if stray:
                raise LabelProblem(f"{folder}: folder {stray[0]} is not one of the {len(self.subset)} synsets of "
                                   f"{self.name}" + (f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""))
            if names != sorted(self.subset):
                missing = sorted(set(self.subset) - set(names))
                raise LabelProblem(f"{folder} lacks {len(missing)} of the {len(self.subset)} synsets of {self.name} "
                                   f"(e.g. {missing[0]}): the folders would not be numbered as its classes")
        elif self.valid_labels is not None:
            classes = [d for d in folder.iterdir() if d.is_dir()] if folder.is_dir() else []
            if len(classes) != len(self.valid_labels):
                raise LabelProblem(f"{folder} has {len(classes)} class folders and the valid labels "
                                   f"{len(self.valid_labels)}: they must be the same classes, in order")
        else:
            check_labels(folder, num_classes)

    def real_lists(self, names: List[str]) -> Dict[str, list]:
        """ReaL's label list of each image, by file name; the list's length must be the set's."""
        if len(self.real_labels) != len(names):
            raise LabelProblem(f"the ReaL labels list {len(self.real_labels)} images and the set has {len(names)}: "
                               "they must be the same validation images")
        lists = {}
        for name in names:
            match = _REAL_NAME.fullmatch(name)
            if not match or not 1 <= int(match[1]) <= len(self.real_labels):
                raise LabelProblem(f"{name} is not an ImageNet validation file name (ILSVRC2012_val_00000001.JPEG …): "
                                   "ReaL labels are matched by it")
            lists[name] = self.real_labels[int(match[1]) - 1]
        return lists


def read_class_map(path, classes: int) -> List[str]:
    """A class map as timm reads one (a ``.txt`` file, one class folder name a line, its line number the class
    index), checked: another format, an empty or repeated name, or more names than ``classes`` is refused."""
    path = Path(path)
    if not path.is_file():
        raise LabelProblem(f"class map {path}: no such file")
    if path.suffix.lower() != ".txt":
        raise LabelProblem(f"class map {path}: a {path.suffix or 'file without an extension'}; the accuracy tool reads "
                           "timm's text class maps (.txt, one class folder name a line, its line number the index)")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise LabelProblem(f"class map {path} is not UTF-8 text ({e.reason})") from None
    while names and not names[-1]:
        names.pop()
    empty = [i + 1 for i, n in enumerate(names) if not n]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if not names or empty:
        raise LabelProblem(f"class map {path}: " + (f"line {empty[0]} is empty" if empty else "names no class"))
    if repeated:
        raise LabelProblem(f"class map {path} names {printable(repeated[0])} twice: timm keeps the last line, and the "
                           "class of the first would never be scored")
    if len(names) > classes:
        raise LabelProblem(f"class map {path} has {len(names)} classes and the model's scores {classes}: indices "
                           f"from {classes} on could never be hit")
    return names


def _collate(samples):
    """A batch of the readable samples, and the descriptions of those that were not."""
    readable = [s for s in samples if s[0] is not None]
    unreadable = [s[2] for s in samples if s[0] is None]
    images = torch.stack([s[0] for s in readable]) if readable else None
    targets = torch.tensor([s[1] for s in readable], dtype=torch.long)
    return images, targets, unreadable, [s[3] for s in readable]


def load_model(model_name: str, pretrained: bool = False, checkpoint=None, use_ema: bool = False,
               **model_kwargs) -> torch.nn.Module:
    """The model to score: published weights (``pretrained``), a checkpoint file as timm's validate.py takes it
    (``--checkpoint``, its EMA weights only with ``use_ema``; read safely, either published layout or train.py's,
    and with as many classes as its classifier has unless ``num_classes`` is given), or random weights."""
    if not checkpoint:
        return timm.create_model(model_name, pretrained=pretrained, **model_kwargs)
    loaded = load_checkpoint(checkpoint, use_ema=use_ema)
    cfg = timm.models.get_pretrained_cfg(model_name)
    classifier = getattr(cfg, "classifier", None) if cfg is not None else None
    classes = head_classes(loaded.state_dict)
    if classes is None and isinstance(classifier, str) and f"{classifier}.weight" in loaded.state_dict:
        classes = int(loaded.state_dict[f"{classifier}.weight"].shape[0])  # another timm model's own head
    if classes is not None:
        model_kwargs.setdefault("num_classes", classes)
    overlay = dict(model_kwargs.pop("pretrained_cfg_overlay", None) or {}, file=str(checkpoint),
                   state_dict=loaded.state_dict)
    return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **model_kwargs)


def checkpoint_label(path) -> str:
    """How a row names the checkpoint it scored: the file's name and the start of its sha256."""
    return f"{Path(path).name} (sha256 {file_digest(path)[:12]})"


@dataclass
class Images:
    """What scoring reads: the images (each read once), their file names' ReaL lists, the columns to keep."""

    dataset: Dataset
    data_config: dict
    eval_set: EvalSet
    real: Optional[Dict[str, list]]
    valid: Optional[torch.Tensor]


def read_images(data_dir, split: str, model: torch.nn.Module, eval_set: EvalSet, max_samples: int = 0) -> Images:
    """The set's images with the model's own preprocessing, after checking that their labels are the model's
    classes (``LabelProblem`` otherwise, before anything is scored)."""
    folder = image_root(data_dir, split)
    eval_set.check_folder(folder, model.num_classes)
    data_config = resolve_data_config({}, model=model)
    transform = create_transform(**data_config, is_training=False)
    images_of = create_dataset("", root=str(folder), search_split=False, is_training=False,
                               class_map=eval_set.class_map or "")
    real = (eval_set.real_lists([images_of.filename(i, basename=True) for i in range(len(images_of))])
            if eval_set.real_labels is not None else None)
    dataset = _EachImageOnce(images_of, transform)
    if max_samples:
        dataset = Subset(dataset, range(min(max_samples, len(dataset))))
    valid = torch.tensor(eval_set.valid_labels) if eval_set.valid_labels is not None else None
    return Images(dataset, data_config, eval_set, real, valid)


@dataclass
class Counts:
    hits1: float = 0.0
    hits5: float = 0.0
    scored: int = 0
    skipped: List[str] = field(default_factory=list)


def score(model: torch.nn.Module, images: Images, batch_size: int, device: str, workers: int = 0,
          skip_unreadable: bool = False, progress: Optional[bool] = None, label: str = "") -> Counts:
    """Top-1 and top-5 hits over every image (every rank's share, all-reduced under torchrun)."""
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    sampler = UnpaddedDistributedSampler(images.dataset) if distributed else None
    loader = DataLoader(images.dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
                        collate_fn=_collate)
    if progress is None:
        progress = rank == 0 and sys.stderr.isatty()
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"eval {label}", unit="batch")
    counts = torch.zeros(4, dtype=torch.float64)  # top-1 hits, top-5 hits, images scored, images skipped
    skipped = []
    with torch.inference_mode():
        for batch, targets, unreadable, names in batches:
            if unreadable and not skip_unreadable:
                raise UnreadableImages(
                    f"{len(unreadable)} image(s) cannot be read: {'; '.join(unreadable[:5])}"
                    f"{' …' if len(unreadable) > 5 else ''}. Replace them, or pass --skip-unreadable to leave them "
                    "out (the row then says how many and which, and is flagged)")
            skipped += unreadable
            counts[3] += len(unreadable)
            if batch is None:
                continue
            logits = model(batch.to(device))
            if images.valid is not None:
                logits = logits[:, images.valid.to(logits.device)]  # the set's classes, in its order
            top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices.cpu()
            if images.real is not None:  # any of the image's ReaL labels counts; an image without one is not scored
                scored = [(t, images.real[name]) for t, name in zip(top.tolist(), names) if images.real[name]]
                hit1 = sum(t[0] in labels for t, labels in scored)
                hit5 = sum(any(p in labels for p in t) for t, labels in scored)
                counts[:3] += torch.tensor([hit1, hit5, len(scored)], dtype=torch.float64)
                continue
            hits = top.eq(targets[:, None])
            counts[:3] += torch.tensor([hits[:, 0].sum().item(), hits.any(dim=-1).sum().item(), len(targets)],
                                       dtype=torch.float64)
    if distributed:
        dist.all_reduce(counts)
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, skipped)
        skipped = [name for part in gathered for name in part]
    hits1, hits5, scored, _ = counts.tolist()
    return Counts(hits1, hits5, int(scored), skipped)


def result_row(model_name: str, model: torch.nn.Module, images: Images, counts: Counts) -> dict:
    """The row's figures, as timm's results files and the accuracy CSVs hold them."""
    top1, top5, n = 100 * counts.hits1 / counts.scored, 100 * counts.hits5 / counts.scored, counts.scored
    skipped = counts.skipped
    return {
        "model": model_name,
        "img_size": images.data_config["input_size"][-1],
        "top1": round(top1, 3),
        "top1_err": round(100 - top1, 3),
        "top5": round(top5, 3),
        "top5_err": round(100 - top5, 3),
        "samples": n,
        "skipped": len(skipped),
        "skipped_files": "; ".join(skipped[:20]) + (f" … (+{len(skipped) - 20})" if len(skipped) > 20 else ""),
        "param_count": round(param_count(model), 2),
        "crop_pct": images.data_config["crop_pct"],
        "interpolation": images.data_config["interpolation"],
        "world_size": dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1,
        "eval_set": images.eval_set.name or "",
    }


def evaluate(model_name: str, data_dir, split: str = "validation", batch_size: int = 32, max_samples: int = 0,
             device: str = "cpu", pretrained: bool = False, workers: int = 0, model: Optional[torch.nn.Module] = None,
             progress: Optional[bool] = None, skip_unreadable: bool = False, dataset: Optional[str] = None,
             real_labels=None, class_map=None, valid_labels=None, checkpoint=None, use_ema: bool = False,
             **model_kwargs) -> dict:
    """Top-1/top-5 (%) of ``model_name`` on an ImageFolder-style set, with its cfg's transforms: the model
    (``load_model``), the images with their labels checked (``read_images``), the hits (``score``), the row
    (``result_row``).

    Every image is read once: one that cannot be decoded fails the evaluation (``UnreadableImages``,
    naming it), or with ``skip_unreadable`` is left out, counted in ``skipped`` and named in
    ``skipped_files``; ``samples`` counts the images actually scored. ``dataset`` names one of timm's
    evaluation sets (``EVAL_SETS``) and brings its defaults; ``real_labels``, ``class_map`` and
    ``valid_labels`` are files with timm's ``validate.py`` meanings, as are ``checkpoint`` and ``use_ema``."""
    if max_samples < 0:
        raise ValueError(f"max_samples must be >= 0 (0 = every image), got {max_samples}")
    if model is None:
        model = load_model(model_name, pretrained, checkpoint, use_ema, **model_kwargs)
    model = model.to(device).eval()
    eval_set = EvalSet.resolve(dataset, real_labels, class_map, valid_labels, model.num_classes)
    images = read_images(data_dir, split, model, eval_set, max_samples)
    try:
        counts = score(model, images, batch_size, device, workers, skip_unreadable, progress, label=model_name)
    except UnreadableImages as e:
        raise UnreadableImages(f"{data_dir}: {e}") from None
    if counts.scored == 0:
        raise LabelProblem(f"no image of {data_dir} (split {split!r}) was scored: "
                           + (f"all {len(counts.skipped)} images were unreadable" if counts.skipped else
                              "every image was left out (an empty ReaL list)"))
    row = result_row(model_name, model, images, counts)
    if checkpoint:
        row["checkpoint"] = checkpoint_label(checkpoint)
    return row


def skipped_flag(row: dict) -> str:
    """A row that left images out is not the data set's accuracy: it is flagged, so boards and compare
    leave it out unless told otherwise."""
    return f"incomplete: {row['skipped']} unreadable image(s) skipped" if row.get("skipped") else ""


def describe(row: dict) -> str:
    """What a row's top-1 is: real accuracy only for the published weights on a real data set."""
    from ..results.tables import ACCURACY_KINDS, accuracy_kind

    import pandas as pd

    return ACCURACY_KINDS[accuracy_kind(pd.DataFrame([row])).iloc[0]]


class _UsageError(Exception):
    """A command-line argument that cannot work; printed as one line, exit 2, before any model loads."""


def _check_args(args) -> None:
    problems = []
    if args.max_samples < 0:
        problems.append(f"--max-samples must be >= 0 (0 = every image), got {args.max_samples}")
    if args.batch_size < 1:
        problems.append(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers < 0:
        problems.append(f"--workers must be >= 0, got {args.workers}")
    if args.data_dir and not Path(args.data_dir).exists():
        problems.append(f"--data-dir {args.data_dir}: no such file or directory")
    if args.results:
        results = Path(args.results)
        if results.is_dir():
            problems.append(f"--results {args.results} is a directory: give the CSV file to append to, "
                            f"e.g. {results / 'accuracy_imagenet.csv'}")
        elif not results.parent.is_dir():
            problems.append(f"--results {args.results}: directory {results.parent} does not exist")
        elif results.exists() and (not os.access(results, os.W_OK) or not results.stat().st_mode & 0o222):
            problems.append(f"--results {args.results} is read-only: the row could not be written after the run")
        elif not results.exists() and not os.access(results.parent, os.W_OK):
            problems.append(f"--results {args.results}: directory {results.parent} is not writable")
        elif results.exists() and results.stat().st_size:
            from ..results.validate import load_checked

            table, found = load_checked(results)
            problems += [f"--results {p}" for p in found[:1]]
            suites = set(table["suite"].dropna().astype(str)) if "suite" in table else set()
            if not found and suites - {"accuracy"}:
                problems.append(f"--results {args.results} holds {sorted(suites)} rows: give an accuracy CSV")
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
        if not checkpoint.is_file():
            problems.append(f"--checkpoint {args.checkpoint}: " + ("a directory, not a checkpoint file"
                                                                   if checkpoint.is_dir() else "no such file"))
    elif args.use_ema:
        problems.append("--use-ema picks a --checkpoint's EMA weights: give --checkpoint too")
    if args.device:
        try:
            device = torch.device(args.device)
        except RuntimeError as e:
            problems.append(f"--device {args.device!r}: {e}")
        else:
            if device.type == "cuda" and not torch.cuda.is_available():
                problems.append(f"--device {args.device}: CUDA is not available here")
    try:
        json.loads(args.model_kwargs)
    except ValueError as e:
        problems.append(f"--model-kwargs is not JSON: {e}")
    if problems:
        raise _UsageError("; ".join(problems))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="top-1/top-5 of a timm model (torchrun for several processes)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", default="", help="ImageFolder root; empty = a generated tiny set")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-samples", type=int, default=0, help="score only the first N images (0 = all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pretrained", action="store_true", help="the published weights (cached, or downloaded)")
    parser.add_argument("--checkpoint", default=None, metavar="FILE",
                        help="score this checkpoint (timm train.py's, or either published layout), as validate.py's "
                             "--checkpoint; its classes from its classifier unless --model-kwargs gives num_classes")
    parser.add_argument("--use-ema", action="store_true", help="the --checkpoint's EMA weights, if it has them "
                                                                "(validate.py's --use-ema)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--model-kwargs", default="{}", help="JSON of extra timm.create_model kwargs")
    parser.add_argument("--results", default="", help="append the row to this CSV (rank 0)")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="leave out images that cannot be decoded (counted, named and flagged in the row) "
                             "instead of failing")
    parser.add_argument("--dataset", default=None, choices=list(EVAL_SETS), metavar="NAME",
                        help=f"the evaluation set, with its defaults and named in the row: {', '.join(EVAL_SETS)}")
    parser.add_argument("--real-labels", default=None, help="ReaL labels JSON (default for imagenet-real: timm's copy)")
    parser.add_argument("--class-map", default=None, help="class map file, as timm's validate.py takes it")
    parser.add_argument("--valid-labels", default=None, help="the 1000-class indices to keep, one a line (timm's meaning)")
    parser.add_argument("--results-file", default=None, help="also write the row in timm's results format to this file")
    parser.add_argument("--results-format", choices=("csv", "json"), default="csv", help="of --results-file")
    parser.add_argument("--tf32", type=int, choices=(0, 1), default=0,
                        help="TF32 for matmuls and cuDNN convolutions (default 0: reproducible fp32 on GPUs)")
    args = parser.parse_args(argv)
    try:
        _check_args(args)
    except _UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import dinat_timm  # noqa: F401  (registers the models)
    from .environment import set_tf32

    if not timm.models.is_model(args.model.split(".")[0]):
        close = timm.list_models(f"*{args.model.split('.')[0].split('_')[0]}*")[:6]
        print(f"error: --model {args.model!r} is not a registered model" + (f" (close: {', '.join(close)})" if close else ""),
              file=sys.stderr)
        return 2
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
    try:
        row = evaluate(
            args.model, data_dir, split=args.split, batch_size=args.batch_size, max_samples=args.max_samples,
            device=args.device, pretrained=args.pretrained, workers=args.workers,
            skip_unreadable=args.skip_unreadable, dataset=args.dataset, real_labels=args.real_labels,
            class_map=args.class_map, valid_labels=args.valid_labels, checkpoint=args.checkpoint,
            use_ema=args.use_ema, **json.loads(args.model_kwargs),
        )
    except UnreadableImages as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (LabelProblem, PretrainedWeightsUnavailable, CorruptCheckpoint, CheckpointMismatchError, OSError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)  # the first line says it; no traceback
        return 2
    row.update(dataset=dataset_tag, pretrained=int(args.pretrained))
    row.update(what=describe(row), flag=skipped_flag(row))
    if not dist.is_initialized() or dist.get_rank() == 0:
        writes = [(target, write) for target, write in (
            (args.results, lambda: append_rows(args.results, [measured])),
            (args.results_file, lambda: append_timm_row(args.results_file, row, args.results_format))) if target]
        measured = {**row, **environment(args.device), "suite": "accuracy", "status": "ok"} if writes else row
        for target, write in writes:
            try:
                write()
            except (CsvWriteError, OSError, ValueError) as e:  # never drop a measured row: it goes to stdout instead
                print(json.dumps(measured))
                print(f"error: the row above could not be written to {target}: {e}", file=sys.stderr)
                return 2
        print(json.dumps(row))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
