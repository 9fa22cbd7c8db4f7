"""``python -m dinat_timm.run SCRIPT.py ARGS…``: run a script (timm's ``train.py``, ``validate.py``,
``benchmark.py``, ``inference.py``, or your own) with the DiNAT/NAT models registered.

timm has no plugin mechanism: its scripts call ``timm.create_model`` on names they know only once something has
imported ``dinat_timm``. This imports it, then runs the script as ``__main__`` exactly as ``python SCRIPT.py
ARGS…`` would (its folder first on ``sys.path``, ``sys.argv`` as given); the exit status and output are the
script's. Under ``torchrun``: ``torchrun --nproc_per_node=N -m dinat_timm.run train.py ARGS…``.
"""
from __future__ import annotations

import os
import runpy
import sys

USAGE = "usage: python -m dinat_timm.run SCRIPT.py [ARGS…]  (runs SCRIPT with the DiNAT/NAT models registered)"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    script = argv[0]
    if not os.path.exists(script):
        print(f"error: run: {script}: no such file", file=sys.stderr)
        return 2
    if not (os.path.isfile(script) or os.path.isfile(os.path.join(script, "__main__.py"))):
        print(f"error: run: {script} is a directory without __main__.py, not a script", file=sys.stderr)
        return 2

    import dinat_timm  # noqa: F401  (registers the models with timm's factory)

    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)) if os.path.isfile(script) else os.path.abspath(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:  # the script's own exit status
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
