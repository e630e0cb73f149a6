"""Property tests (Hypothesis) of "one line, never a traceback" for every value a user can set.

For every config key, values drawn from its declared rule (``qrnn_lm.config``'s ``setting(...)``)
and type go through ``qrnn-lm train --set key=value`` (training replaced by a recorder, so the run
stops where training would start): out-of-range and wrong-type values end with exit 1 and one
``error:`` line naming the key; in-range values are accepted and reach the run's config unchanged.
Every command option with a range (``qrnn_lm.rules.OPTIONS``) is driven out of it through the
commands that take it. The number of inputs tried is printed at the end (``pytest -s``).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from qrnn_lm.cli.commands import app
from qrnn_lm.config import Config, check_options, toml_string
from qrnn_lm.rules import ANY, OPTIONS, Ints, OneOf, Range, Text, ZeroOrAtLeast

runner = CliRunner()
COMMAND = typer.main.get_command(app)  # built once: typer rebuilds it on every CliRunner.invoke (~50 ms)
EXAMPLES = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TRIED = {"config in range": 0, "config out of range": 0, "config wrong type": 0, "option out of range": 0}
INT64 = (-(2**63), 2**63 - 1)  # TOML's integers


def _keys() -> list[tuple[str, str, object]]:
    """(dotted key, declared type, rule) of every config key."""
    keys = []
    for top in dataclasses.fields(Config):
        if top.name == "name":
            keys.append(("name", "str", top.metadata["rule"]))
            continue
        for item in dataclasses.fields(top.default_factory):
            keys.append((f"{top.name}.{item.name}", item.type, item.metadata["rule"]))
    return keys


KEYS = _keys()
IDS = [key for key, _, _ in KEYS]


def test_every_config_key_declares_its_rule():
    sections = [top.default_factory for top in dataclasses.fields(Config) if top.name != "name"]
    fields = [item for cls in sections for item in dataclasses.fields(cls)] + [dataclasses.fields(Config)[0]]
    assert all("rule" in item.metadata for item in fields)
    assert len(KEYS) == len(fields) >= 40


def toml_literal(value) -> str:
    """``value`` as ``--set`` reads it (a TOML literal; nan and inf are TOML floats too)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    return repr(value)


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # any text a TOML string can hold


def in_range(declared: str, rule) -> st.SearchStrategy:
    if isinstance(rule, Range) and declared == "int":
        low = INT64[0] if rule.low is None else int(rule.low) + rule.low_open
        return st.integers(low, INT64[1] if rule.high is None else int(rule.high) - rule.high_open)
    if isinstance(rule, Range):
        return st.floats(rule.low, rule.high, exclude_min=rule.low_open, exclude_max=rule.high_open,
                         allow_nan=False, allow_infinity=False)
    if isinstance(rule, ZeroOrAtLeast):
        return st.just(0) | st.integers(rule.low, INT64[1])
    if isinstance(rule, OneOf):
        return st.sampled_from(rule.choices)
    if isinstance(rule, Ints):
        items = st.integers(rule.minimum, INT64[1])
        if rule.increasing:
            return st.sets(items, min_size=int(rule.nonempty), max_size=5).map(sorted)
        return st.lists(items, min_size=int(rule.nonempty), max_size=5)
    if isinstance(rule, Text) and rule.name:
        return TEXT.filter(lambda text: not Text(name=True).problem(text))
    if isinstance(rule, Text):
        return TEXT.filter(str.strip)
    assert rule is ANY and declared == "bool", (declared, rule)
    return st.booleans()


def out_of_range(declared: str, rule) -> st.SearchStrategy | None:
    if isinstance(rule, Range) and declared == "int":
        below = st.integers(INT64[0], int(rule.low) - (not rule.low_open))
        return below if rule.high is None else below | st.integers(int(rule.high) + (not rule.high_open), INT64[1])
    if isinstance(rule, Range):
        bad = st.sampled_from([math.nan, math.inf, -math.inf])
        bad |= st.floats(max_value=rule.low, exclude_max=not rule.low_open, allow_nan=False, allow_infinity=False)
        if rule.high is not None:
            bad |= st.floats(min_value=rule.high, exclude_min=not rule.high_open, allow_nan=False, allow_infinity=False)
        return bad
    if isinstance(rule, ZeroOrAtLeast):
        return st.integers(INT64[0], -1) | st.integers(1, rule.low - 1)
    if isinstance(rule, OneOf):
        return TEXT.filter(lambda text: text not in rule.choices)
    if isinstance(rule, Ints):
        low_item = st.lists(st.integers(rule.minimum, INT64[1]), max_size=3).flatmap(
            lambda items: st.integers(INT64[0], rule.minimum - 1).map(lambda bad: [*items, bad]))
        bad = low_item | (st.just([]) if rule.nonempty else st.nothing())
        if rule.increasing:
            bad |= st.integers(rule.minimum, INT64[1]).map(lambda item: [item, item])
        return bad
    if isinstance(rule, Text) and rule.name:
        return st.sampled_from(["", " ", ".", "..", "a/b", "a\\b", "a\nb", "\t"]) | TEXT.map(lambda text: text + "/")
    if isinstance(rule, Text):
        return st.sampled_from(["", " ", "\t \n"])
    return None  # a bool has no range: any bool is valid


