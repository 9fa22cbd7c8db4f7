"""Neighborhood attention and its backends (see ``functional.neighborhood_attention_2d``)."""
from .chooser import available_backends, choose_backend
from .functional import neighborhood_attention_2d

__all__ = ["neighborhood_attention_2d", "available_backends", "choose_backend"]
