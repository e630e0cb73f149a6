"""Operators of qrnn_lm. This package imports nothing else of qrnn_lm."""

from .forget_mult import ForgetMult, forget_mult

__all__ = ["forget_mult", "ForgetMult"]
