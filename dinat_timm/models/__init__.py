"""timm model families; importing registers them with timm's factory."""
from . import dinat, dinat_s, isotropic  # noqa: F401
from .dinat import DiNAT
from .dinat_s import DiNAT_s
from .isotropic import NATIsotropic

__all__ = ["DiNAT", "DiNAT_s", "NATIsotropic"]
