"""Operators of qrnn_lm (this package imports nothing else of qrnn_lm).

The ForgetMult op lives in the subpackage ``qrnn_lm.ops.forget_mult``. Nothing is re-exported
here: binding the function ``forget_mult`` on this package would hide that subpackage from
``import qrnn_lm.ops.forget_mult.triton as module``. Use ``qrnn_lm.forget_mult``.
"""
