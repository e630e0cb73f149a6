"""One QRNN layer against nn.LSTM over the paper's grid; see ``qrnn_lm/bench/layer.py``.

Usage: python scripts/bench_layer.py [--batch-sizes 8,64] [--seq-lens 32,512] [--repeats N]
[--csv PATH] [--png PATH] (the same as ``qrnn-lm bench layer``).
"""

from qrnn_lm.bench.layer import main

if __name__ == "__main__":
    main()
