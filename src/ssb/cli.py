"""``ssb`` command line: one subcommand per stage, each taking ``--config`` and dotted overrides.

Every config field is an option (``--rollouts.k 8`` or ``--rollouts.k=8``) documented by its
field's help text. Values are read as YAML scalars, so ``null``, ``true`` and ``1e-4`` mean what
they look like.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from ssb.artifacts import RunFolderError
from ssb.config import ConfigError, leaf_fields, load_config
from ssb.data import DataError
from ssb.run_lock import hold_run_folder


def _scalar(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str):
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                pass
    return value


DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


# command -> (module, function called as function(config, force=...), help). Modules are imported
# only when their command runs, so `ssb --help` does not load torch.
STAGES: dict[str, tuple[str, str, str]] = {
    "run": ("ssb.pipeline", "run_all", "The whole method: rollouts, refine, teacher, distill, eval (base and trained adapter), report; resumable, each finished stage skipped."),
    "demo": ("ssb.pipeline", "run_all", "ssb run with configs/demo.yaml: the real Qwen2.5-Coder-0.5B-Instruct on generated problems, on a CPU, offline."),
    "rollouts": ("ssb.rollouts", "run_rollouts", "Sample K solutions per question and grade them (writes rollouts.jsonl)."),
    "refine": ("ssb.refinement", "run_refine", "Select a correct/wrong pair per mixed question, refine it under the hinted prompt, keep verified solutions (writes teacher.jsonl, student.jsonl, dropped.jsonl)."),
    "teacher": ("ssb.teacher_targets", "run_teacher", "Run the frozen base model over the teacher view and store its targets on every solution token (writes teacher/)."),
    "distill": ("ssb.distillation", "run_distill", "Train LoRA adapters so the student view matches the teacher targets (writes distill/adapter, metrics.jsonl, checkpoints). Several processes: accelerate launch -m ssb distill ..."),
    "grpo": ("ssb.grpo", "run_grpo", "The RL control: GRPO through TRL on the same base, LoRA shape, questions and grader (writes grpo/adapter, grpo/metrics.jsonl)."),
    "eval": ("ssb.evaluation", "run_eval", "Evaluate the base model and adapters on benchmarks (writes eval/<model>/<benchmark>.samples.jsonl and .summary.json)."),
}

# Short spellings of `ssb eval` options: flag -> (dotted config field, how to read the value).
EVAL_ALIASES = {
    "--model": ("model.name_or_path", str),
    "--adapter": ("eval.adapters", str),  # repeatable
    "--benchmarks": ("eval.benchmarks", lambda text: [b.strip() for b in text.split(",") if b.strip()]),
    "--n": ("eval.n", int),
    "--k": ("eval.k", lambda text: [int(k) for k in text.split(",")]),
    "--temperature": ("eval.sampling.temperature", float),
    "--max-new-tokens": ("eval.sampling.max_new_tokens", int),
    "--limit": ("eval.limit", int),
    "--out": ("run_dir", str),
    "--data-dir": ("data.data_dir", str),
}


def _config_options(whole_pipeline: bool) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", help="YAML config file; options below override its values.")
    if whole_pipeline:
        parent.add_argument("--force", action="append", default=[], metavar="STAGE",
                            help="Restart STAGE from scratch if its inputs changed (repeatable; its outputs are discarded).")
    else:
        parent.add_argument("--force", action="store_true", help="Restart the stage from scratch when its inputs changed since it was started (its outputs are discarded).")
    parent.add_argument("--log-level", default="INFO", help="Logging level (DEBUG, INFO, WARNING).")
    group = parent.add_argument_group("config options (dotted names, see the config dataclasses)")
    for dotted, field, default in leaf_fields():
        group.add_argument(f"--{dotted}", dest=f"cfg:{dotted}", type=_scalar, default=argparse.SUPPRESS,
                           metavar=dotted.rsplit(".", 1)[-1].upper(), help=f"{field.metadata['help']} (default: {default!r})")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssb", description="Semantic Soft Bootstrapping: RL-free self-distillation of hinted reasoning.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    options = _config_options(whole_pipeline=False)
    pipeline_options = _config_options(whole_pipeline=True)
    for name, (_, _, help_text) in STAGES.items():
        stage = sub.add_parser(name, parents=[pipeline_options if name in ("run", "demo") else options], help=help_text, description=help_text)
        if name == "eval":
            shortcuts = stage.add_argument_group("shortcuts")
            for flag, (dotted, kind) in EVAL_ALIASES.items():
                shortcuts.add_argument(flag, dest=f"alias:{dotted}", type=kind, default=argparse.SUPPRESS,
                                       action="append" if flag == "--adapter" else "store", metavar=dotted.rsplit(".", 1)[-1].upper(),
                                       help=f"same as --{dotted}")
    report = sub.add_parser("report", help="Write RUN_DIR/report.md with the comparison table and plots.")
    report.add_argument("run_dir", help="A run folder (or an ssb eval --out folder).")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        from ssb.report import write_report

        print(write_report(args.run_dir))
        return 0
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {key[4:]: value for key, value in vars(args).items() if key.startswith("cfg:")}
    overrides.update({key[6:]: value for key, value in vars(args).items() if key.startswith("alias:")})
    if args.command == "demo" and args.config is None:
        args.config = str(DEMO_CONFIG)
    try:
        config = load_config(args.config, overrides)
        module, function, _ = STAGES[args.command]
        with hold_run_folder(config.run_dir):  # before the stage's import, so a second process stops at once
            stats = getattr(importlib.import_module(module), function)(config, force=args.force)
    except (ConfigError, DataError, RunFolderError, FloatingPointError, OSError, ValueError) as exc:
        # OSError covers a model or file that cannot be found or fetched (transformers raises it offline).
        print(f"ssb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    if stats:  # other processes of a multi-process run return nothing to report
        print(yaml.safe_dump({args.command: stats, "run_dir": config.run_dir}, sort_keys=False).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
