"""ForgetMult kernels vs the naive loop and a memory-bandwidth reference: ``qrnn-lm bench
forget-mult`` (see ``qrnn_lm/bench/forget_mult.py``), for a checkout without the installed command.

Usage: python scripts/bench_forget_mult.py [--repeats N] [--quick]
"""

import sys

from qrnn_lm.cli import main

if __name__ == "__main__":
    # Through the qrnn-lm entry point, so the run gets the application's allocator setting.
    sys.argv = ["qrnn-lm", "bench", "forget-mult", *sys.argv[1:]]
    main()
