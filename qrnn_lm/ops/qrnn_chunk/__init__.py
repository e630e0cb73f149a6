"""The QRNN layer's fused CPU path as one op: numba kernels for one time chunk (``kernels.py``) and
the layer-level driver and autograd function that run the matrix products chunk by chunk around
them (``fused.py``). ``qrnn_lm.nn.layer`` picks this path or the unfused one."""

from .fused import CHUNK_ROWS, fused_layer
from .kernels import HAS_NUMBA, backward_chunk, forward_chunk

__all__ = ["HAS_NUMBA", "forward_chunk", "backward_chunk", "fused_layer", "CHUNK_ROWS"]
