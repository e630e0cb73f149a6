"""numba set-up shared by every CPU kernel of qrnn_lm.ops: whether numba imports (``HAS_NUMBA``,
``IMPORT_ERROR``), the threading layer and the launch lock.

numba's default "omp" threading layer starts a second OpenMP runtime beside PyTorch's own libgomp;
both pools spin on the same cores, and on a 2-core machine that made every ForgetMult call take
8 ms instead of 0.5-4 ms. The "workqueue" layer sleeps instead of spinning, so it is chosen here,
before any kernel runs, unless ``NUMBA_THREADING_LAYER`` is set (or a layer already started).

workqueue aborts the whole process when two Python threads launch parallel kernels at once (the
launch releases the GIL), so every parallel launch of every kernel module holds
:data:`PARALLEL_LOCK`. One lock for all modules, so any kernel module added later is covered too.
(The fused layer's chunk kernels run serially in the calling thread and need no lock.)
"""

import os
import threading

try:
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "workqueue"
    HAS_NUMBA = True
    IMPORT_ERROR = ""
except ImportError as error:  # numba is a hard dependency; this guard only makes the failure explicit
    HAS_NUMBA = False
    IMPORT_ERROR = str(error)

# Serialises parallel kernel launches from different Python threads.
PARALLEL_LOCK = threading.Lock()
