"""The ``qrnn-lm`` command line: the typer app with ``train`` and ``finetune`` (``commands.py``), the
train command's run, report and ``--nproc`` launcher (``train.py``), which config a run uses
(``recipes.py``), the options the commands share (``options.py``), the ``eval``, ``generate``,
``export``, ``plot`` and ``tune`` commands (one module each) and the ``bench`` sub-app (``bench.py``).
torch loads inside the commands, so ``qrnn-lm --help`` is instant."""

from .commands import app, main

__all__ = ["app", "main"]
