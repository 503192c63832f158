"""``ssb run``: every stage in order, in one run folder, then the before/after report.

rollouts -> refine -> teacher -> distill -> eval (the base model and the trained adapter, same
harness) -> report. Each stage resumes if interrupted and is skipped when its manifest says it
finished with the same inputs; a stage whose inputs changed stops the run with the list of changes
unless it is named in ``force``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from ssb.config import SSBConfig

_log = logging.getLogger(__name__)

STAGES = ("rollouts", "refine", "teacher", "distill", "eval")


def eval_config_with_adapter(config: SSBConfig) -> SSBConfig:
    """The run's own adapter added to the evaluated models, beside the base."""
    adapter = f"ssb={Path(config.run_dir) / 'distill' / 'adapter'}"
    adapters = list(config.eval.adapters) + ([adapter] if adapter not in config.eval.adapters else [])
    return dataclasses.replace(config, eval=dataclasses.replace(config.eval, adapters=adapters, skip_base=False))


def run_all(config: SSBConfig, force: list[str] | None = None, backend=None) -> dict:
    """Run the whole method; returns wall seconds per stage (this invocation) and the pass@1 table.

    ``backend`` replaces the model's backend for rollouts and refinement (tests script outcomes).
    """
    from ssb.distillation import run_distill
    from ssb.evaluation import run_eval
    from ssb.refinement import run_refine
    from ssb.report import write_report
    from ssb.rollouts import run_rollouts
    from ssb.teacher_targets import run_teacher

    force = set(force or [])
    unknown = force - set(STAGES)
    if unknown:
        raise ValueError(f"--force: unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}")
    runners = {"rollouts": lambda c, force: run_rollouts(c, force=force, backend=backend),
               "refine": lambda c, force: run_refine(c, force=force, backend=backend),
               "teacher": run_teacher, "distill": run_distill,
               "eval": lambda c, force: run_eval(eval_config_with_adapter(c), force=force)}
    timings, results = {}, {}
    for stage in STAGES:
        if stage == "teacher" and config.distill.objective == "sft":
            continue  # hard labels need no teacher targets
        start = time.monotonic()
        _log.info("=== %s", stage)
        results[stage] = runners[stage](config, force=stage in force)
        timings[stage] = round(time.monotonic() - start, 1)
    report = write_report(config.run_dir)
    return {"wall_s": timings, "pass@1": results["eval"], "report": str(report)}
