"""LM training throughput, QRNN against LSTM layers: ``qrnn-lm bench lm`` (see
``qrnn_lm/bench/lm.py``), for a checkout without the installed command.

Usage: python scripts/bench_lm.py [--config FILE] [--hidden-size 1550] [--repeats N]; --help lists every option.
"""

import sys

from qrnn_lm.cli import main

if __name__ == "__main__":
    # Through the qrnn-lm entry point, so the run gets the application's allocator setting.
    sys.argv = ["qrnn-lm", "bench", "lm", *sys.argv[1:]]
    main()
