"""CPU kernels for one time chunk of a QRNN layer (see ``kernels.py``); the layer-level driver that
runs the matrix products chunk by chunk is ``qrnn_lm/nn/fused.py``."""

from .kernels import HAS_NUMBA, backward_chunk, forward_chunk

__all__ = ["HAS_NUMBA", "forward_chunk", "backward_chunk"]
