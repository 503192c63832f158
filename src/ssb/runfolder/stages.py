"""The one table of stages: name, the function that runs it, what it reads and records, what it writes, and where it takes part.

The command line (one subcommand per stage), ``ssb run`` (the stages of the method, in order), the
run folder (the upstream stage a stage needs finished, the inputs it records, what a forced restart
removes: ``ssb.runfolder.folder.RunFolder.stage``) and the report (which stages count as training compute)
all read this table; adding or changing a stage touches this table and the stage's own module.
Functions are named by module and attribute so that reading the table imports nothing heavy
(``ssb --help`` does not load torch).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


def _always(config) -> bool:
    return True


def _trains_ssb(config) -> bool:
    return config.arm == "ssb"


def _trains_onpolicy(config) -> bool:
    return config.arm == "onpolicy"


def _onpolicy_upstream(config) -> str | None:
    return config.onpolicy.context_upstream()


def _rollouts_needed(config) -> bool:
    return _trains_ssb(config) or _onpolicy_upstream(config) in ("rollouts", "refine")


def _refine_needed(config) -> bool:
    return _trains_ssb(config) or _onpolicy_upstream(config) == "refine"


def _needs_teacher_targets(config) -> bool:
    from ssb.objectives import objective_for

    return _trains_ssb(config) and objective_for(config).needs_teacher_targets


def _objective_upstream(config) -> str:
    from ssb.objectives import objective_for

    return objective_for(config).upstream


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    function: str  # called as function(config, force=...) and returns the stage's stats
    help: str
    outputs: tuple[str, ...]  # run-folder paths the stage writes: what a forced restart removes
    in_run: bool  # one of the steps of `ssb run`, in table order
    training_compute: bool  # counted in the report's compute behind a trained adapter
    takes_backend: bool = False  # accepts backend= (a scripted one in tests, through run_all too)
    applies: Callable = _always  # whether `ssb run` runs it under a config
    # The stage's recorded inputs, in order: parts of the config by name (``ssb.runfolder.folder.config_part``), "upstream"
    # (the upstream stage's inputs fingerprint, recorded as ``upstream_key``) and parts the stage supplies itself.
    records: tuple[str, ...] = ()
    upstream: str | Callable | None = None  # the stage that must have finished first (a name, or config -> name or None)
    upstream_key: str = ""
    command: bool = True  # an `ssb` subcommand of its own
    # Several stages of this kind in one folder (eval/<model>/<benchmark>): name and outputs are patterns of a key.
    keyed_outputs: tuple[str, ...] = ()
    # The outputs whose size and sha256 the stage's manifest entry records, verified whenever a later stage reads them or a
    # skip relies on them (None: all its outputs); resume state (checkpoints) is not among them.
    verified: tuple[str, ...] | None = None

    def upstream_of(self, config) -> str | None:
        return self.upstream(config) if callable(self.upstream) else self.upstream

    def runner(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.function)


STAGES: tuple[Stage, ...] = (
    Stage("rollouts", "ssb.rollouts", "run_rollouts",
          "Sample K solutions per question and grade them (writes rollouts.jsonl).",
          ("rollouts.jsonl",), in_run=True, training_compute=True, takes_backend=True, applies=_rollouts_needed,
          records=("seed", "model", "data", "system_prompt_sha256", "rollouts", "grading")),
    Stage("refine", "ssb.refinement", "run_refine",
          "Select a correct/wrong pair per mixed question, refine it under the hinted prompt, keep verified solutions "
          "(writes teacher.jsonl, student.jsonl, dropped.jsonl).",
          ("refinements.jsonl", "teacher.jsonl", "student.jsonl", "dropped.jsonl"), in_run=True, training_compute=True, takes_backend=True,
          applies=_refine_needed,
          records=("seed", "model", "upstream", "system_prompt_sha256", "hinted_prompt_sha256", "refine", "grading"),
          upstream="rollouts", upstream_key="rollouts_inputs_fingerprint"),
    Stage("teacher", "ssb.teacher_targets", "run_teacher",
          "Run the frozen base model over the teacher view and store its targets on every solution token (writes teacher/).",
          ("teacher",), in_run=True, training_compute=True, applies=_needs_teacher_targets,
          records=("upstream", "model", "teacher", "temperature"), upstream="refine", upstream_key="refine_inputs_fingerprint"),
    Stage("distill", "ssb.distillation", "run_distill",
          "Train LoRA adapters so the student view matches the teacher targets (writes distill/adapter, metrics.jsonl, checkpoints). "
          "Several processes: accelerate launch -m ssb distill ...",
          ("distill",), in_run=True, training_compute=True, applies=_trains_ssb,
          # "objective": what the objective adds (ssb.objectives.Objective.recorded_inputs); "processes": the stage's own.
          records=("upstream", "seed", "model", "distill", "objective", "processes"), upstream=_objective_upstream,
          upstream_key="upstream_inputs_fingerprint", verified=("distill/adapter", "distill/metrics.jsonl", "distill/merged")),
    Stage("grpo", "ssb.arms.grpo", "run_grpo",
          "The RL control: GRPO through TRL on the same base, LoRA shape, questions and grader (writes grpo/adapter, grpo/metrics.jsonl).",
          ("grpo",), in_run=False, training_compute=True,
          records=("seed", "model", "data", "system_prompt_sha256", "grpo", "lora", "grading", "sampler"),
          verified=("grpo/adapter", "grpo/metrics.jsonl")),
    Stage("onpolicy", "ssb.arms.onpolicy", "run_onpolicy",
          "On-policy self-distillation through TRL's SDFT trainer: the student samples from the bare question, the base model shown "
          "onpolicy.context scores its tokens (writes onpolicy/adapter, onpolicy/metrics.jsonl).",
          ("onpolicy",), in_run=True, training_compute=True, applies=_trains_onpolicy,
          # "training_rows_sha256": the prompts and contexts trained on (data, system prompt, rollouts and their selection, or
          # refinements); "teacher_prompt_sha256": the teacher template; "sampler": the resolved sampler and its engine settings.
          records=("upstream", "seed", "model", "onpolicy", "lora", "training_rows_sha256", "teacher_prompt_sha256", "sampler"),
          upstream=_onpolicy_upstream, upstream_key="upstream_inputs_fingerprint", verified=("onpolicy/adapter", "onpolicy/metrics.jsonl")),
    # Each (model, benchmark) is its own run-folder stage, eval/<model>/<benchmark>, with its own two files.
    Stage("eval", "ssb.evaluation", "run_eval",
          "Evaluate the base model and adapters on benchmarks (writes eval/<model>/<benchmark>.samples.jsonl and .summary.json).",
          (), in_run=True, training_compute=False,
          # "model": the evaluated model's spec (base, adapter and its hash, backend); "benchmark": its data section.
          records=("model", "benchmark", "system_prompt", "seed", "eval", "grading"),
          keyed_outputs=("eval/{key}.samples.jsonl", "eval/{key}.summary.json")),
    # Round r >= 2's model: round r-1's adapter merged into its model, in the round's folder; run by ssb.rounds, not a command.
    Stage("merge", "ssb.rounds", "merge_round_model", "Merge the previous round's adapter into its model (ssb run --rounds).",
          ("model", ".model.staging"), in_run=False, training_compute=False, records=("model", "adapter", "adapter_sha256"), command=False,
          verified=()),  # the merged model may be removed to save disk; it is merged again and checked by its own sha256
)

BY_NAME = {stage.name: stage for stage in STAGES}
COMMANDS = tuple(stage for stage in STAGES if stage.command)


def stage_named(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(BY_NAME)}") from None
