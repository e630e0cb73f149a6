"""Every command's --help shows its docstring and its options' help whole: brackets included
(rich reads "[plot]" as markup and dropped it), paragraphs rewrapped by the terminal."""

import inspect
import re

import pytest
import typer.main
import typer.rich_utils
from typer.testing import CliRunner

from qrnn_lm.cli.commands import app
from qrnn_lm.cli.help_text import help_text

runner = CliRunner()


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = [(path, command) for path, command in _commands(typer.main.get_command(app)) if path]


def _words(text: str) -> str:
    return " ".join(text.split())


def _doc(command) -> str:
    """The text as written: a command's docstring, or a group's help= (no docstring)."""
    callback = command.callback
    return inspect.cleandoc(callback.__doc__ if callback is not None and callback.__doc__ else command.help)


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_help_shows_the_docstring_and_every_option_help_whole(monkeypatch, path, command):
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 4000)  # one line per paragraph and option
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    shown = _words(result.output)
    for paragraph in _doc(command).split("\n\n"):
        assert _words(paragraph) in shown
    for param in command.params:
        if getattr(param, "help", None):
            assert _words(param.help) in shown


def test_paragraphs_become_lines_and_example_commands_keep_their_own():
    doc = """First line
    goes on.

    Needs x (pip install 'qrnn-lm[plot]'), tokens [T, B]. Examples:
    qrnn-lm tune a.toml
    qrnn-lm tune --report runs/x
    """
    assert help_text(doc) == ("First line goes on.\n\n"
                              "Needs x (pip install 'qrnn-lm\\[plot]'), tokens \\[T, B]. Examples:\n"
                              "qrnn-lm tune a.toml\nqrnn-lm tune --report runs/x")


def test_the_brackets_that_rich_would_drop_are_in_the_docstrings():
    """The case the first test guards: these docstrings do hold markup-like brackets."""
    docs = " ".join(_doc(command) for _, command in COMMANDS)
    assert re.search(r"\[[a-z]", docs)
