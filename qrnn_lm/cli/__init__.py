"""The ``qrnn-lm`` command line: the typer app and its commands (``commands.py``), the train
command's run and report (``train.py``), which config a run uses (``recipes.py``), the ``export``,
``plot`` and ``tune`` commands (``export.py``, ``plot.py``, ``tune.py``) and the ``bench`` sub-app (``bench.py``).
torch loads inside the commands, so ``qrnn-lm --help`` is instant."""

from .commands import app, main

__all__ = ["app", "main"]
