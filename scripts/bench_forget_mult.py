"""ForgetMult kernels vs the naive loop and a memory-bandwidth reference (see qrnn_lm/bench/forget_mult.py).

Same as `qrnn-lm bench forget-mult`. Usage: python scripts/bench_forget_mult.py [--repeats N] [--quick]
"""

from qrnn_lm.bench.forget_mult import main

if __name__ == "__main__":
    main()
