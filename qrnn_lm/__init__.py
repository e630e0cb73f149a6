"""qrnn_lm: Quasi-Recurrent Neural Networks for PyTorch.

Public API: :func:`forget_mult`, :class:`ForgetMult`, :class:`QRNNLayer`, :class:`QRNN`.
(No CLI or TensorBoard imports here.)

The names are loaded on first use (PEP 562), so that ``import qrnn_lm.cli`` — and with it
``qrnn-lm --help`` — does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "forget_mult": ".ops.forget_mult",
    "ForgetMult": ".ops.forget_mult",
    "QRNNLayer": ".nn",
    "QRNN": ".nn",
}

__all__ = [*_PUBLIC, "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily below
    from .ops.forget_mult import ForgetMult, forget_mult
    from .nn import QRNN, QRNNLayer


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'qrnn_lm' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
