"""NATTEN 0.14–0.17: the unfused QK(+RPB) / AV ops that the DiNAT weights were trained with.

0.17 names them ``na2d_qk(..., rpb=)`` / ``na2d_av``, 0.15–0.16 ``na2d_qk_with_bias``, 0.14
``natten2dqkrpb`` / ``natten2dav``. Layout ``[B, heads, H, W, D]`` like ours, CPU and CUDA kernels, with backward.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._natten import natten_version

NAME = "natten_legacy"
COMPILES = False  # pre-2.0 autograd Functions around C++ ops: dynamo breaks the graph there


def available() -> Optional[str]:
    version, reason = natten_version()
    if version is None:
        return reason
    if version >= (0, 18):
        return f"natten {'.'.join(map(str, version))} removed the RPB ops of NATTEN <= 0.17"
    if _ops() is None:
        return "natten is installed but has neither na2d_qk/na2d_av nor natten2dqkrpb/natten2dav"
    return None


def supports(query: torch.Tensor, rpb: Optional[torch.Tensor], needs_grad: bool) -> Optional[str]:
    if query.device.type == "cpu" and query.dtype not in (torch.float32, torch.float64):
        return f"NATTEN's legacy CPU kernels take float32/float64, not {query.dtype}"
    return None


def _ops():
    """(qk(q, k, rpb, kernel_size, dilation), av(attn, v, kernel_size, dilation)) of this release."""
    import inspect

    import natten.functional as nf

    if not hasattr(nf, "na2d_av") and not hasattr(nf, "natten2dav"):
        return None
    av = getattr(nf, "na2d_av", None) or nf.natten2dav
    qk = getattr(nf, "na2d_qk", None)
    if qk is not None and "rpb" in inspect.signature(qk).parameters:  # 0.17
        return (lambda q, k, rpb, ks, d: qk(q, k, ks, d, rpb=rpb)), av
    if hasattr(nf, "na2d_qk_with_bias"):  # 0.15–0.16
        return nf.na2d_qk_with_bias, av
    if hasattr(nf, "natten2dqkrpb"):  # 0.14
        return nf.natten2dqkrpb, av
    return None


def neighborhood_attention(query, key, value, kernel_size, dilation, rpb, scale):
    qk, av = _ops()
    if rpb is None:  # the oldest releases require a bias; a zero table is the same function
        rpb = query.new_zeros(query.shape[1], 2 * kernel_size - 1, 2 * kernel_size - 1)
    attn = qk((query * scale).contiguous(), key.contiguous(), rpb.to(query.dtype), kernel_size, dilation)
    return av(attn.softmax(dim=-1), value.contiguous(), kernel_size, dilation)
