"""numba set-up shared by every CPU kernel of qrnn_lm.ops: whether numba imports (``HAS_NUMBA``,
``IMPORT_ERROR``), the threading layer, the launch lock, the fork guard and the cache stamp.

Threading layer. On Linux numba is asked to prefer its "omp" layer (GNU OpenMP), then
"workqueue" (tbb last). The omp layer starts its own libgomp pool beside PyTorch's, and a parallel
launch costs about 2 us; workqueue's costs 75-130 us, and its workers are woken through the OS
each time, so right after a PyTorch op (whose OpenMP threads still spin on the cores) they got
no second core at all: on the 2-core Zen 4, `bench forget-mult` forward+backward at (70, 20, 1550)
went from 0.44-0.54 of the add bandwidth to 0.62-0.79 with omp, and the training step was
unchanged within noise (docs/cpu-thresholds.md). Elsewhere (macOS, Windows) numba's OpenMP would be a second copy of
the runtime PyTorch already loaded, which Intel's and LLVM's libomp refuse, so workqueue is
chosen there. The choice is written to the environment (``NUMBA_THREADING_LAYER_PRIORITY``, or
``NUMBA_THREADING_LAYER`` off Linux), where numba's config reloads keep it. Either variable set by
the user (or a layer already started) wins over these defaults.

Vector width. LLVM's tuning for Intel's AVX-512 CPUs (Skylake-SP to Sapphire Rapids) prefers
256-bit vectors, so numba compiled the kernels with ymm registers there, and with zmm on a Zen 4.
On AVX-512 hosts the features numba compiles for are the host's plus ``-prefer-256-bit``
(``NUMBA_CPU_FEATURES``, unless the user set it or ``NUMBA_CPU_NAME``): 512-bit vectors on every
AVX-512 CPU, a no-op where LLVM already chose them. The kernels compiled with Intel's tuning
(``NUMBA_CPU_NAME=icelake-server``) on a Zen 4, single-thread CPU time: the loss kernel 1.30x and
the gate kernels 1.18x slower with 256-bit vectors, ForgetMult (bound by memory) the same
(docs/performance.md; not measured on an Intel CPU, where 512-bit units may gain more).

Lock. workqueue aborts the whole process when two Python threads launch parallel kernels at once
(the launch releases the GIL), so every parallel launch of every kernel module holds
:data:`PARALLEL_LOCK`, whichever layer was picked (:func:`parallel_launch` takes it). One lock
for all modules, so any kernel module added later is covered too. (The fused layer's chunk
kernels run serially in the calling thread and need no lock.)

Fork. GNU OpenMP does not survive ``fork()``: numba terminates a forked child at its first
parallel launch when the parent had launched before (a DataLoader worker, say).
:func:`parallel_launch_safe` is False in any forked child, and the kernels then run in the
calling thread, whichever layer was picked.

Cache stamp. The kernels are compiled with ``cache=True``, and numba keys a function's cache on
its own source file only: a kernel that inlines ``numba_math.exp`` or ``numba_bfloat16.load`` kept
running the old code after those files changed (seen: an edit of ``numba_math`` that the loss
kernel did not pick up until ``__pycache__/*.nbi`` was deleted). For functions defined under
``qrnn_lm/ops`` the stamp is every ``.py`` file of the package (path, mtime, size), so a change to
any of them recompiles them all on next use. Installed on numba's file-backed cache locators
(:func:`_stamp_caches_by_package`, through numba's internal ``CacheImpl._locator_classes``); where a
numba version lacks them, per-file stamps remain.
"""

import contextlib
import functools
import os
import sys
import threading

OPS_DIR = os.path.dirname(os.path.abspath(__file__))


def _choose_threading_layer() -> None:
    """Prefer omp, then workqueue on Linux; workqueue elsewhere; unless the user chose.

    Written to the environment, not only to ``numba.config``: numba re-reads its whole config
    from the environment whenever the environment has changed (any ``os.environ[...] = ...`` in
    the process), which would silently undo a value set on ``numba.config`` alone.
    """
    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return
    if sys.platform.startswith("linux"):
        # numba wants a permutation of all three; its "default" layer takes the first that loads.
        os.environ["NUMBA_THREADING_LAYER_PRIORITY"] = "omp workqueue tbb"
    else:
        os.environ["NUMBA_THREADING_LAYER"] = "workqueue"


