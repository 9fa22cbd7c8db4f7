"""Constructor arguments checked where they are given, with messages that name them.

Without these, ``kernel_size=0`` fails deep inside a kernel, ``embed_dim=0`` as a zero-size matmul,
``depths=[]`` as an index error in the head, and ``drop_path_rate=-0.5`` is silently accepted.
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Optional, Sequence, Tuple, Union

from ..ops.checks import check_kernel_and_dilation


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def positive_int(name: str, value, minimum: int = 1) -> int:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def rate(name: str, value) -> float:
    """A probability that drops something: in [0, 1)."""
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def positive_number(name: str, value) -> float:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def optional_positive_number(name: str, value) -> Optional[float]:
    return None if value is None else positive_number(name, value)


def int_list(name: str, values, length: Optional[int] = None, minimum: int = 1) -> Tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not len(values):
        raise ValueError(f"{name} must be a non-empty list of integers >= {minimum}, got {values!r}")
    if length is not None and len(values) != length:
        raise ValueError(f"{name} needs {length} entries (one per stage), got {len(values)}: {list(values)!r}")
    for value in values:
        if not _is_int(value) or value < minimum:
            raise ValueError(f"{name} must hold integers >= {minimum}, got {list(values)!r}")
    return tuple(int(v) for v in values)


def kernel_size(value) -> int:
    try:
        check_kernel_and_dilation(value, 1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"kernel_size: {e}") from None
    return value


def image_size(name: str, value: Union[int, Sequence[int]]):
    sizes = (value, value) if _is_int(value) else value
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) != 2 \
            or not all(_is_int(s) and s >= 1 for s in sizes):
        raise ValueError(f"{name} must be a positive integer or (height, width), got {value!r}")
    return value


def heads_divide(dims: Sequence[int], num_heads: Sequence[int]) -> None:
    for stage, (dim, heads) in enumerate(zip(dims, num_heads)):
        if dim % heads:
            raise ValueError(f"num_heads[{stage}] = {heads} does not divide that stage's channels ({dim})")
