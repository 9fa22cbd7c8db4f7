"""Caching the index and mask tensors that depend only on shapes."""
from __future__ import annotations

import contextlib
import functools

import torch


@contextlib.contextmanager
def _real_tensors():
    """Leave any fake-tensor and proxy tracing mode (``torch.export``, ``make_fx``) and TorchScript's
    tracer (``torch.jit.trace``): the layouts are computed from Python ints, so they are built for real
    and enter a traced graph as constants, instead of as traced index arithmetic whose ``int(tensor)``
    export cannot guard (and which ``torch.jit.trace``'s check would see in one trace and not in the
    next, where the cache answers)."""
    with contextlib.ExitStack() as stack:
        tracing = torch._C._get_tracing_state()
        if tracing is not None:
            torch._C._set_tracing_state(None)
            stack.callback(torch._C._set_tracing_state, tracing)
        try:
            from torch._subclasses.fake_tensor import unset_fake_temporarily
            from torch.fx.experimental.proxy_tensor import disable_proxy_modes_tracing
        except ImportError:  # older torch: nothing to leave
            pass
        else:
            stack.enter_context(unset_fake_temporarily())
            stack.enter_context(disable_proxy_modes_tracing())
        yield


def exporting() -> bool:
    """Whether ``torch.export`` (or ONNX through it) is tracing right now (False on older torch)."""
    return getattr(torch.compiler, "is_exporting", lambda: False)()


def cached_constant(maxsize: int = 128):
    """``lru_cache`` for functions returning constant tensors, built outside inference mode,
    autograd and tracing: a tensor first made under ``torch.inference_mode()`` could not be used
    later in a training step, and these are reused across both and across exports."""

    def decorate(fn):
        @functools.lru_cache(maxsize=maxsize)
        def build(*args):
            with _real_tensors(), torch.inference_mode(False), torch.no_grad():
                return fn(*args)

        # torch.compile would trace through the cache and rebuild (and graph-break on) the index
        # arithmetic in every graph; the results are pure functions of the arguments, so dynamo
        # may call this once at trace time and keep what it returns as constants
        @torch.compiler.assume_constant_result  # on a plain function: dynamo unwraps lru_cache
        def constant(*args):
            return build(*args)

        # (symbolic sizes, under dynamic=True, cannot be constants: dynamo breaks the graph there)
        constant.cache_clear = build.cache_clear
        return functools.wraps(fn)(constant)

    return decorate

