"""The allocator tuning applies on glibc, and steps aside when the user chose otherwise.

Run in subprocesses: it changes the whole process's allocator.
"""

import subprocess
import sys

import pytest

CALL = "from qrnn_lm.malloc_tuning import keep_freed_memory; print(keep_freed_memory())"


def run(env_changes, monkeypatch):
    for name in ("QRNN_LM_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env_changes.items():
        monkeypatch.setenv(name, value)
    result = subprocess.run([sys.executable, "-c", CALL], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_applies_on_glibc(monkeypatch):
    assert run({}, monkeypatch) == "True"


@pytest.mark.parametrize(
    "env", [{"QRNN_LM_MALLOC_TUNING": "0"}, {"MALLOC_MMAP_THRESHOLD_": "1000000"}, {"MALLOC_TRIM_THRESHOLD_": "0"}]
)
def test_the_users_choice_wins(env, monkeypatch):
    assert run(env, monkeypatch) == "False"
