"""The language models (embedding -> QRNN or LSTM stack -> tied decoder), their dropouts, and the
checkpoint file that stores a trained one."""

from .dropout import LockedDropout, WeightDrop, embedding_dropout
from .language_model import LanguageModel, QRNNLanguageModel
from .lstm_layer import LSTMLayer

__all__ = ["LanguageModel", "QRNNLanguageModel", "LSTMLayer", "LockedDropout", "WeightDrop", "embedding_dropout"]
