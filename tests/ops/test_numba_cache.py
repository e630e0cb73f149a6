"""The cached numba kernels recompile when any source file of qrnn_lm/ops changes, not only their
own (qrnn_lm/ops/numba_setup.py, "Cache stamp"): numba keys a cache on the function's own file,
and a kernel that inlines numba_math.exp kept running the old exp after an edit of numba_math."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import qrnn_lm.ops

OPS = Path(qrnn_lm.ops.__file__).parent

# The loss of fixed logits through the cross-entropy kernel, which inlines numba_math.exp.
SCRIPT = """
import torch
from qrnn_lm.ops.softmax_cross_entropy import loss_and_gradients
logits = torch.linspace(-3, 3, 200).reshape(4, 50)
print(repr(loss_and_gradients(logits, torch.zeros(4, dtype=torch.long))[0].item()))
"""


def loss_in_subprocess(root: Path) -> float:
    env = {key: value for key, value in os.environ.items() if not key.startswith("NUMBA_CACHE")}
    env["PYTHONPATH"] = str(root)
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True,
                            text=True, timeout=300, check=True)
    return float(result.stdout.strip())


def test_an_edit_of_an_inlined_helper_recompiles_the_kernels_that_use_it(tmp_path):
    """A copy of qrnn_lm.ops (nothing else of qrnn_lm is imported): run once (compiled and cached
    in the copy's __pycache__), double numba_math.exp's result, run again: the loss must move by
    log 2 per row. With numba's per-file stamps the second run loaded the stale kernel."""
    package = tmp_path / "qrnn_lm"
    shutil.copytree(OPS, package / "ops", ignore=shutil.ignore_patterns("__pycache__"))
    (package / "__init__.py").write_text("")
    before = loss_in_subprocess(tmp_path)
    assert any((package / "ops" / "__pycache__").glob("softmax_cross_entropy.*.nbi"))  # it was cached

    math_file = package / "ops" / "numba_math.py"
    source = math_file.read_text()
    assert source.count("    return result\n") == 1
    math_file.write_text(source.replace("    return result\n", "    return result * np.float32(2)\n"))
    after = loss_in_subprocess(tmp_path)
    assert abs((after - before) - 4 * 0.6931471805599453) < 1e-3