def vector_width_features(environ, host_features) -> str | None:
    """The ``NUMBA_CPU_FEATURES`` that let LLVM use 512-bit vectors, or None to leave numba's own
    choice: the host isn't AVX-512, or the user chose a target (``NUMBA_CPU_NAME`` or
    ``NUMBA_CPU_FEATURES``) or turned AVX off (``NUMBA_ENABLE_AVX=0``). ``host_features``:
    llvmlite's ``FeatureMap`` of the host."""
    if {"NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"} & set(environ) or environ.get("NUMBA_ENABLE_AVX", "1") == "0":
        return None
    if not host_features.get("avx512f"):
        return None
    return host_features.flatten() + ",-prefer-256-bit"


def _choose_vector_width() -> None:
    """Write :func:`vector_width_features` to the environment (numba re-reads its config from it)."""
    try:
        import llvmlite.binding as llvm

        host_features = llvm.get_host_cpu_features()
    except (ImportError, RuntimeError):  # no llvmlite, or LLVM cannot tell: numba's default
        return
    features = vector_width_features(os.environ, host_features)
    if features is not None:
        os.environ["NUMBA_CPU_FEATURES"] = features


@functools.lru_cache(maxsize=1)
def kernel_sources_stamp() -> tuple:
    """``(relative path, mtime, size)`` of every ``.py`` file under ``qrnn_lm/ops``, sorted: the
    cache stamp of every cached kernel there. Read once per process."""
    stamp = []
    for root, dirs, files in os.walk(OPS_DIR):
        dirs[:] = [name for name in dirs if name != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                status = os.stat(path)
                stamp.append((os.path.relpath(path, OPS_DIR), status.st_mtime, status.st_size))
    return tuple(sorted(stamp))


def _stamp_caches_by_package() -> None:
    """Put package-stamped versions of numba's file-backed cache locators first in its list, in
    their order (a user's ``NUMBA_CACHE_DIR`` still comes first); they only take functions
    defined under :data:`OPS_DIR`."""
    try:
        from numba.core import caching
        locators = caching.CacheImpl._locator_classes
        file_backed = [cls for cls in locators if issubclass(cls, caching._SourceFileBackedLocatorMixin)]
    except (ImportError, AttributeError):  # another numba's internals: per-file stamps remain
        return
    if any(getattr(cls, "_qrnn_lm_package_stamp", False) for cls in locators):
        return

    class PackageStamped:
        _qrnn_lm_package_stamp = True

        @classmethod
        def from_function(cls, py_func, py_file):
            if not os.path.abspath(py_file).startswith(OPS_DIR + os.sep):
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return kernel_sources_stamp()

    locators[:0] = [type(f"PackageStamped{cls.__name__}", (PackageStamped, cls), {}) for cls in file_backed]


try:
    import numba

    if numba.config.THREADING_LAYER == "default":  # not set in code by the user either
        _choose_threading_layer()
    if numba.config.CPU_FEATURES is None:  # not set in code by the user either
        _choose_vector_width()
    numba.config.reload_config()
    _stamp_caches_by_package()
    HAS_NUMBA = True
    IMPORT_ERROR = ""
except ImportError as error:  # numba is a hard dependency; this guard only makes the failure explicit
    HAS_NUMBA = False
    IMPORT_ERROR = str(error)

# Serialises parallel kernel launches from different Python threads.
PARALLEL_LOCK = threading.Lock()

_in_forked_child = False


def _mark_forked_child() -> None:
    global _in_forked_child
    _in_forked_child = True


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_mark_forked_child)


def parallel_launch_safe() -> bool:
    """False in a process forked from one that imported this module (a DataLoader worker, a
    ``multiprocessing`` "fork" child): numba's thread pools do not survive ``fork()``."""
    return not _in_forked_child


@contextlib.contextmanager
def parallel_launch(elements: int, min_elements: int):
    """Whether a kernel over ``elements`` runs its parallel form: yields True, holding
    :data:`PARALLEL_LOCK`, for at least ``min_elements`` (smaller inputs do not pay for a launch)
    where a parallel launch is safe (:func:`parallel_launch_safe`); else yields False, and the
    serial form runs in the calling thread.

    Use: ``with parallel_launch(x.numel(), PARALLEL_MIN_ELEMENTS) as parallel: ...``."""
    if elements >= min_elements and parallel_launch_safe():
        with PARALLEL_LOCK:
            yield True
    else:
        yield False
