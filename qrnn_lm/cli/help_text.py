"""Commands' docstrings as their ``--help`` shows them.

typer renders a command's help with rich, which (1) reads ``[...]`` as markup and drops it: "tokens
[steps, batch]" showed as "tokens ,", and "pip install 'qrnn-lm[plot]'" as "pip install 'qrnn-lm'";
and (2) keeps the docstring's single line breaks after the first paragraph, so on a terminal
narrower than the source lines every paragraph came out ragged. :func:`readable_help` hands typer
each docstring with its brackets escaped and its paragraphs on one line each (the terminal wraps
them), example command lines (starting with ``qrnn-lm``) kept on lines of their own.
"""

from __future__ import annotations

import inspect

import typer

__all__ = ["help_text", "readable_help", "PROGRAM"]

PROGRAM = "qrnn-lm"


def help_text(docstring: str) -> str:
    """``docstring`` for typer's rich help: paragraphs unwrapped, example lines kept, ``[`` escaped."""
    paragraphs = []
    for paragraph in inspect.cleandoc(docstring).split("\n\n"):
        lines: list[str] = []
        for line in paragraph.splitlines():
            line = line.strip()
            if lines and not line.startswith(PROGRAM + " "):
                lines[-1] += " " + line
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs).replace("[", "\\[")


def readable_help(app: typer.Typer) -> None:
    """Give every command registered on ``app`` its docstring through :func:`help_text` (a
    command given ``help=`` keeps it)."""
    for info in app.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = help_text(info.callback.__doc__)
