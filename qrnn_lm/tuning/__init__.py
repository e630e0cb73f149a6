"""Hyperparameter search on Optuna behind ``qrnn-lm tune`` (docs/tuning.md).

:mod:`.space` reads a search space file (no Optuna needed); :mod:`.study` opens the study in its
storage; :mod:`.objective` runs one trial as an ordinary training run; :mod:`.report` tables and
plots a study. Optuna is the ``qrnn-lm[tune]`` extra, imported only here.
"""
