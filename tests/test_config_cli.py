import re
from pathlib import Path

import pytest
import yaml

from ssb.cli import build_parser, main
from ssb.config import ConfigError, leaf_fields, load_config
from ssb.configs import shipped_configs


def test_yaml_and_dotted_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("seed: 3\nrollouts:\n  k: 6\n  sampling:\n    temperature: 1.0\n")
    config = load_config(str(cfg), {"rollouts.k": 8, "refine.sampling.top_p": 0.9})
    assert config.seed == 3 and config.rollouts.k == 8
    assert config.rollouts.sampling.temperature == 1.0 and config.rollouts.sampling.max_new_tokens == 1024
    assert config.refine.sampling.top_p == 0.9 and config.refine.sampling.temperature == 0.4


@pytest.mark.parametrize(
    "text, message",
    [("rollouts:\n  kk: 3\n", r"c\.yaml: rollouts: unknown field\(s\) kk"),
     ("rollouts:\n  k: three\n", r"rollouts\.k: expected int, got 'three'"),
     ("model:\n  dtype: float8\n", r"model\.dtype: 'float8' is not one of"),
     ("rollouts:\n  k: 1\n", r"c\.yaml: rollouts\.k: must be >= 2 \(got 1\)"),
     ("- a\n", "top level must be a mapping"),
     ("backend:\n  progress: false\n", r"c\.yaml: backend\.progress is now progress")],
)
def test_bad_configs_are_named(tmp_path, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(cfg))