def wrong_type(declared: str) -> st.SearchStrategy:
    floats = st.floats()  # nan and inf included
    ints = st.integers(*INT64)
    lists = st.lists(st.booleans() | st.floats() | TEXT, min_size=1, max_size=3)
    return {
        "int": floats | st.booleans() | TEXT | lists,
        "float": st.booleans() | TEXT | lists,
        "bool": ints | floats | TEXT,
        "str": ints | floats | st.booleans() | lists,
        "list[int]": ints | TEXT | lists,
    }[declared]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Training replaced by a recorder of the configs it was given; the data folder of the runs."""
    import qrnn_lm.training as training

    configs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "train", lambda config, *args, **kwargs: configs.append(config) or {})
        yield configs, tmp_path_factory.mktemp("corpus")
    print(f"\nvalue rules: {sum(TRIED.values())} inputs tried: {TRIED}")


@pytest.fixture(scope="module", autouse=True)
def prebuilt_command():
    """typer's CliRunner rebuilds the click command from the app on each call (~50 ms, most of a
    call here): hand it the one built above (typer 0.29's hook; older ones just take longer)."""
    import typer.testing

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda _app: COMMAND, raising=False)
        yield


def invoke(args: list[str]):
    return runner.invoke(app, args)


def train_with(recorded, key: str, value):
    """``qrnn-lm train --set key=value`` on a folder of data, after a cosine schedule (so that any
    train.lr_floor is meaningful); the recorded config, or None."""
    configs, data = recorded
    configs.clear()
    result = invoke(["train", "--data", str(data), "--out", str(data / "run"), "--no-progress",
                                 "--set", 'train.lr_schedule="cosine"', "--set", f"{key}={toml_literal(value)}"])
    return result, (configs[0] if configs else None)


def assert_one_line_error(result, *fragments):
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _get(config: Config, key: str):
    section, _, name = key.rpartition(".")
    return getattr(getattr(config, section) if section else config, name)


@pytest.mark.parametrize("key, declared, rule", KEYS, ids=IDS)
@EXAMPLES
@given(data=st.data())
def test_in_range_values_are_accepted(recorded, key, declared, rule, data):
    value = data.draw(in_range(declared, rule), label=key)
    TRIED["config in range"] += 1
    result, config = train_with(recorded, key, value)
    assert result.exit_code == 0 and config is not None, (result.output, result.exception)
    assert _get(config, key) == value


@pytest.mark.parametrize("key, declared, rule", KEYS, ids=IDS)
@EXAMPLES
@given(data=st.data())
def test_out_of_range_values_are_one_line_errors(recorded, key, declared, rule, data):
    strategy = out_of_range(declared, rule)
    if strategy is None:
        return
    value = data.draw(strategy, label=key)
    TRIED["config out of range"] += 1
    result, config = train_with(recorded, key, value)
    assert config is None
    assert_one_line_error(result, key)


@pytest.mark.parametrize("key, declared, rule", KEYS, ids=IDS)
@EXAMPLES
@given(data=st.data())
def test_wrong_type_values_are_one_line_errors(recorded, key, declared, rule, data):
    value = data.draw(wrong_type(declared), label=key)
    TRIED["config wrong type"] += 1
    result, config = train_with(recorded, key, value)
    assert config is None
    assert_one_line_error(result, key, f"must be {declared}")


def type_name(param) -> str:
    """An option's value type: "int", "float", "str", "bool", "Path", an Enum's name... (typer >= 0.20
    has its own parameter classes with ``bare_type``; click's have ``type``)."""
    if hasattr(param, "bare_type"):
        return param.bare_type()
    return {"integer": "int", "text": "str", "boolean": "bool"}.get(param.type.name, param.type.name)


def _commands_taking(name: str) -> list[tuple[list[str], str]]:
    """(command path, e.g. ["bench", "lm"], and "int" or "float") of each option for the parameter ``name``."""
    found = []

    def walk(command, path):
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, sub_name])
        for param in getattr(command, "params", []):
            if param.name == name:
                found.append((path, "float" if type_name(param) == "float" else "int"))

    walk(COMMAND, [])
    return found


OPTION_CASES = [(path, name, declared) for name in OPTIONS for path, declared in _commands_taking(name)]


def test_every_option_rule_belongs_to_a_command_option():
    assert {name for _, name, _ in OPTION_CASES} == set(OPTIONS)


@pytest.mark.parametrize("path, name, declared", OPTION_CASES, ids=[f"{' '.join(p)} --{n}" for p, n, _ in OPTION_CASES])
@EXAMPLES
@given(data=st.data())
def test_out_of_range_options_are_one_line_errors(path, name, declared, data):
    value = data.draw(out_of_range(declared, OPTIONS[name]), label=name)
    TRIED["option out of range"] += 1
    option = f"--{name.replace('_', '-')}"
    args = [*path, *(["x.pt"] if path in (["eval"], ["generate"]) else []), option, repr(value)]
    if path == ["train"]:
        args += ["--data", "ptb"]
    assert_one_line_error(invoke(args), f"{option} must be")


@pytest.mark.parametrize("path, name, declared", OPTION_CASES, ids=[f"{' '.join(p)} --{n}" for p, n, _ in OPTION_CASES])
@EXAMPLES
@given(data=st.data())
def test_in_range_options_pass_their_check(path, name, declared, data):
    check_options(**{name: data.draw(in_range(declared, OPTIONS[name]), label=name)})
