"""Data for the language model: named datasets (download + checksum), vocabulary, corpus, batching.

``prepare_data("ptb")`` gives a folder with train/valid/test.txt (a single text file is split),
``Corpus.load(folder, tokenizer=...)`` the token ids (words, characters, bytes or subwords), ``batchify``/``get_batch``/``sample_seq_len`` the BPTT segments. Every user-facing
problem is a :class:`DataError` whose message is one line saying what to do.
"""

from .batching import batchify, get_batch, sample_seq_len
from .checksums import file_sha256
from .corpus import Corpus
from .download import DATA_ENV, prepare_dataset, resolve_data_dir
from .errors import DataError
from .registry import DATASETS, SPLIT_FILES, DatasetSpec, Source, mismatched_files
from .single_file import prepare_data, split_text_file
from .token_cache import CACHE_PREFIX, user_cache_dir
from .tokenizer import Tokenizer, make_tokenizer, tokenizer_from_state
from .units import RunUnits, bits_per_character, count_words, word_perplexity
from .vocab import EOS, UNK, Vocab, tokenize_line

__all__ = [
    "CACHE_PREFIX", "DATA_ENV", "DATASETS", "EOS", "SPLIT_FILES", "UNK",
    "Corpus", "DataError", "RunUnits", "DatasetSpec", "Source", "Tokenizer", "Vocab",
    "batchify", "bits_per_character", "count_words", "file_sha256", "get_batch", "make_tokenizer",
    "mismatched_files", "prepare_data", "prepare_dataset", "resolve_data_dir", "sample_seq_len",
    "split_text_file", "tokenize_line", "tokenizer_from_state", "user_cache_dir", "word_perplexity",
]
