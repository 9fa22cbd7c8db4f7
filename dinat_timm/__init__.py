"""DiNAT / NAT for timm. ``import dinat_timm`` registers every variant with ``timm.create_model``."""
import sys
from importlib.metadata import PackageNotFoundError, version as _installed_version

try:  # one version: pyproject.toml's, as the installed package's metadata holds it
    __version__ = _installed_version("dinat-timm")
except PackageNotFoundError:  # a source tree on sys.path without an install (the speed gate's base worktree)
    __version__ = "0+unknown"
__all__ = ["neighborhood_attention_2d", "available_backends", "choose_backend", "__version__"]

# Options of the interpreter that take the next word as their value (``python -X importtime -m …``).
_OPTIONS_WITH_VALUE = {"-X", "-W", "--check-hash-based-pycs"}


def _module_run_with_m():
    """The module this interpreter was started to run with ``-m``, if any (``sys.orig_argv``)."""
    argv = list(getattr(sys, "orig_argv", ()))
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("-m"):
            return arg[2:]
        if arg in _OPTIONS_WITH_VALUE:
            i += 2
            continue
        if arg == "-c" or not arg.startswith("-"):
            return None  # a script or a command: no -m
        i += 1
    return None


# ``python -m dinat_timm.results …`` (the leaderboards' command line) reads and writes CSVs only:
# it needs neither the models nor the operator, whose import (torch, timm) was most of its start-up.
# Python imports this package first whatever module of it runs, so registering is skipped there.
if _module_run_with_m() != "dinat_timm.results":
    from . import models  # noqa: F401  (registers the models)
    from .ops import available_backends, choose_backend, neighborhood_attention_2d
