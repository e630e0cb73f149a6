"""numba set-up shared by every CPU kernel of qrnn_lm.ops: the threading layer and the launch lock.

numba's default "omp" threading layer starts a second OpenMP runtime beside PyTorch's own libgomp;
both pools spin on the same cores, and on a 2-core machine that made every ForgetMult call take
8 ms instead of 0.5-4 ms. The "workqueue" layer sleeps instead of spinning, so it is chosen here,
before any kernel runs, unless ``NUMBA_THREADING_LAYER`` is set (or a layer already started).

workqueue aborts the whole process when two Python threads launch parallel kernels at once (the
launch releases the GIL), so every parallel launch of every kernel module holds
:data:`PARALLEL_LOCK`. One lock for all modules: a ForgetMult launch and a fused-gates launch from
two threads collide just the same.
"""

import os
import threading

try:
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "workqueue"
except ImportError:  # the kernel modules report the missing numba through their HAS_NUMBA flags
    pass

# Serialises parallel kernel launches from different Python threads.
PARALLEL_LOCK = threading.Lock()
