"""Finding out which NATTEN (if any) is importable, once."""
from __future__ import annotations

import contextlib
import re
from functools import lru_cache


def _legacy_import_shim() -> None:
    """NATTEN <= 0.17 does ``from torch.cuda import _device_t``, an alias newer torch removed;
    putting the alias back (the type it named) lets those releases import on current torch."""
    import torch

    if not hasattr(torch.cuda, "_device_t"):
        from typing import Optional, Union

        torch.cuda._device_t = Optional[Union[torch.device, str, int]]


@contextlib.contextmanager
def _capability_probe_without_a_gpu():
    """NATTEN 0.17 asks for the GPU's compute capability while it imports (``natten/utils/testing.py``:
    ``get_device_cc() >= 70``), which raises "Found no NVIDIA driver" on a machine without one, so
    its CPU kernels could not be reached. Where no GPU is present, the probe answers (0, 0) (no GPU
    feature) for the duration of the import only; the installed package is left as it is."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    probe = torch.cuda.get_device_capability
    torch.cuda.get_device_capability = lambda device=None: (0, 0)
    try:
        yield
    finally:
        torch.cuda.get_device_capability = probe


@lru_cache(maxsize=1)
def natten_version():
    """((major, minor, patch) or None, reason it is unusable)."""
    _legacy_import_shim()
    try:
        with _capability_probe_without_a_gpu():
            import natten
    except ModuleNotFoundError as e:
        if e.name == "natten":
            return None, "natten is not installed"
        return None, f"natten is installed but fails to import: {type(e).__name__}: {e}"
    except Exception as e:  # e.g. a legacy build importing torch internals that moved
        return None, f"natten is installed but fails to import: {type(e).__name__}: {e}"
    match = re.match(r"(\d+)\.(\d+)\.?(\d*)", getattr(natten, "__version__", ""))
    if not match:
        return None, f"cannot read natten's version from {getattr(natten, '__version__', None)!r}"
    return tuple(int(x or 0) for x in match.groups()), None
