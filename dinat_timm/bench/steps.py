"""Inference and training steps for throughput and memory, in one place so both measure the same thing."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import timm
import torch

from ..models._blocks import uses_windows

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class StepConfig:
    model: str
    batch_size: int = 8
    img_size: Optional[int] = None  # None: the model's pretrained cfg input size
    dtype: str = "fp32"  # fp16/bf16 run under autocast (AMP); parameters stay fp32
    channels_last: bool = False
    compile: bool = False
    backend: str = "auto"  # attention backend for dinat_timm models; "window:NAME" / "neighborhood:NAME": that layout
    device: str = "cpu"
    pretrained: bool = False


def resolve_img_size(model: torch.nn.Module, img_size: Optional[int]) -> int:
    return img_size or model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]


def model_input_size(name: str) -> int:
    """The input size of a model's default pretrained cfg, without building the model."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)  # an architecture's name gives its default tag's cfg
    return (cfg.input_size if cfg is not None else (3, 224, 224))[-1]


def unsupported_dtype(device: str, dtype: str) -> Optional[str]:
    """Why ``dtype`` is not timed on ``device`` (None: it is): bf16 on a CPU without bf16 arithmetic
    (AVX512-BF16 or AMX, as oneDNN reports it) would time an emulation, not the CPU's bf16; fp16 is a GPU's."""
    kind = torch.device(device).type
    if kind == "cpu" and dtype == "fp16":
        return "fp16 is a GPU configuration"
    if kind == "cpu" and dtype == "bf16":
        supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        if supported is None or not supported():
            return "this CPU has no bf16 arithmetic (AVX512-BF16 or AMX): bf16 would be emulated, so it is not timed"
    return None


def autocast(device: str, dtype: str):
    """Mixed precision as the suites run it: fp32 plain, bf16/fp16 under autocast (parameters stay fp32)."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[dtype])


def build_model(cfg: StepConfig, **kwargs) -> torch.nn.Module:
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {cfg.dtype!r}")
    extra = {}
    if is_dinat_model(cfg.model):
        layout, backend = attn_layout_and_backend(cfg.backend)
        if backend != "auto":
            extra["attn_backend"] = backend
        if layout != "auto":
            extra["attn_layout"] = layout
    elif cfg.img_size:
        extra["img_size"] = cfg.img_size  # a reference model with a fixed token grid (Swin, ViT) is built for it
    try:
        model = timm.create_model(cfg.model, pretrained=cfg.pretrained, **extra, **kwargs)
    except TypeError as e:  # a model whose constructor takes no size (a convnet): any size runs
        if "img_size" not in str(e):
            raise
        extra.pop("img_size")
        model = timm.create_model(cfg.model, pretrained=cfg.pretrained, **extra, **kwargs)
    model.to(cfg.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def cannot_run_at(cfg: StepConfig, model: Optional[torch.nn.Module] = None) -> Optional[str]:
    """Why a reference model cannot run at the requested ``--img-size`` (built for it where its constructor
    takes a size), from one 1-image forward; None when it runs (or no size was requested, or it is ours)."""
    if not cfg.img_size or is_dinat_model(cfg.model):
        return None
    try:
        model = model if model is not None else build_model(cfg)
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, cfg.img_size, cfg.img_size, device=cfg.device))
    except Exception as e:  # noqa: BLE001 - any failure of the reference model at this size is the reason
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"{cfg.model} cannot run at {cfg.img_size} px ({type(e).__name__}: {first[:160]})"
    return None


def attn_layout_and_backend(spec: str):
    """'window:triton' -> ('window', 'triton'); 'neighborhood:auto' -> ('neighborhood', 'auto'); 'tiled' ->
    ('auto', 'tiled'): the model's own layout (window-shaped layers as windows on CPU when the backend is auto)."""
    for layout in ("window", "neighborhood"):
        if spec.startswith(layout + ":"):
            return layout, spec.split(":", 1)[1]
    return "auto", spec


def is_dinat_model(name: str) -> bool:
    """Whether a timm model name is one of ours (so it takes ``attn_backend``)."""
    arch = name.split(".")[0]
    return timm.models.is_model(arch) and timm.models.model_entrypoint(arch).__module__.startswith("dinat_timm.")


def make_input(cfg: StepConfig, img_size: int, requires_grad: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.batch_size, 3, img_size, img_size, generator=gen).to(cfg.device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def _compiled(model: torch.nn.Module) -> Callable:
    """A fresh compile: models share code objects (block and attention forwards), so without a
    reset a row's graphs would depend on what ran before it (guards, recompiles, dynamic sizes)."""
    torch._dynamo.reset()
    return torch.compile(model)


def inference_step(cfg: StepConfig, model: Optional[torch.nn.Module] = None) -> Callable[[], None]:
    model = (model or build_model(cfg)).eval()
    x = make_input(cfg, resolve_img_size(model, cfg.img_size))
    run = _compiled(model) if cfg.compile else model

    def step():
        with torch.inference_mode(), autocast(cfg.device, cfg.dtype):
            run(x)

    return step


def train_step(cfg: StepConfig, model: Optional[torch.nn.Module] = None) -> Callable[[], None]:
    """Forward, cross-entropy, backward and an AdamW update."""
    model = (model or build_model(cfg)).train()
    x = make_input(cfg, resolve_img_size(model, cfg.img_size))
    target = torch.randint(0, max(1, model.num_classes), (cfg.batch_size,), generator=torch.Generator().manual_seed(0)).to(cfg.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(torch.device(cfg.device).type, enabled=cfg.dtype == "fp16")
    run = _compiled(model) if cfg.compile else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(cfg.device, cfg.dtype):
            loss = torch.nn.functional.cross_entropy(run(x), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def count_gmacs(model_name: str, img_size: Optional[int] = None) -> float:
    """Multiply-accumulates of one 1-image forward, in billions, as the papers count them: PyTorch's
    FlopCounterMode, which counts neighborhood attention by its registered formula (``ops.flops``: ``k²``
    dot products per query, whatever the backend computes) and conv, linear and attention (Swin/ViT-rpb)
    by theirs.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(StepConfig(model_name, img_size=img_size)).eval()  # a reference model built for the size
    size = resolve_img_size(model, img_size)
    counter = FlopCounterMode(display=False)
    # the fused CPU SDPA kernels have no flop formula; the math path decomposes into counted matmuls
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 2e9


def param_count(model: torch.nn.Module) -> float:
    """Parameters in millions, as timm's results tables report them."""
    return sum(p.numel() for p in model.parameters()) / 1e6


def config_columns(cfg: StepConfig) -> dict:
    """The columns every speed/memory row shares, incl. the backend ``auto`` resolved to."""
    chosen = "timm"  # the reference model's own attention
    if is_dinat_model(cfg.model):
        chosen = cfg.backend
        layout, op_backend = attn_layout_and_backend(cfg.backend)
        if layout == "auto":  # as the model resolves it
            layout = "window" if uses_windows(layout, op_backend, torch.device(cfg.device).type) else ""
        layout = "" if layout == "neighborhood" else layout
        if op_backend == "auto":
            from ..ops import choose_backend

            probe = torch.empty(1, 1, 7, 7, 8, device=cfg.device)
            resolved = choose_backend(probe, torch.empty(1, 13, 13, device=cfg.device), needs_grad=False)
            chosen = f"{layout + ':' if layout else ''}auto:{resolved}"
    return dict(model=cfg.model, dtype=cfg.dtype, channels_last=int(cfg.channels_last), compile=int(cfg.compile),
                backend=chosen, pretrained=int(cfg.pretrained))
