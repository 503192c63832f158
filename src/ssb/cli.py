"""``ssb`` command line: one subcommand per stage, each taking ``--config`` and dotted overrides.

Every config field is an option (``--rollouts.k 8`` or ``--rollouts.k=8``) documented by its
field's help text. Values are read as YAML scalars, so ``null``, ``true`` and ``1e-4`` mean what
they look like.
"""

from __future__ import annotations

import argparse
import errno
import logging
import pickle
import sys
import traceback
from typing import Any

import yaml
from jinja2 import TemplateError

from ssb.config import ConfigError, leaf_fields, load_config
from ssb.configs import shipped_configs
from ssb.data import DataError
from ssb.run import run_all
from ssb.runfolder.artifacts import RunFolderError
from ssb.runfolder.lock import hold_run_folder
from ssb.runfolder.stages import COMMANDS, stage_named


def _scalar(text: str) -> Any:
    # argparse reports an ArgumentTypeError as "argument --x: ..." and exits 2; a YAML error or a RecursionError would escape
    # parse_args, outside main's handling of user errors, as a traceback.
    try:
        value = yaml.safe_load(text)
    except RecursionError:
        raise argparse.ArgumentTypeError("not a YAML value: nested too deep") from None
    except yaml.MarkedYAMLError as exc:  # the problem alone: the full message quotes the value and spans lines
        mark = exc.problem_mark
        raise argparse.ArgumentTypeError(f"not a YAML value: {exc.problem[:200]} (line {mark.line + 1}, column {mark.column + 1})") from None
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"not a YAML value: {str(exc).splitlines()[0][:200]}") from None
    if isinstance(value, str):
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                pass
    return value


# The commands that run the whole method; every other subcommand is a stage of ssb.runfolder.stages.
PIPELINE_COMMANDS = {
    "run": "The whole method: rollouts, refine, teacher, distill, eval (base and trained adapter), report; resumable, each finished stage skipped.",
    "demo": "ssb run with the shipped demo.yaml: the real Qwen2.5-Coder-0.5B-Instruct on generated problems, on a CPU, offline.",
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


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _config_options(whole_pipeline: bool) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", help="YAML config file; options below override its values.")
    if whole_pipeline:
        parent.add_argument("--force", action="append", default=[], metavar="STAGE",
                            help="Restart STAGE from scratch if its inputs changed (repeatable; its outputs are discarded).")
    else:
        parent.add_argument("--force", action="store_true",
                            help="Restart the stage from scratch when its inputs changed since it was started (its outputs are discarded).")
    parent.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS, help="Logging level.")
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
    commands = {**PIPELINE_COMMANDS, **{stage.name: stage.help for stage in COMMANDS}}
    for name, help_text in commands.items():
        stage = sub.add_parser(name, parents=[pipeline_options if name in PIPELINE_COMMANDS else options], help=help_text, description=help_text)
        if name == "eval":
            shortcuts = stage.add_argument_group("shortcuts")
            for flag, (dotted, kind) in EVAL_ALIASES.items():
                shortcuts.add_argument(flag, dest=f"alias:{dotted}", type=kind, default=argparse.SUPPRESS,
                                       action="append" if flag == "--adapter" else "store", metavar=dotted.rsplit(".", 1)[-1].upper(),
                                       help=f"same as --{dotted}")
    report = sub.add_parser("report", help="Write RUN_DIR/report.md with the comparison tables and plots.",
                            description="Write report.md with the comparison tables and plots of one or more run folders' evaluations.")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="Run folders (or ssb eval --out folders); their evaluated models are compared together. A model name "
                             "evaluated in two folders is written FOLDER/MODEL (FOLDER: the folder's directory name).")
    report.add_argument("--arm", action="append", default=[], metavar="NAME=MODEL[,MODEL...]",
                        help="Pool models (training seeds of one recipe) into one arm: per question the mean of their scores (repeatable). "
                             "A model in no arm is an arm of its own.")
    report.add_argument("--compare", action="append", default=[], metavar="A:B",
                        help="Print arm A minus arm B paired on the questions both answered, with 95%% CI and p (repeatable); "
                             "replaces the default comparison of every model with its base.")
    report.add_argument("--plan", metavar="FILE",
                        help="A declared analysis plan (YAML: arms, primary and secondary comparisons, test, alpha, bootstrap): the report "
                             "applies its test to every comparison, primary ones first as one Holm family; instead of --arm and --compare.")
    report.add_argument("--out", metavar="DIR", help="Write DIR/report.md and its plots instead of into the first RUN_DIR.")
    sub.add_parser("configs", help="List the shipped configs (usable as --config NAME).")
    _add_export_commands(sub)
    return parser


