"""Which backend serves a call when the caller says ``backend="auto"``.

Only exact backends are candidates, in order of measured speed for the device:

- CPU: ``tiled``. On 2 threads it ran DiNAT-tiny's stage shapes in 1.28–2.49× (forward) and
  1.48–3.53× (forward+backward) the time of Swin-style 7×7 window attention on the same tokens
  (lower is faster; docs/operator.md), where NATTEN 0.15's CPU kernels took 9–13× and 15–31×, and the
  NATTEN >= 0.20 / flex paths are unfused and forward-only on CPU. (The models run their window-shaped
  layers as window attention on CPU, a layout choice of ``NeighborhoodAttention2d``, not of this chooser.)
  ``torch.compile`` (inductor) does not make it faster there: dinat_tiny ran 22.2 images/s compiled against
  23.8 eager (inference) and 5.42 against 5.94 (training step), after 51 s and 348 s of compiling, while
  Swin-T gained 9% and 14%; the attention stays the same flash kernel and its halo copies, which inductor
  does not fuse, so compiling buys only the pointwise ops. Eager is the CPU's way; compiling stays possible.
- CUDA: ``triton`` (fused, with the bias and its gradient), then NATTEN's kernels where installed
  (``natten`` only without ``rpb``; not measured against ``triton`` here, so ``triton`` stays
  first), then ``tiled``. On an H200 in bf16 at batch 64 and DiNAT-tiny's stage shapes, ``triton``
  (at 1b99095, before its halos were sized to the sub-grid)
  took 1.11–2.34× window attention's time forward and 1.68–2.16× forward+backward, ``tiled``
  3.1–5.8× and 2.1–3.8×; dinat_tiny at batch 128 ran 4452 images/s inference on ``triton`` against
  2890 on ``tiled`` (``results/README.md``).
  Compiled ``flex`` is never chosen: on the same H200 it took up to 30.6× forward and 134×
  forward+backward (56², dilation 8), since a 128-token block of a row-major map meets many key blocks.
- Under ``torch.compile`` only backends that trace without a graph break (``COMPILES``) are
  candidates: ``triton`` on CUDA, ``tiled`` everywhere.
- ``gather`` (the reference) is never chosen automatically.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from .backends import BACKENDS


def preference(device_type: str, compiling: bool = False) -> List[str]:
    order = ["triton", "natten", "natten_legacy", "tiled"] if device_type == "cuda" else ["tiled"]
    if compiling:
        order = [name for name in order if BACKENDS[name].COMPILES]
    return order


def _unknown(name: str) -> str:
    return f"unknown attention backend {name!r}; choose 'auto' or one of {sorted(BACKENDS)}"


def check_backend_name(name: str) -> None:
    """Refuse a name that is neither ``"auto"`` nor a backend, listing the names."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(_unknown(name))


def why_not(name: str, query: torch.Tensor, rpb: Optional[torch.Tensor], needs_grad: bool) -> Optional[str]:
    """None if backend ``name`` can compute this call exactly, else the reason it cannot."""
    if name not in BACKENDS:
        return _unknown(name)
    backend = BACKENDS[name]
    return backend.available() or backend.supports(query, rpb, needs_grad)


def choose_backend(query: torch.Tensor, rpb: Optional[torch.Tensor], needs_grad: bool) -> str:
    compiling = bool(getattr(torch, "compiler", None) and torch.compiler.is_compiling())
    reasons = {}
    for name in preference(query.device.type, compiling):  # every list ends with tiled, which serves every call
        reason = why_not(name, query, rpb, needs_grad)
        if reason is None:
            return name
        reasons[name] = reason
    raise RuntimeError(f"no backend can compute this call: {reasons}")  # tiled serves every call


def available_backends() -> dict:
    """{name: None if importable and usable here, else why not} for every backend."""
    return {name: backend.available() for name, backend in BACKENDS.items()}
