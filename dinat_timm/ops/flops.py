"""The operator's cost as ``torch.utils.flop_counter.FlopCounterMode`` counts it: one registered formula for a
neighborhood attention call, whatever backend computes it (a tiled backend scores padded halos it then masks, a
fused kernel is one opaque call; neither is the paper's count).

While a ``FlopCounterMode`` is counting, a call hides its backend's own operations from the counter and
records one call of ``dinat_timm::neighborhood_attention_cost``, whose formula is the operator's: per query and
head, ``k²·D`` multiply-adds for the scores and as many for the weighted sum (``4·k²·D`` FLOPs). The forward is
counted so; a backward (training) is counted through its operations as they run.
"""
from __future__ import annotations

import contextlib

import torch

_NAME = "dinat_timm::neighborhood_attention_cost"


def _define():
    try:
        @torch.library.custom_op(_NAME, mutates_args=())
        def cost(query: torch.Tensor, kernel_size: int) -> torch.Tensor:
            return query.new_empty(0)
    except RuntimeError:  # defined already: a second copy of the package in this process
        pass
    op = torch.ops.dinat_timm.neighborhood_attention_cost

    from torch.utils.flop_counter import register_flop_formula

    try:
        @register_flop_formula(op)
        def formula(query_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
            batch, heads, height, width, head_dim = query_shape
            return 4 * batch * heads * height * width * kernel_size * kernel_size * head_dim
    except (RuntimeError, ValueError):  # registered already
        pass
    return op


_COST = _define()


def _counter_on_top():
    """The ``FlopCounterMode`` counting this call, when it is the innermost dispatch mode; else None."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    mode = _get_current_dispatch_mode()
    return mode if type(mode).__name__ == "_FlopCounterMode" else None


@contextlib.contextmanager
def counted_as_the_operator(query: torch.Tensor, kernel_size: int):
    """Inside a ``FlopCounterMode``: the enclosed backend call is not counted op by op; one call of the
    operator's cost is counted instead. Elsewhere (a compiled or exported graph among them): nothing."""
    if torch.compiler.is_compiling() or _counter_on_top() is None:
        yield
        return
    from torch.utils._python_dispatch import _pop_mode_temporarily

    with _pop_mode_temporarily():
        yield
    _COST(query, kernel_size)
