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
        @functools.wraps(fn)
        def wrapper(*args):
            with torch.inference_mode(False), torch.no_grad():
                return fn(*args)

        return wrapper

    return decorate
