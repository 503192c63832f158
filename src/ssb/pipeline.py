"""``ssb run``: every stage of the method in order, in one run folder, then the before/after report.

The stages are those of ``ssb.stages`` marked ``in_run`` (rollouts -> refine -> teacher -> distill
-> eval of the base model and the trained adapter, same harness), then the report. Each stage
resumes if interrupted and is skipped when its manifest says it finished with the same inputs; a
stage whose inputs changed stops the run with the list of changes unless it is named in ``force``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from ssb.config import SSBConfig
from ssb.stages import STAGES

_log = logging.getLogger(__name__)

RUN_STAGES = tuple(stage for stage in STAGES if stage.in_run)


def eval_config_with_adapter(config: SSBConfig) -> SSBConfig:
    """The run's own adapter added to the evaluated models, beside the base."""
    adapter = f"ssb={Path(config.run_dir) / 'distill' / 'adapter'}"
    adapters = list(config.eval.adapters) + ([adapter] if adapter not in config.eval.adapters else [])
    return dataclasses.replace(config, eval=dataclasses.replace(config.eval, adapters=adapters, skip_base=False))


def run_all(config: SSBConfig, force: list[str] | None = None, backend=None) -> dict:
    """Run the whole method; returns wall seconds per stage (this invocation) and the pass@1 table.

    ``backend`` replaces the model's backend of the stages that take one (tests script outcomes).
    """
    from ssb.report import write_report

    force = set(force or [])
    unknown = force - {stage.name for stage in RUN_STAGES}
    if unknown:
        raise ValueError(f"--force: unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(s.name for s in RUN_STAGES)}")
    runners = {stage.name: stage.runner() for stage in RUN_STAGES}  # a missing dependency fails now, not after hours of rollouts
    timings, results = {}, {}
    for stage in RUN_STAGES:
        if not stage.applies(config):
            continue
        start = time.monotonic()
        _log.info("=== %s", stage.name)
        stage_config = eval_config_with_adapter(config) if stage.name == "eval" else config
        extra = {"backend": backend} if backend is not None and stage.takes_backend else {}
        results[stage.name] = runners[stage.name](stage_config, force=stage.name in force, **extra)
        timings[stage.name] = round(time.monotonic() - start, 1)
    report = write_report(config.run_dir)
    return {"wall_s": timings, "pass@1": results["eval"], "report": str(report)}