def _add_export_commands(sub) -> None:
    export = sub.add_parser(
        "export", help="Copy a run folder's results (no weights) into OUT_DIR, compressed, so that the run can resume elsewhere.",
        description="Copy what a run folder's results rest on into OUT_DIR, gzip-compressed, the same bytes for the same content: "
                    "the training data, stats.json, manifest.json, each stage's recorded inputs, per-step metrics, every evaluation's "
                    "samples and summary, rounds.json, report.md and plots; no weights (teacher targets, adapters, merged models). "
                    "It may run while the run goes on, and into an earlier export of the same run, which it brings up to date. "
                    "ssb restore rebuilds the run folder from it.")
    export.add_argument("run_dir", metavar="RUN_DIR", help="The run folder (plain, or iterated with round-*/ folders).")
    export.add_argument("out_dir", metavar="OUT_DIR", help="A new folder, or an earlier export of this run, outside RUN_DIR.")
    restore = sub.add_parser(
        "restore", help="Rebuild a run folder from an ssb export, so that ssb run resumes it.",
        description="Rebuild RUN_DIR from EXPORT_DIR (written by ssb export). ssb run with the run's config then trains the weights "
                    "again (teacher, distill, grpo; a round's merge is redone), skips every other stage that had finished and resumes "
                    "what had not; a retrained adapter that differs from the one the exported evaluations used stops the run. "
                    "RUN_DIR must be the path the run was made in (as its run_dir spelled it) and must not exist.")
    restore.add_argument("export_dir", metavar="EXPORT_DIR", help="A folder written by ssb export.")
    restore.add_argument("run_dir", metavar="RUN_DIR", help="The run folder to rebuild: the one the export was made from, not existing yet.")


def _export_or_restore(args) -> dict:
    from ssb.runfolder.export import export_run, restore_run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "export":
        return {"export": export_run(args.run_dir, args.out_dir), "export_dir": args.out_dir}
    return {"restore": restore_run(args.export_dir, args.run_dir), "run_dir": args.run_dir}


def list_configs() -> str:
    from ssb.configs import summary

    return "\n".join(f"{name}: {summary(path)}\n  {path}" for name, path in shipped_configs().items())


# ssb's own errors carry a message written for the user (a file, what is wrong, what to do), at times over several lines
# (the inputs that changed); a library's is cut to its first line and bounded.
OWN_ERRORS = (ConfigError, DataError, RunFolderError)
# What a user's input, files or machine can cause: one line, exit 2. Anything else is a bug in ssb: its traceback.
USER_ERRORS = (*OWN_ERRORS, ValueError, OSError, FloatingPointError, MemoryError, pickle.UnpicklingError)
MESSAGE_CHARS = 2000


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # ssb.runfolder.artifacts.writing names the file being written
        return f"{exc}: the disk is full; free space, then run the command again (what was finished is kept)"
    if isinstance(exc, MemoryError) or _gpu_out_of_memory(exc):
        return "out of memory; free memory or lower the batch sizes, then run the command again (what was finished is kept)"
    if isinstance(exc, TemplateError):  # transformers renders chat templates in jinja's sandbox, which refuses escapes
        return f"the chat template was refused: {str(exc).strip().splitlines()[0]} (model.chat_template, or the tokenizer's own)"
    if isinstance(exc, pickle.UnpicklingError):
        return f"refused a file that is not plain tensors and values (it could run code): {str(exc).splitlines()[0] if str(exc) else ''}"
    text = str(exc) if isinstance(exc, OWN_ERRORS) else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + f"... ({len(text) - MESSAGE_CHARS} more characters)"


def _gpu_out_of_memory(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # only a command that imported torch can run out of GPU memory; the CLI does not import it
    return torch is not None and isinstance(exc, torch.OutOfMemoryError)


def _user_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the user's input, files or machine (one line, exit 2) rather than from a bug in ssb."""
    return isinstance(exc, (*USER_ERRORS, TemplateError)) or _gpu_out_of_memory(exc)  # GPU OOM is a RuntimeError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = _dispatch(args)
    except KeyboardInterrupt:
        print(f"ssb {args.command}: interrupted; run the same command to resume (what was finished is kept)", file=sys.stderr)
        return 130
    except Exception as exc:
        if _user_error(exc):
            print(f"ssb {args.command}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        traceback.print_exc()
        print(f"ssb {args.command}: this is a bug in ssb, not a problem with your input; please report it with the traceback above",
              file=sys.stderr)
        return 1
    if result is not None:
        print(result)
    return 0


def _dispatch(args) -> str | None:
    """Run the command ``args`` names; what to print (None: nothing)."""
    if args.command == "report":
        from ssb.report import write_report

        return write_report(*args.run_dirs, arms=args.arm, comparisons=args.compare, out=args.out, plan=args.plan)
    if args.command in ("export", "restore"):
        return yaml.safe_dump(_export_or_restore(args), sort_keys=False).rstrip()
    if args.command == "configs":
        return list_configs()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {key[4:]: value for key, value in vars(args).items() if key.startswith("cfg:")}
    overrides.update({key[6:]: value for key, value in vars(args).items() if key.startswith("alias:")})
    if args.command == "demo" and args.config is None:
        args.config = str(shipped_configs()["demo"])  # the shipped one, whatever the working directory holds
    config = load_config(args.config, overrides)
    with hold_run_folder(config.run_dir):  # before the stage's import, so a second process stops at once
        run = run_all if args.command in PIPELINE_COMMANDS else stage_named(args.command).runner()
        stats = run(config, force=args.force)
    if not stats:  # other processes of a multi-process run return nothing to report
        return None
    return yaml.safe_dump({args.command: stats, "run_dir": config.run_dir}, sort_keys=False).rstrip()


if __name__ == "__main__":
    sys.exit(main())
