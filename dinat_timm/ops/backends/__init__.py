"""One module per backend. Each exposes ``NAME``, ``COMPILES`` (traced by
``torch.compile(fullgraph=True)`` without a graph break), ``available()`` and ``supports(query, rpb,
needs_grad)`` (``None`` when it can serve, else the reason it cannot) and
``neighborhood_attention(query, key, value, kernel_size, dilation, rpb, scale)`` on validated
``[B, heads, H, W, D]`` inputs."""
from . import flex, gather, natten_legacy, natten_modern, tiled, triton_fused, window

BACKENDS = {m.NAME: m for m in (triton_fused, tiled, window, natten_legacy, natten_modern, flex, gather)}

__all__ = ["BACKENDS"]
