"""qrnn_lm: Quasi-Recurrent Neural Networks for PyTorch.

Public API: :func:`forget_mult`, :class:`ForgetMult`. (No CLI or TensorBoard imports here.)
"""

from .ops.forget_mult import ForgetMult, forget_mult

__version__ = "0.1.0"

__all__ = ["forget_mult", "ForgetMult", "__version__"]
