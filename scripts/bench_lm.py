"""LM training throughput, QRNN against LSTM layers; see ``qrnn_lm/bench/lm.py``.

Usage: python scripts/bench_lm.py [--hidden-size 1550] [--repeats N] (the same as ``qrnn-lm bench lm``).
"""

from qrnn_lm.bench.lm import main

if __name__ == "__main__":
    main()
