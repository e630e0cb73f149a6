"""One meaning per option name across all commands (the bench sub-commands included).

Read from the commands themselves (typer's parameters): an option name has one value type (and,
for a choice, the same choices), a short flag stands for one long name, and the help says the same
thing wherever the option appears: the same words up to its first "(", ":" or ";" (what follows
may add a command's own default or detail). Before, finetune lacked --data while train and eval
had it; ``test_data_options`` keeps that from coming back.
"""

from __future__ import annotations

import re
from collections import defaultdict

import typer

from qrnn_lm.cli.commands import app


def _options() -> list[tuple[str, object]]:
    """(command path, option parameter) of every option of every command."""
    found = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())
        found.extend((path, param) for param in getattr(command, "params", []) if param.param_type_name == "option")

    walk(typer.main.get_command(app), "")
    return found


def _type(param) -> str:
    choices = getattr(getattr(param, "type", None), "choices", None)
    if hasattr(param, "bare_type"):  # typer >= 0.20's own parameter classes
        annotation = param.type_descriptor.annotation
        choices = [item.value for item in annotation] if isinstance(annotation, type) and hasattr(annotation, "__members__") else None
        return f"{param.bare_type()} {choices or ''}".strip()
    return f"{param.type.name} {list(choices) if choices else ''}".strip()


def _meaning(help_text: str) -> str:
    return re.split(r"[(:;]", help_text or "", maxsplit=1)[0].strip().rstrip(".").lower()


def test_each_option_name_has_one_type_and_one_meaning():
    kinds, meanings, longs = defaultdict(set), defaultdict(set), defaultdict(set)
    for path, param in _options():
        long = max(param.opts, key=len)
        kinds[long].add(_type(param))
        meanings[long].add(_meaning(param.help))
        for flag in param.opts + param.secondary_opts:
            if not flag.startswith("--"):
                longs[flag].add(long)
    assert len(kinds) > 30
    assert {name: k for name, k in kinds.items() if len(k) > 1} == {}
    assert {name: m for name, m in meanings.items() if len(m) > 1} == {}
    assert {flag: names for flag, names in longs.items() if len(names) > 1} == {}


def test_data_options():
    """Every command that reads a corpus takes --data and --data-dir."""
    by_command = defaultdict(set)
    for path, param in _options():
        by_command[path].update(param.opts)
    readers = {path for path, opts in by_command.items() if "--data-dir" in opts}
    assert readers == {"train", "finetune", "eval", "tune"}
    assert all("--data" in by_command[path] for path in readers)
