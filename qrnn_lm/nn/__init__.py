"""The QRNN modules: :class:`QRNNLayer` (one layer, one direction) and :class:`QRNN` (a stack,
optionally bidirectional), with their fused CPU path (``fused.py``), the path choice and unfused
path (``gates.py``), the window's products (``window.py``), streaming (``stream.py``) and
``nn.RNNBase``'s surface (``rnn_compat.py``)."""

from .layer import QRNNLayer
from .qrnn import QRNN
from .stream import StreamState

__all__ = ["QRNN", "QRNNLayer", "StreamState"]
