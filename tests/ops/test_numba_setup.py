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
