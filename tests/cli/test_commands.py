"""The command line without training: help, option handling, config resolution, one-line errors.

Training itself is replaced by a recording fake here (the real run is in tests/test_end_to_end.py).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from qrnn_lm.cli import commands as cli
from qrnn_lm.cli.commands import Dataset, app
from qrnn_lm.config import Config, config_to_dict, load_config

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def assert_one_line_error(result, *fragments):
    """Exit code 1, a single ``error: ...`` line on stderr, nothing on stdout, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_python_m_help_lists_the_commands():
    result = subprocess.run(
        [sys.executable, "-m", "qrnn_lm", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: qrnn-lm" in result.stdout
    for command in ("train", "eval", "generate"):
        assert command in result.stdout


def test_importing_the_cli_does_not_import_torch():
    """`qrnn-lm --help` must be instant: torch loads only inside a command."""
    code = "import sys, qrnn_lm.cli; print(sorted(m for m in ('torch', 'numpy', 'numba') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"heavy modules imported by qrnn_lm.cli: {result.stdout.strip()}"


def test_no_arguments_shows_help():
    result = runner.invoke(app, [])
    assert "train" in result.output and "generate" in result.output


def test_dataset_choices_match_the_data_registry():
    from qrnn_lm.data import DATASETS

    assert {item.value for item in Dataset} == set(DATASETS)


# --- train: option handling, with a fake engine -------------------------------------------------


@pytest.fixture
def fake_train(monkeypatch):
    """Replace qrnn_lm.training.train with a function that records its call."""
    calls = []

    def train(config, out_dir, *, device="auto", resume=None, data_dir=None, progress=True, checkpoint=None):
        calls.append(dict(config=config, out_dir=out_dir, device=device, resume=resume, data_dir=data_dir, progress=progress))
        return {"best_val_ppl": 123.456, "test_ppl": 120.0}

    fake_engine(monkeypatch, train)
    return calls


def fake_engine(monkeypatch, train):
    """``qrnn_lm.training.train`` replaced by ``train`` (the CLI looks it up at call time); the
    rest of the package, e.g. ``training.distributed``, stays importable."""
    import qrnn_lm.training as training

    monkeypatch.setattr(training, "train", train)


def test_train_maps_every_option(fake_train, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "my-corpus"
    corpus.mkdir()
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "recipe"\n[train]\nlr = 5.0\nseed = 3\n')
    result = runner.invoke(app, [
        "train", "--data", str(corpus), "--config", str(recipe), "--set", "train.lr=7", "-s", "model.zoneout=0.1",
        "--max-steps", "11", "--epochs", "2", "--device", "cpu", "--data-dir", "dd", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    (call,) = fake_train
    config = call["config"]
    assert (config.name, config.data.dataset) == ("recipe", str(corpus))
    assert (config.train.lr, config.train.seed, config.model.zoneout) == (7.0, 3, 0.1)
    assert (config.train.max_steps, config.train.epochs) == (11, 2)
    assert call["out_dir"] == Path("runs") / "recipe"
    assert (call["device"], call["resume"], call["data_dir"], call["progress"]) == ("cpu", None, Path("dd"), False)
    assert "123.46" in result.stdout


def test_nproc_launches_the_same_command_without_nproc_on_every_rank(fake_train, monkeypatch):
    import qrnn_lm.cli.train as cli_train

    launches = []
    monkeypatch.setattr(cli_train, "launch_local", lambda nproc, argv: launches.append((nproc, argv)) or 0)
    argv = ["train", "--data", "ptb", "--nproc", "2", "--max-steps", "3", "--nproc=2"]
    monkeypatch.setattr(sys, "argv", ["qrnn-lm", *argv])
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert launches == [(2, ["train", "--data", "ptb", "--max-steps", "3"])]
    assert fake_train == []  # the ranks train, not the launcher


def test_only_rank_zero_prints_the_summary(fake_train, tmp_path, monkeypatch):
    corpus = tmp_path / "c"
    corpus.mkdir()
    args = ["train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--no-progress"]
    monkeypatch.setenv("RANK", "1")
    assert runner.invoke(app, args).stdout == ""
    monkeypatch.setenv("RANK", "0")
    assert "123.46" in runner.invoke(app, args).stdout


def test_bench_is_a_sub_command():
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    for command in ("layer", "lm", "forget-mult"):
        assert command in result.stdout


def test_train_named_dataset_uses_its_recipe(fake_train, tmp_path):
    recipe = REPO / "configs" / "ptb.toml"
    if not recipe.is_file():
        pytest.skip("configs/ptb.toml not written yet")
    result = runner.invoke(app, ["train", "--data", "ptb", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert fake_train[0]["config"] == load_config(recipe, ["data.dataset=ptb"])
    assert fake_train[0]["out_dir"] == tmp_path / "run"


def test_train_folder_without_recipe_uses_defaults_named_after_the_folder(fake_train, tmp_path, monkeypatch):
    corpus = tmp_path / "novels"
    corpus.mkdir()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--data", "novels", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    config = fake_train[0]["config"]
    assert config.name == "novels" and config.data.dataset == str(corpus)  # made absolute
    assert config.model == Config().model


def test_resume_continues_the_checkpoint_config_in_its_folder(fake_train, tmp_path):
    from qrnn_lm.models.checkpoint_file import save_checkpoint

    run = tmp_path / "run"
    stored = load_config(None, ["name=\"old\"", "train.lr=3", "train.max_steps=5"])
    save_checkpoint(run / "last.pt", {"config": config_to_dict(stored), "vocab": ["<eos>"], "model": {}})
    result = runner.invoke(app, ["train", "--resume", str(run), "--max-steps", "9"])
    assert result.exit_code == 0, result.output
    (call,) = fake_train
    assert call["resume"] == run / "last.pt" and call["out_dir"] == run
    assert call["config"].train.lr == 3.0 and call["config"].train.max_steps == 9


def test_ctrl_c_during_training_prints_the_resume_command(monkeypatch, tmp_path):
    def interrupted_train(config, out_dir, **_):
        (out_dir / "last.pt").parent.mkdir(parents=True)
        (out_dir / "last.pt").write_bytes(b"saved by the trainer")
        raise KeyboardInterrupt

    fake_engine(monkeypatch, interrupted_train)
    corpus = tmp_path / "c"
    corpus.mkdir()
    out = tmp_path / "my run"
    args = ["train", "--data", str(corpus), "--out", str(out), "--device", "cpu"]
    result = runner.invoke(app, args, env={"QRNN_LM_DATA": None})
    assert result.exit_code == cli.EXIT_INTERRUPTED == 130
    assert f"resumable checkpoint is {out / 'last.pt'}" in result.stderr
    assert f"resume with: qrnn-lm train --resume '{out}' --device cpu\n" in result.stderr
    assert "Traceback" not in result.output
    # Data found through $QRNN_LM_DATA: the resume command carries it.
    shutil.rmtree(out)
    result = runner.invoke(app, ["train", "--data", str(corpus), "--out", str(out)], env={"QRNN_LM_DATA": "../my data"})
    assert f"resume with: QRNN_LM_DATA='../my data' qrnn-lm train --resume '{out}'\n" in result.stderr


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_saved(monkeypatch, tmp_path):
    fake_engine(monkeypatch, lambda *args, **kwargs: (_ for _ in ()).throw(KeyboardInterrupt()))
    corpus = tmp_path / "c"
    corpus.mkdir()
    result = runner.invoke(app, ["train", "--data", str(corpus), "--out", str(tmp_path / "run")])
    assert result.exit_code == 130 and "nothing saved" in result.stderr


# --- bad input: exit code 1, one line, no traceback ----------------------------------------------


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["train"], ["--data"]),
        (["train", "--data", "ptbb"], ["unknown dataset or missing folder 'ptbb'", "wikitext-2"]),
        (["train", "--data", "ptb", "--config", "missing.toml"], ["missing.toml does not exist"]),
        (["train", "--data", "ptb", "--set", "train.lrr=1"], ["unknown config key 'train.lrr'"]),
        (["train", "--data", "ptb", "--set", "train.lr=fast"], ["'train.lr' must be float"]),
        (["train", "--data", "ptb", "--set", "nodot"], ["section.key=value"]),
        (["train", "--data", "ptb", "--max-steps", "-1"], ["train.max_steps must be >= 0"]),
        (["train", "--data", "ptb", "--epochs", "0"], ["train.epochs must be >= 1"]),
        (["train", "--resume", "nowhere"], ["does not exist"]),
        (["eval", "x.pt", "--batch-size", "0"], ["--batch-size must be >= 1, got 0"]),
        (["eval", "x.pt", "--data", "nosuch"], ["unknown dataset"]),
        (["eval", "missing.pt"], ["missing.pt does not exist"]),
        (["generate", "missing.pt"], ["missing.pt does not exist"]),
        (["generate", "x.pt", "--tokens", "0"], ["tokens must be >= 1, got 0"]),
        (["generate", "x.pt", "--temperature", "0"], ["--temperature must be > 0, got 0.0"]),
        (["generate", "x.pt", "--temperature", "-2"], ["got -2.0"]),
        (["generate", "x.pt", "--top-k", "-1"], ["top-k must be >= 0", "got -1"]),
        (["generate", "x.pt", "--top-p", "0"], ["top-p must be in (0, 1]"]),
        (["generate", "x.pt", "--top-p", "1.01"], ["got 1.01"]),
        (["generate", "x.pt", "--temperature", "nan"], ["--temperature must be > 0, got nan"]),
        (["generate", "x.pt", "--seed", "-1"], ["--seed must be >= 0, got -1"]),
        (["eval", "x.pt", "--cache-lambda", "2"], ["--cache-lambda must be in [0, 1], got 2.0"]),
        (["eval", "x.pt", "--cache-theta", "inf"], ["--cache-theta must be >= 0, got inf"]),
        (["train", "--data", "ptb", "--nproc", "0"], ["--nproc must be >= 1, got 0"]),
        (["train", "--data", "ptb", "--set", "train.weight_decay=-1"], ["train.weight_decay must be >= 0, got -1.0"]),
        (["train", "--data", "ptb", "--set", "train.clip=-1"], ["train.clip must be >= 0"]),
    ],
)
def test_bad_input_is_one_line_and_exit_code_1(args, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(runner.invoke(app, args), *fragments)


class Foreign:
    """Pickled as a class instance: loading it would need to run code."""


@pytest.mark.parametrize(
    "content, fragment",
    [
        (lambda path: path.write_bytes(b""), "is empty"),
        (lambda path: path.write_text("hello"), "not a torch file"),
        (lambda path: torch.save({"weights": torch.zeros(2)}, path), "not a qrnn-lm checkpoint"),
        (lambda path: torch.save(Foreign(), path), "would run code"),
    ],
    ids=["empty", "text", "foreign", "code"],
)
@pytest.mark.parametrize("command", ["eval", "generate", "resume"])
def test_bad_checkpoints_are_one_line_errors(tmp_path, content, fragment, command):
    path = tmp_path / "bad.pt"
    content(path)
    args = ["train", "--resume", str(path)] if command == "resume" else [command, str(path)]
    assert_one_line_error(runner.invoke(app, args), fragment)


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    from qrnn_lm.models.checkpoint_file import save_checkpoint

    path = tmp_path / "cut.pt"
    save_checkpoint(path, {"config": config_to_dict(Config()), "vocab": ["a"], "model": {"w": torch.randn(1000)}})
    path.write_bytes(path.read_bytes()[:-2000])
    assert_one_line_error(runner.invoke(app, ["generate", str(path)]), "truncated")


def test_a_torchrun_rank_ends_through_exit_rank_with_the_commands_status(tmp_path):
    # exit_rank ends with os._exit, which skips atexit handlers: one tells the two paths apart.
    import os
    import subprocess

    program = ("import atexit, sys; atexit.register(lambda: print('atexit ran')); "
               f"sys.argv = ['qrnn-lm', 'eval', {str(tmp_path / 'missing.pt')!r}]; "
               "from qrnn_lm.cli import main; main()")
    for rank_env, atexit_runs in (({}, True), ({"RANK": "0", "WORLD_SIZE": "2"}, False)):
        env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE")}
        result = subprocess.run([sys.executable, "-c", program], env={**env, **rank_env}, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 1 and result.stderr.startswith("error: "), result.stderr
        assert ("atexit ran" in result.stdout) == atexit_runs, rank_env
