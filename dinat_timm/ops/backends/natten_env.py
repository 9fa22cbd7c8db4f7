"""Whether this environment has the NATTEN it is named for (tox's and CI's version environments):
above both NATTEN backends, which it asks whether they can run."""
from __future__ import annotations

from . import natten_legacy, natten_modern
from ._natten import natten_version


def check_expected(expected: str) -> str:
    """'' when this environment has the NATTEN ``expected`` ('0.15', '0.17', '0.21', 'none') and its
    backend can run, else one line saying which version and why not."""
    version, reason = natten_version()
    if expected == "none":
        return "" if version is None else f"no NATTEN expected, but natten {'.'.join(map(str, version))} imports"
    if version is None:
        return f"NATTEN {expected} expected: {reason}"
    if ".".join(map(str, version[:2])) != expected:
        return f"NATTEN {expected} expected, found {'.'.join(map(str, version))}"
    backend = natten_legacy if version < (0, 18) else natten_modern
    why = backend.available()
    return f"NATTEN {expected}: backend {backend.NAME!r} cannot run: {why}" if why else ""

