"""DiNAT / NAT for timm. ``import dinat_timm`` registers every variant with ``timm.create_model``."""
from importlib.metadata import PackageNotFoundError, version as _installed_version

try:  # one version: pyproject.toml's, as the installed package's metadata holds it
    __version__ = _installed_version("dinat-timm")
except PackageNotFoundError:  # a source tree on sys.path without an install (the speed gate's base worktree)
    __version__ = "0+unknown"
__all__ = ["neighborhood_attention_2d", "available_backends", "choose_backend", "__version__"]

try:
    import torch  # noqa: F401
except ModuleNotFoundError as e:  # the results tools (dinat_timm.results) read and write CSVs without torch
    if e.name != "torch":
        raise
else:
    from . import models  # noqa: F401  (registers the models)
    from .ops import available_backends, choose_backend, neighborhood_attention_2d
