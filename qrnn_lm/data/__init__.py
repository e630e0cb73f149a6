"""Data for the language model: named datasets (download + checksum), vocabulary, corpus, batching.

``prepare_dataset("ptb")`` gives a folder with train/valid/test.txt, ``Corpus.load(folder)`` the
token ids, ``batchify``/``get_batch``/``sample_seq_len`` the BPTT segments. Every user-facing
problem is a :class:`DataError` whose message is one line saying what to do.
"""

from .batching import batchify, get_batch, sample_seq_len
from .corpus import CACHE_PREFIX, Corpus, file_sha256, user_cache_dir
from .download import DATA_ENV, prepare_dataset, resolve_data_dir
from .errors import DataError
from .registry import DATASETS, SPLIT_FILES, DatasetSpec, Source, mismatched_files
from .vocab import EOS, UNK, Vocab, tokenize_line

__all__ = [
    "CACHE_PREFIX", "DATA_ENV", "DATASETS", "EOS", "SPLIT_FILES", "UNK",
    "Corpus", "DataError", "DatasetSpec", "Source", "Vocab",
    "batchify", "file_sha256", "get_batch", "mismatched_files", "prepare_dataset", "resolve_data_dir",
    "sample_seq_len", "tokenize_line", "user_cache_dir",
]
