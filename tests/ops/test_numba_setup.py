"""numba_setup.parallel_launch: the one place every kernel module decides between its parallel
form (holding the launch lock) and its serial form (small inputs, forked children)."""

import pytest

from qrnn_lm.ops import numba_setup
from qrnn_lm.ops.numba_setup import PARALLEL_LOCK, parallel_launch


@pytest.mark.parametrize("elements, parallel", [(99, False), (100, True), (10**9, True)])
def test_parallel_from_the_threshold_on_holding_the_lock(elements, parallel):
    with parallel_launch(elements, 100) as chosen:
        assert chosen is parallel
        assert PARALLEL_LOCK.locked() is parallel
    assert not PARALLEL_LOCK.locked()


def test_serial_in_a_forked_child_whatever_the_size(monkeypatch):
    monkeypatch.setattr(numba_setup, "parallel_launch_safe", lambda: False)
    with parallel_launch(10**9, 100) as chosen:
        assert chosen is False and not PARALLEL_LOCK.locked()


def test_the_lock_is_released_when_the_kernel_raises():
    with pytest.raises(ValueError), parallel_launch(100, 1):
        raise ValueError("kernel failed")
    assert not PARALLEL_LOCK.locked()


class _Features(dict):
    """llvmlite's FeatureMap: a dict of feature -> bool with ``flatten()``."""

    def flatten(self):
        return ",".join(("+" if on else "-") + name for name, on in self.items())


@pytest.mark.parametrize("environ, host, want", [
    ({}, {"avx2": True, "avx512f": True}, "+avx2,+avx512f,-prefer-256-bit"),
    ({}, {"avx2": True, "avx512f": False}, None),  # no AVX-512: LLVM's choice stays
    ({"NUMBA_CPU_NAME": "skylake"}, {"avx512f": True}, None),  # the user's target wins
    ({"NUMBA_CPU_FEATURES": "+sse2"}, {"avx512f": True}, None),
    ({"NUMBA_ENABLE_AVX": "0"}, {"avx512f": True}, None),
])
def test_avx512_hosts_get_512_bit_vectors_unless_the_user_chose(environ, host, want):
    assert numba_setup.vector_width_features(environ, _Features(host)) == want


_ASM_PROBE = """
import re, sys
import numpy as np
from qrnn_lm.ops import numba_setup  # sets NUMBA_CPU_FEATURES (unless the environment has it)
from qrnn_lm.ops.numba_math import exp
from numba import njit

@njit(error_model="numpy")
def sigmoid(a, out):
    for j in range(a.shape[0]):
        out[j] = np.float32(1) / (np.float32(1) + exp(a[j]))

a = np.ones(64, np.float32)
sigmoid(a, np.empty_like(a))
asm = "".join(sigmoid.inspect_asm().values())
print(len(re.findall("%zmm", asm)), len(re.findall("%ymm", asm)))
"""


def _vector_registers(environ):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")} | environ
    result = subprocess.run([sys.executable, "-c", _ASM_PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    zmm, ymm = map(int, result.stdout.split())
    return zmm, ymm


def test_intel_tuning_compiles_256_bit_vectors_and_the_features_make_them_512():
    """What the features are for, on an Intel target (LLVM's icelake-server tuning prefers 256-bit
    vectors): ymm only as numba would compile for it, zmm with vector_width_features' features."""
    llvm = pytest.importorskip("llvmlite.binding")
    host = llvm.get_host_cpu_features()
    if not host.get("avx512f"):
        pytest.skip("needs an AVX-512 CPU to run code compiled for icelake-server")
    zmm, ymm = _vector_registers({"NUMBA_CPU_NAME": "icelake-server", "NUMBA_CPU_FEATURES": host.flatten()})
    assert zmm == 0 and ymm > 0
    features = numba_setup.vector_width_features({}, host)
    zmm, _ = _vector_registers({"NUMBA_CPU_NAME": "icelake-server", "NUMBA_CPU_FEATURES": features})
    assert zmm > 0


def test_importing_the_kernels_set_the_features_on_an_avx512_host():
    import os

    import numba

    llvm = pytest.importorskip("llvmlite.binding")
    host = llvm.get_host_cpu_features()
    if not host.get("avx512f"):
        pytest.skip("needs an AVX-512 CPU")
    # What this process's kernels compiled for (unless the environment that ran the tests chose).
    assert numba.config.CPU_FEATURES == os.environ["NUMBA_CPU_FEATURES"] == host.flatten() + ",-prefer-256-bit"
