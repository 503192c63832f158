"""A config is user input: a hostile or careless value is one ConfigError line naming the field, never a traceback, a hang or
a message as large as the value."""

import math
import re
import time
import tracemalloc

import pytest
import yaml

from ssb.cli import main
from ssb.config import ConfigError, DistillConfig, leaf_fields, load_config

# Nine levels of nine aliases: 9**9 (about 387 million) strings once expanded, from these few hundred bytes.
BOMB_ITEMS = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
BOMB_FILE = "refine:\n  prompt_terms:\n  - " + "\n    ".join(f"- {item}" for item in BOMB_ITEMS) + "\n"
BOMB_FLOW = "[[" + ", ".join(BOMB_ITEMS) + "]]"  # the same as one flag value
SHOWN = 300  # "a few hundred characters": the most of a user's value an error may show


@pytest.mark.timeout(5)
def test_a_yaml_alias_bomb_in_a_config_file_is_one_error_line_quickly_in_bounded_memory(tmp_path, capsys):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(BOMB_FILE)
    assert len(BOMB_FILE) < 800
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(ConfigError, match=r"bomb\.yaml: line 4: YAML alias '\*a0' refused .*write the value out$"):
            load_config(str(cfg))
        assert time.monotonic() - started < 5
        assert tracemalloc.get_traced_memory()[1] < 50 << 20
    finally:
        tracemalloc.stop()
    assert main(["rollouts", "--config", str(cfg), "--run_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "YAML alias '*a0' refused" in err and "Traceback" not in err


def test_an_alias_anywhere_in_a_config_file_is_refused_with_its_line(tmp_path):
    (tmp_path / "merge.yaml").write_text("rollouts:\n  sampling: &s {temperature: 0.5, top_k: 5}\nrefine:\n  sampling:\n    <<: *s\n    top_k: 7\n")
    with pytest.raises(ConfigError, match=r"merge\.yaml: line 5: YAML alias '\*s' refused"):
        load_config(str(tmp_path / "merge.yaml"))
    (tmp_path / "anchor.yaml").write_text("refine:\n  prompt_terms: &t [correct response]\n")  # an anchor never used expands nothing
    assert load_config(str(tmp_path / "anchor.yaml")).refine.prompt_terms == ["correct response"]


@pytest.mark.timeout(5)
@pytest.mark.parametrize("dotted", ["refine.prompt_terms", "eval.benchmarks", "distill.objective", "distill.lr", "rollouts.k",
                                    "model.name_or_path", "rollouts.sampling"])
def test_an_alias_bomb_given_as_a_flag_value_is_one_bounded_line(dotted, capsys, tmp_path):
    """Flag values are read by plain YAML (aliases allowed): the type check refuses the value before anything walks it, and
    the message shows a bounded part of it."""
    with pytest.raises(ConfigError) as caught:
        load_config(None, {dotted: yaml.safe_load(BOMB_FLOW)})
    message = str(caught.value)
    assert message.startswith(f"{dotted}") and "\n" not in message and len(message) < SHOWN + 100
    if dotted != "rollouts.sampling":  # a section is no flag
        assert main(["rollouts", f"--{dotted}", BOMB_FLOW, "--run_dir", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"error: {dotted}" in err and len(err) < SHOWN + 150


@pytest.mark.parametrize("text, message", [
    ('model:\n  dtype: "' + "x" * 1_000_000 + '"\n', r"model\.dtype: 'x+\.\.\.x+' is not one of 'auto', "),
    ("rollouts:\n  k: [" + "1, " * 100_000 + "1]\n", r"rollouts\.k: expected int, got \[1, 1, 1, 1, 1, 1, \.\.\.\]$"),
    ("eval:\n  benchmarks: [" + "y" * 100_000 + "]\n", r"eval\.benchmarks: 'y+\.\.\.y+' is longer than a file name may be \(255"),
    ("distill:\n  lr: 1\n  " + "k" * 1000 + ": 1\n", r"distill: unknown field\(s\) 'k+\.\.\.k+'; known: objective"),  # YAML keys: 1024 chars
    ("seed: 1\n" + "z" * 1000 + ": 1\n" + "z" * 1000 + ": 2\n", r"line 3: 'z+\.\.\.z+' is given twice \(first at line 2\)"),
    ("1: a\nseed: 2\n", r"top level: unknown field\(s\) 1; known: run_dir"),
    ("base: [a.yaml]\n", r"base: expected a config file name, got \['a\.yaml'\]"),
    ("seed: " + "1" * 5000 + "\n", r"a value YAML cannot convert: Exceeds the limit \(4300 digits\)"),
    ("seed: 2024-13-45\n", r"a value YAML cannot convert: month must be in 1\.\.12"),
])
def test_a_huge_or_odd_value_in_a_config_file_is_named_in_one_bounded_line(tmp_path, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(cfg))}: {message}") as caught:
        load_config(str(cfg))
    shown_part = str(caught.value).split("; known: ")[0]  # the schema's field names are no user value
    assert "\n" not in str(caught.value) and len(shown_part) < len(str(cfg)) + SHOWN + 200


FLOAT_FIELDS = [dotted for dotted, field, _ in leaf_fields() if re.fullmatch(r"float( \| None)?", str(field.type))]


def test_the_float_fields_are_found():
    assert {"distill.lr", "distill.temperature", "rollouts.sampling.temperature", "grpo.max_wall_s", "onpolicy.is_clip"} <= set(FLOAT_FIELDS)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("dotted", FLOAT_FIELDS)
def test_every_float_field_refuses_nan_and_inf_by_name(dotted, value):
    with pytest.raises(ConfigError, match=rf"^{re.escape(dotted)}: must be a finite number \(got {value}\)$"):
        load_config(None, {dotted: value})


@pytest.mark.parametrize("yaml_value, shown", [(".inf", "inf"), ("-.inf", "-inf"), (".nan", "nan")])
def test_nan_and_inf_from_a_file_a_flag_and_python_are_refused(tmp_path, capsys, yaml_value, shown):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"distill:\n  lr: {yaml_value}\n")
    with pytest.raises(ConfigError, match=rf"c\.yaml: distill\.lr: must be a finite number \(got {shown}\)$"):
        load_config(str(cfg))
    assert main(["distill", f"--rollouts.sampling.temperature={shown}", "--run_dir", str(tmp_path / "run")]) == 2
    assert "error: rollouts.sampling.temperature: must be a finite number" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"^temperature: must be a finite number"):
        DistillConfig(temperature=float(shown))


DEEP = 3000  # levels: PyYAML reads a nest by recursion, and a few hundred exhaust Python's stack


@pytest.mark.parametrize("text", ["seed: " + "[" * DEEP + "]" * DEEP + "\n", "a: " + "[" * DEEP + "\n", "seed: " + "{a: " * DEEP + "\n"])
def test_a_config_file_nested_too_deep_is_one_line_naming_it(tmp_path, capsys, text):
    cfg = tmp_path / "deep.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(cfg))}: nested too deep$"):
        load_config(str(cfg))
    assert main(["rollouts", "--config", str(cfg), "--run_dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"ssb rollouts: error: {cfg}: nested too deep\n"


def test_an_analysis_plan_nested_too_deep_is_one_line_naming_it(tmp_path, capsys):
    from ssb.stats.analysis_plan import PlanError, load_plan

    plan = tmp_path / "plan.yaml"
    plan.write_text("arms: {a: [x], b: [y]}\ntest: sign\nprimary: " + "[" * DEEP + "]" * DEEP + "\n")
    with pytest.raises(PlanError, match=rf"^{re.escape(str(plan))}: nested too deep$"):
        load_plan(plan)
    (tmp_path / "run").mkdir()
    assert main(["report", str(tmp_path / "run"), "--plan", str(plan)]) == 2
    assert capsys.readouterr().err == f"ssb report: error: {plan}: nested too deep\n"


@pytest.mark.parametrize("digits", [310, 4300])
def test_an_integer_beyond_a_floats_range_for_a_float_field_is_one_bounded_line(tmp_path, capsys, digits):
    number = "1" + "0" * (digits - 1)
    says = f"distill.lr: must be a finite number (got an integer of {digits} digits)"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"distill:\n  lr: -{number}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(cfg))}: {re.escape(says)}$"):
        load_config(str(cfg))
    assert main(["rollouts", "--distill.lr", number, "--run_dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"ssb rollouts: error: {says}\n"
