"""The one table of stages: name, the function that runs it, what it writes, and where it takes part.

The command line (one subcommand per stage), ``ssb run`` (the stages of the method, in order), the
run folder (what a forced restart removes) and the report (which stages count as training compute)
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


def _needs_teacher_targets(config) -> bool:
    from ssb.objectives import objective_for

    return objective_for(config).needs_teacher_targets


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

    def runner(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.function)


STAGES: tuple[Stage, ...] = (
    Stage("rollouts", "ssb.rollouts", "run_rollouts",
          "Sample K solutions per question and grade them (writes rollouts.jsonl).",
          ("rollouts.jsonl",), in_run=True, training_compute=True, takes_backend=True),
    Stage("refine", "ssb.refinement", "run_refine",
          "Select a correct/wrong pair per mixed question, refine it under the hinted prompt, keep verified solutions "
          "(writes teacher.jsonl, student.jsonl, dropped.jsonl).",
          ("refinements.jsonl", "teacher.jsonl", "student.jsonl", "dropped.jsonl"), in_run=True, training_compute=True, takes_backend=True),
    Stage("teacher", "ssb.teacher_targets", "run_teacher",
          "Run the frozen base model over the teacher view and store its targets on every solution token (writes teacher/).",
          ("teacher",), in_run=True, training_compute=True, applies=_needs_teacher_targets),
    Stage("distill", "ssb.distillation", "run_distill",
          "Train LoRA adapters so the student view matches the teacher targets (writes distill/adapter, metrics.jsonl, checkpoints). "
          "Several processes: accelerate launch -m ssb distill ...",
          ("distill",), in_run=True, training_compute=True),
    Stage("grpo", "ssb.grpo", "run_grpo",
          "The RL control: GRPO through TRL on the same base, LoRA shape, questions and grader (writes grpo/adapter, grpo/metrics.jsonl).",
          ("grpo",), in_run=False, training_compute=True),
    # Each (model, benchmark) is its own run-folder stage, eval/<model>/<benchmark>, with its own two files.
    Stage("eval", "ssb.evaluation", "run_eval",
          "Evaluate the base model and adapters on benchmarks (writes eval/<model>/<benchmark>.samples.jsonl and .summary.json).",
          (), in_run=True, training_compute=False),
)

BY_NAME = {stage.name: stage for stage in STAGES}


def stage_named(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(BY_NAME)}") from None
