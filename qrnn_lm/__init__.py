"""qrnn_lm: Quasi-Recurrent Neural Networks for PyTorch.

Public API: :func:`forget_mult`, :class:`ForgetMult`, :class:`QRNNLayer`, :class:`QRNN`.
(No CLI or TensorBoard imports here.)
"""

from .ops.forget_mult import ForgetMult, forget_mult
from .qrnn import QRNN, QRNNLayer

__version__ = "0.1.0"

__all__ = ["forget_mult", "ForgetMult", "QRNNLayer", "QRNN", "__version__"]
