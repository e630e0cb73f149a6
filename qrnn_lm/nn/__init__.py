"""The QRNN modules: :class:`QRNNLayer` (one layer, one direction) and :class:`QRNN` (a stack,
optionally bidirectional), the choice between the fused CPU path (an op of
``qrnn_lm.ops.qrnn_chunk``) and the unfused path (``gates.py``), the window's products
(``window.py``), incremental evaluation (``incremental.py``) and
``nn.RNNBase``'s surface (``rnn_compat.py``)."""

from .layer import QRNNLayer
from .incremental import StreamState
from .qrnn import QRNN

__all__ = ["QRNN", "QRNNLayer", "StreamState"]
