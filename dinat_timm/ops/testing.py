"""One call of the operator with gradients, as the exactness checks (the tests, ``tools/gpu_checks.py``)
compare backends: the output and the gradients of q, k, v (and rpb) for a given output gradient."""
from __future__ import annotations

from typing import List, Optional

import torch

from .functional import neighborhood_attention_2d


def outputs_and_grads(backend: str, q, k, v, rpb: Optional[torch.Tensor], grad_out, kernel_size: int, dilation: int,
                      dtype: torch.dtype, device, rpb_dtype: Optional[torch.dtype] = None) -> List[torch.Tensor]:
    """``[out, dq, dk, dv(, drpb)]`` in float64 on the CPU, from fresh leaves of ``dtype`` on ``device``
    (the bias in ``rpb_dtype``, by default ``dtype``), for the loss ``(out * grad_out).sum()``."""
    leaves = [t.to(device=device, dtype=dtype).clone().requires_grad_() for t in (q, k, v)]
    bias = None if rpb is None else rpb.to(device=device, dtype=rpb_dtype or dtype).clone().requires_grad_()
    out = neighborhood_attention_2d(*leaves, kernel_size, dilation, bias, backend=backend)
    (out * grad_out.to(device=device, dtype=out.dtype)).sum().backward()
    grads = [t.grad for t in leaves] + ([] if bias is None else [bias.grad])
    return [out.detach().double().cpu()] + [g.double().cpu() for g in grads]
