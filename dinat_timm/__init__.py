"""DiNAT / NAT for timm. ``import dinat_timm`` registers every variant with ``timm.create_model``."""
from . import models  # noqa: F401  (registers the models)
from .ops import available_backends, choose_backend, neighborhood_attention_2d

__version__ = "0.1.0"
__all__ = ["neighborhood_attention_2d", "available_backends", "choose_backend", "__version__"]
