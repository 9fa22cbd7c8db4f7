"""timm model families; importing registers them with timm's factory."""
from . import dinat  # noqa: F401
from .dinat import DiNAT

__all__ = ["DiNAT"]
