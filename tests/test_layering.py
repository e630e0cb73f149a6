"""Imports run one way, bottom to top, between the subpackages of qrnn_lm:

    rules, malloc_tuning (leaves) -> config -> ops, device -> nn -> data -> models -> inference -> training -> bench, tuning -> cli

A module may import only units of a strictly lower rank (and its own unit). device.py (which
device and precision a run uses) imports only config, so every layer above may ask it. rules and
malloc_tuning import nothing of qrnn_lm, config only rules, nor does ops (the operators stand alone) or
training/distributed.py (a leaf that the CLI and tests use too). This test walks every module's
imports with ast and holds that order.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qrnn_lm"

# Rank of each unit (a subpackage or a top-level module): a module may import only units of a
# strictly lower rank.
RANKS = {
    "rules": 0, "malloc_tuning": 0,
    "config": 0.5,
    "ops": 1, "device": 1,
    "nn": 2,
    "data": 2,
    "models": 3,
    "inference": 4,
    "training": 5,
    "bench": 6,
    "tuning": 6,
    "cli": 7,
    "__main__": 8,
}
# Modules that import nothing of qrnn_lm (outside their own unit, for ops).
STANDALONE = {"rules.py", "malloc_tuning.py", "training/distributed.py"}


def _unit(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def _imported(path: Path) -> set[tuple[str, ...]]:
    """The qrnn_lm modules ``path`` imports, as dotted parts below qrnn_lm."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package_parts = path.relative_to(PACKAGE).parent.parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("qrnn_lm."):
                    found.add(tuple(alias.name.split(".")[1:]))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and (node.module == "qrnn_lm" or node.module.startswith("qrnn_lm.")):
                    base = tuple(node.module.split(".")[1:])
                else:
                    continue
            else:
                if node.level - 1 > len(package_parts):
                    raise AssertionError(f"{path}: relative import above the package")
                base = package_parts[: len(package_parts) - (node.level - 1)]
                base += tuple(node.module.split(".")) if node.module else ()
            if base:
                found.add(base)
            else:  # ``from qrnn_lm import x`` / ``from .. import x`` at the root: x is the unit
                found.update((alias.name,) for alias in node.names)
    return found


def test_every_unit_has_a_rank():
    units = {_unit(path) for path in PACKAGE.rglob("*.py") if path != PACKAGE / "__init__.py"}
    assert units <= set(RANKS), f"add {sorted(units - set(RANKS))} to RANKS in this test"


def test_imports_follow_the_layering():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue  # the public API re-exports library modules
        relative = path.relative_to(PACKAGE).as_posix()
        unit = _unit(path)
        for parts in _imported(path):
            target = parts[0]
            if target == unit and relative not in STANDALONE:
                continue
            if relative in STANDALONE or unit == "ops" or RANKS.get(target, 99) >= RANKS[unit]:
                violations.append(f"{relative} imports {'.'.join(parts)}")
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_package_init_imports_no_cli_or_tensorboard():
    source = (PACKAGE / "__init__.py").read_text(encoding="utf-8")
    for forbidden in ("cli", "typer", "tensorboard", "training"):
        assert f"import {forbidden}" not in source and f".{forbidden} import" not in source
