"""One QRNN layer against nn.LSTM over the paper's grid: ``qrnn-lm bench layer`` (see
``qrnn_lm/bench/layer.py``), for a checkout without the installed command.

Usage: python scripts/bench_layer.py [--batch-sizes 8,64] [--seq-lens 32,512] [--repeats N] [--gemm-floor]
[--csv PATH] [--png PATH]; --help lists every option.
"""

import sys

from qrnn_lm.cli import main

if __name__ == "__main__":
    # Through the qrnn-lm entry point, so the run gets the application's allocator setting.
    sys.argv = ["qrnn-lm", "bench", "layer", *sys.argv[1:]]
    main()