# (dotted field, a value its section refuses): one per field with a range, each named in the error.
OUT_OF_RANGE = [
    ("run_dir", ""), ("rounds", 0), ("model.name_or_path", ""), ("model.device", ""),
    ("data.split", ""), ("data.offset", -1), ("data.limit", 0), ("data.limit", -1), ("data.question_field", ""), ("data.answer_field", ""),
    ("backend.batch_size", 0), ("backend.openvino.kv_cache_gb", 0), ("backend.vllm.tensor_parallel_size", 0),
    ("backend.vllm.data_parallel_size", 0), ("backend.vllm.gpu_memory_utilization", 0.0), ("backend.vllm.gpu_memory_utilization", 1.5),
    ("backend.vllm.max_lora_rank", 0), ("backend.vllm.max_model_len", 0),
    ("grading.timeout_s", -1), ("grading.timeout_s", 0),
    ("rollouts.k", 1), ("rollouts.chunk_questions", 0),
    *[(f"{stage}.sampling.{name}", bad) for stage in ("rollouts", "refine", "eval")
      for name, bad in (("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.1), ("top_k", -1), ("max_new_tokens", 0))],
    ("refine.chunk_questions", 0), ("refine.answer_first_chars", -1), ("refine.prompt_terms", [" "]),
    ("teacher.k", 0), ("teacher.batch_size", 0), ("teacher.shard_tokens", 0),
    ("distill.lora.r", 0), ("distill.lora.alpha", 0), ("distill.lora.dropout", -0.1), ("distill.lora.dropout", 1.0),
    ("distill.lora.target_modules", []),
    ("distill.temperature", 0), ("distill.jsd_beta", 0), ("distill.jsd_beta", 1), ("distill.kd_weight", -1), ("distill.ce_weight", -1),
    ("distill.heldout_examples", -1), ("distill.min_solution_tokens", -1), ("distill.heldout_every", 0), ("distill.epochs", 0),
    ("distill.batch_size", 0), ("distill.micro_batch_size", 0), ("distill.lr", 0), ("distill.lr", -1e-4), ("distill.weight_decay", -0.1),
    ("distill.warmup_steps", -1), ("distill.max_grad_norm", -1), ("distill.max_steps", 0), ("distill.max_steps", -1),
    ("distill.head_chunk_tokens", 0), ("distill.save_every", 0),
    ("eval.benchmarks", []), ("eval.split", ""), ("eval.n", 0), ("eval.k", [2]), ("eval.k", [0]), ("eval.limit", 0), ("eval.limit", -1),
    ("eval.chunk_questions", 0),
    ("grpo.num_generations", 1), ("grpo.batch_size", 0), ("grpo.batch_size", 6), ("grpo.gradient_accumulation_steps", 0), ("grpo.epochs", 0),
    ("grpo.max_steps", 0), ("grpo.max_wall_s", 0), ("grpo.lr", 0), ("grpo.max_completion_length", 0), ("grpo.temperature", 0),
    ("grpo.top_k", -1), ("grpo.top_p", 0), ("grpo.beta", -1), ("grpo.format_reward", -1), ("grpo.warmup_steps", -1),
    ("grpo.max_grad_norm", -1), ("grpo.save_every", 0), ("grpo.policy_lag", -1), ("grpo.steps_per_generation", 0), ("grpo.max_generated_tokens", 0),
    ("grpo.importance_sampling_clip", 0),
    ("onpolicy.alpha", -0.1), ("onpolicy.alpha", 1.1), ("onpolicy.top_k_tokens", 0), ("onpolicy.ema_rate", 0), ("onpolicy.ema_rate", 1.5),
    ("onpolicy.is_clip", 0), ("onpolicy.num_iterations", 0), ("onpolicy.num_generations", 0), ("onpolicy.batch_size", 0),
    ("onpolicy.gradient_accumulation_steps", 0), ("onpolicy.epochs", 0), ("onpolicy.max_steps", 0), ("onpolicy.max_wall_s", 0),
    ("onpolicy.lr", 0), ("onpolicy.max_completion_length", 0), ("onpolicy.temperature", 0), ("onpolicy.top_k", -1), ("onpolicy.top_p", 0),
    ("onpolicy.warmup_steps", -1), ("onpolicy.max_grad_norm", -1), ("onpolicy.save_every", 0),
]
UNBOUNDED = {"seed", "data.shuffle_seed", "distill.seed", "onpolicy.seed"}  # any integer seeds the generators


@pytest.mark.parametrize("dotted, bad", OUT_OF_RANGE)
def test_every_out_of_range_value_is_refused_at_load_naming_its_field(tmp_path, dotted, bad):
    with pytest.raises(ConfigError, match=rf"^{dotted.replace('.', '[.]')}: "):
        load_config(None, {dotted: bad})
    cfg = tmp_path / "c.yaml"  # the same from a file, which the message names first
    tree: dict = {}
    *sections, leaf = dotted.split(".")
    node = tree
    for section in sections:
        node = node.setdefault(section, {})
    node[leaf] = bad
    cfg.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=rf"^{str(cfg)}: {dotted.replace('.', '[.]')}: "):
        load_config(str(cfg))


def test_every_numeric_field_has_a_range_check():
    """A new count, weight or limit gets its range (config.check_ranges) and its row in OUT_OF_RANGE."""
    numeric = {dotted for dotted, field, _ in leaf_fields() if re.fullmatch(r"(int|float|list\[int\])( \| None)?", str(field.type))}
    assert {"rounds", "eval.k", "distill.max_steps", "grpo.max_wall_s"} <= numeric
    assert numeric - UNBOUNDED - {dotted for dotted, _ in OUT_OF_RANGE} == set()
    assert load_config(None, {"distill.max_steps": 1, "eval.limit": 1, "grading.timeout_s": 0.5}).distill.max_steps == 1


@pytest.mark.parametrize("text, line, key, first", [
    ("seed: 1\ndistill:\n  lr: 0.1\n  lr: 0.2\n", 4, "lr", 3),
    ("distill:\n  lr: 0.1\nseed: 2\ndistill:\n  epochs: 2\n", 4, "distill", 1),
    ("eval:\n  sampling:\n    top_k: 0\n    top_k: 5\n", 4, "top_k", 3),
])
def test_a_key_given_twice_is_refused_with_file_and_line(tmp_path, text, line, key, first):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=rf"c\.yaml: line {line}: '{key}' is given twice \(first at line {first}\)"):
        load_config(str(cfg))
    (tmp_path / "merge.yaml").write_text("refine:\n  sampling:\n    <<: {temperature: 0.5, top_k: 5}\n    top_k: 7\n")
    assert load_config(str(tmp_path / "merge.yaml")).refine.sampling.top_k == 7  # a merge key may override what it merges in


def test_every_field_is_documented_and_in_help(capsys):
    names = [name for name, field, _ in leaf_fields()]
    assert "rollouts.k" in names and "refine.sampling.temperature" in names
    assert all(field.metadata.get("help") for _, field, _ in leaf_fields())
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rollouts", "--help"])
    out = capsys.readouterr().out
    assert all(f"--{name}" in out for name in names)
    assert "Rollouts per question (the paper's K)" in out


def test_cli_overrides_parse_yaml_scalars():
    args = build_parser().parse_args(["rollouts", "--rollouts.k=8", "--data.limit", "null", "--grading.timeout_s", "1e-1"])
    assert vars(args)["cfg:rollouts.k"] == 8 and vars(args)["cfg:data.limit"] is None
    assert vars(args)["cfg:grading.timeout_s"] == 0.1


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "Q"}\n')
    code = main(["rollouts", "--data.source", "jsonl", "--data.path", str(bad), "--run_dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "q.jsonl:1: answer: missing field" in err and "Traceback" not in err
    # Nothing written for input that never loaded, beyond the lock that was held while it was read.
    assert [p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*") if p.is_file()] == [".ssb/lock"]


def test_config_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 3\nrollouts:\n  k: 6\n  sampling:\n    temperature: 1.0\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nrun_dir: runs/child\nrollouts:\n  k: 8\n")
    config = load_config(str(tmp_path / "child.yaml"))
    assert (config.seed, config.rollouts.k, config.rollouts.sampling.temperature, config.run_dir) == (3, 8, 1.0, "runs/child")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(str(tmp_path / "loop.yaml"))


def test_shipped_configs_load():

    configs = list(shipped_configs().values())
    assert {p.name for p in configs} >= {"demo.yaml", "paper-qwen2.5-3b-gsm8k.yaml"}
    for path in configs:
        load_config(str(path))


def test_shipped_configs_load_and_the_controls_train_and_evaluate_on_disjoint_questions():

    configs = list(shipped_configs().values())
    assert len(configs) >= 6
    loaded = {path.stem: load_config(str(path)) for path in configs}  # unknown fields or bad values raise
    controls = loaded["cpu-controls"]
    train = range(controls.data.offset, controls.data.offset + controls.data.limit)
    assert controls.data.source == "svamp" and controls.eval.benchmarks == ["svamp"] and controls.data.split == controls.eval.split
    assert not controls.data.shuffle and controls.eval.limit <= train.start  # evaluation takes records 0..limit-1
    assert controls.grpo.lr == controls.distill.lr and controls.grpo.num_generations == controls.rollouts.k


def test_config_names_resolve_to_shipped_configs_unless_a_file_of_that_name_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shipped = shipped_configs()["demo"]
    assert load_config("demo") == load_config("demo.yaml") == load_config(str(shipped))
    assert load_config("configs/demo.yaml") == load_config(str(shipped))  # the path a source checkout used to have
    (tmp_path / "mine.yaml").write_text("base: demo.yaml\nseed: 7\n")  # base: looked up beside the file, then shipped
    mine = load_config("mine.yaml")
    assert mine.seed == 7 and mine.model == load_config("demo").model
    (tmp_path / "demo.yaml").write_text("seed: 5\n")  # a local file wins over the shipped one
    assert load_config("demo.yaml").seed == load_config("demo").seed == 5
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="exp/paper-sft.yaml: config file not found"):
        load_config("exp/paper-sft.yaml")  # a mistyped path never falls back to the shipped config of that name
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out
    assert all(f"{name}: " in listed for name in shipped_configs())


def test_an_installed_wheel_ships_the_configs(tmp_path):
    """Built and installed like a user would; then run from a folder with no source checkout in reach."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel")],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("ssb-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import ssb, ssb.cli; from ssb.config import load_config; "
             "print(ssb.__file__); print(load_config('demo').run_dir); ssb.cli.main(['configs'])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}).stdout.splitlines()
    assert out[0].startswith(str(tmp_path / "site")) and out[1] == "runs/demo"
    assert {line.split(":")[0] for line in out[2:] if not line.startswith(" ")} == set(shipped_configs())


def test_the_stage_table_drives_the_command_line_the_pipeline_and_the_report():
    from ssb.pipeline import RUN_STAGES
    from ssb.report import TRAINING_STAGES
    from ssb.runfolder.stages import COMMANDS, STAGES

    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert set(subcommands) == {s.name for s in COMMANDS} | {"run", "demo", "report", "configs", "export", "restore"}
    assert {s.name for s in STAGES} - {s.name for s in COMMANDS} == {"merge"}  # run by ssb.rounds, in the table for the run folder
    assert [s.name for s in RUN_STAGES] == ["rollouts", "refine", "teacher", "distill", "onpolicy", "eval"]  # each applies by config
    assert TRAINING_STAGES == ("rollouts", "refine", "teacher", "distill", "grpo", "onpolicy")
    for stage in COMMANDS:
        assert callable(stage.runner()) and subcommands[stage.name].description == stage.help


def test_the_configuration_reference_is_the_one_the_code_documents():
    """docs/configuration.md is rendered from the config dataclasses; regenerate it with python -m ssb.config_reference."""
    from ssb.config_reference import render_reference

    page = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == render_reference(), "docs/configuration.md is stale: python -m ssb.config_reference > docs/configuration.md"
    assert all(f"| `{dotted}` |" in page for dotted, _, _ in leaf_fields())


def test_an_eval_limit_out_of_range_stops_ssb_run_before_any_stage(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "--eval.limit", "-1", "--run_dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "ssb run: error: eval.limit: must be >= 1 (got -1)" and not run.exists()
