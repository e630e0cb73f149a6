"""The QRNN modules: :class:`QRNNLayer` (one layer, one direction) and :class:`QRNN` (a stack,
optionally bidirectional), with their fused CPU path (``fused.py``), the path choice and unfused
path (``gates.py``) and the window's products (``window.py``)."""

from .qrnn import QRNN, QRNNLayer

__all__ = ["QRNN", "QRNNLayer"]
