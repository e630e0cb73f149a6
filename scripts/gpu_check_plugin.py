"""pytest plugin of ``gpu_check.py``'s cuda-tests step: which tests need CUDA and how they ended.

A test needs CUDA when one of its ``skipif`` markers gives a reason saying so ("needs a CUDA
device", "needs 2 CUDA devices", "needs a CUDA GPU and CuPy"): the suite's convention. The marker
is there on a CUDA machine too (its condition is then false), so the set is known before running.
At the end of the session ``{nodeid: outcome}`` ("passed", "failed", "skipped: <reason>", or
"collected" when nothing ran) goes to the JSON file named by ``GPU_CHECK_TESTS_JSON``.
"""

import json
import os
import re
from pathlib import Path

NEEDS_CUDA = re.compile(r"\bneeds\b.*\b(CUDA|GPU)", re.IGNORECASE)
_outcomes: dict[str, str] = {}


def pytest_collection_modifyitems(items):
    for item in items:
        if any(NEEDS_CUDA.search(str(mark.kwargs.get("reason", ""))) for mark in item.iter_markers("skipif")):
            _outcomes[item.nodeid] = "collected"


def pytest_runtest_logreport(report):
    if report.nodeid not in _outcomes or (report.when != "call" and report.outcome == "passed"):
        return  # a setup that passed says nothing yet; a skip or an error in setup does
    outcome = report.outcome
    if outcome == "skipped" and isinstance(report.longrepr, tuple):
        outcome = f"skipped: {report.longrepr[2].removeprefix('Skipped: ')}"
    if _outcomes[report.nodeid] != "failed":  # a teardown cannot turn a failure into a pass
        _outcomes[report.nodeid] = outcome


def pytest_sessionfinish(session):
    Path(os.environ["GPU_CHECK_TESTS_JSON"]).write_text(json.dumps(_outcomes, indent=1))
