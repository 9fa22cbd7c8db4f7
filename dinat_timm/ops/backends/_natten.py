"""Finding out which NATTEN (if any) is importable, once."""
from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=1)
def natten_version():
    """((major, minor, patch) or None, reason it is unusable)."""
    try:
        import natten
    except ImportError:
        return None, "natten is not installed"
    except Exception as e:  # e.g. a legacy build importing torch internals that moved
        return None, f"natten is installed but fails to import: {type(e).__name__}: {e}"
    match = re.match(r"(\d+)\.(\d+)\.?(\d*)", getattr(natten, "__version__", ""))
    if not match:
        return None, f"cannot read natten's version from {getattr(natten, '__version__', None)!r}"
    return tuple(int(x or 0) for x in match.groups()), None
