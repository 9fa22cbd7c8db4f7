"""Caching the index and mask tensors that depend only on shapes."""
from __future__ import annotations

import functools

import torch


def cached_constant(maxsize: int = 128):
    """``lru_cache`` for functions returning constant tensors, built outside inference mode and
    autograd: a tensor first made under ``torch.inference_mode()`` could not be used later in a
    training step, and these are reused across both."""

    def decorate(fn):
        @functools.lru_cache(maxsize=maxsize)
        def build(*args):
            with torch.inference_mode(False), torch.no_grad():
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

