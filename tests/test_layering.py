"""Imports run one way: ops -> qrnn -> model -> {checkpoint, evaluate, generate} -> train -> cli.

config, metrics and distributed are leaves (they import nothing of qrnn_lm); ops imports nothing
else of qrnn_lm. This test walks every module's imports with ast and holds that order.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qrnn_lm"

# Rank of each top-level module: a module may import only modules of a strictly lower rank
# (leaves have rank 0 and may import nothing of qrnn_lm).
RANKS = {
    "config": 0, "metrics": 0, "distributed": 0, "malloc_tuning": 0,
    "ops": 1,
    "qrnn_window": 1.5, "qrnn_gates": 1.5, "qrnn_fused": 1.5,  # parts of the QRNN layer: between ops and qrnn
    "qrnn": 2,
    "data": 1, "run_config": 1,
    "model": 3,
    "checkpoint": 4, "generate": 4,
    "nt_asgd": 4, "train_state": 4, "train_step": 4,  # leaves of the training engine
    "evaluate": 5,  # evaluate_checkpoint reads checkpoints
    "train_setup": 5,
    "bench": 5,
    "train": 6,
    "cli_train": 6.5,  # the train command's run and report
    "cli": 7, "__main__": 8,
}
LEAVES = {"config", "metrics", "distributed", "malloc_tuning"}


def _top_module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    depth_in_package = len(path.relative_to(PACKAGE).parts) - 1
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("qrnn_lm."):
                    found.add(alias.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("qrnn_lm."):
                    found.add(node.module.split(".")[1])
                elif node.module == "qrnn_lm":
                    found.update(alias.name for alias in node.names)
            elif node.level > depth_in_package:
                # A relative import that climbs to the package root: ``from ..x import y``.
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
    return found


def test_imports_follow_the_layering():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue  # the public API re-exports library modules
        module = _top_module(path)
        rank = RANKS.get(module)
        assert rank is not None, f"{path}: add module {module!r} to RANKS in this test"
        for imported in _imported_top_modules(path) - {module}:
            if module in LEAVES or module == "ops" or imported not in RANKS or RANKS[imported] >= rank:
                violations.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_package_init_imports_no_cli_or_tensorboard():
    source = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    for forbidden in ("cli", "typer", "tensorboard", "metrics"):
        assert f"import {forbidden}" not in source and f".{forbidden} import" not in source
