"""``[tune] warmup_validations = N``: a trial is never pruned at its first N validations (the
trials report them numbered 1, 2, ...), and may be from the next one."""

import pytest
from tune_spaces import write_space

from qrnn_lm.tuning.space import read_space
from qrnn_lm.tuning.study import open_study

SPACE = """[space]
train.lr = {{ low = 1e-5, high = 3e-2, log = true }}

[tune]
startup_trials = 1
warmup_validations = {warmup}
"""


def _prunes_at(tmp_path, corpus, warmup: int, report: int) -> bool:
    """Whether a trial far worse than one finished trial is pruned at its report number ``report``."""
    space = read_space(write_space(tmp_path / f"space{warmup}", corpus, SPACE.format(warmup=warmup)))
    study = open_study(space, "sqlite:///" + str(tmp_path / f"study{warmup}-{report}.db"), "s")
    good = study.ask()
    for number in range(1, report + 1):
        good.report(100.0, number)
    study.tell(good, 100.0)
    bad = study.ask()
    for number in range(1, report + 1):
        bad.report(1000.0, number)
    return bad.should_prune()


@pytest.mark.parametrize("warmup", [0, 1, 2])
def test_a_trial_is_pruned_only_after_its_warmup_validations(tmp_path, corpus, warmup):
    for report in range(1, 4):
        assert _prunes_at(tmp_path, corpus, warmup, report) == (report > warmup), (warmup, report)
