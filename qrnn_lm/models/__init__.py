"""The language models (embedding -> recurrent stack -> tied decoder), their dropouts, and the
checkpoint file that stores a trained one."""

from .dropout import LockedDropout, WeightDrop, embedding_dropout
from .language_model import QRNNLanguageModel

__all__ = ["QRNNLanguageModel", "LockedDropout", "WeightDrop", "embedding_dropout"]
