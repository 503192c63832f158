"""One round of the method: every stage of ``ssb run`` in order, in one run folder (``ssb.run`` adds rounds and the report).

The stages are those of ``ssb.runfolder.stages`` marked ``in_run`` (rollouts -> refine -> teacher -> distill
-> eval of the base model and the trained adapter, same harness; with ``arm: onpolicy``, the stages
its context needs -> onpolicy -> eval). Each stage
resumes if interrupted and is skipped when its manifest says it finished with the same inputs; a
stage whose inputs changed stops the run with the list of changes unless it is named in ``force``.
When refine keeps no solution (or fewer than distillation needs, counting only those as long as
``distill.min_solution_tokens`` asks) the run stops there, with the reason in its result and in the report,
instead of training on nothing. With ``rounds`` > 1, ``ssb.rounds`` repeats these stages, each round
bootstrapping from the model the previous one trained.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

from ssb.config import SSBConfig
from ssb.runfolder.folder import RunFolder
from ssb.runfolder.record import no_yield
from ssb.runfolder.stages import STAGES

_log = logging.getLogger(__name__)

RUN_STAGES = tuple(stage for stage in STAGES if stage.in_run)


def trained_model_name(config: SSBConfig) -> str:
    """The name the run's own adapter is evaluated under (``eval/<name>/``): its objective's (``ssb.objectives``), or the
    on-policy arm's."""
    from ssb.objectives import objective_for

    return "onpolicy" if config.arm == "onpolicy" else objective_for(config).evaluated_name


def trained_adapter(config: SSBConfig) -> Path:
    """The run's own adapter: the one its ``arm`` trains."""
    return Path(config.run_dir) / ("onpolicy" if config.arm == "onpolicy" else "distill") / "adapter"


def eval_config_with_adapter(config: SSBConfig, with_base: bool = True) -> SSBConfig:
    """The run's own adapter added to the evaluated models, beside the base (or alone, when not ``with_base``)."""
    adapter = f"{trained_model_name(config)}={trained_adapter(config)}"
    if not with_base:
        return dataclasses.replace(config, eval=dataclasses.replace(config.eval, adapters=[adapter], skip_base=True))
    adapters = list(config.eval.adapters) + ([adapter] if adapter not in config.eval.adapters else [])
    return dataclasses.replace(config, eval=dataclasses.replace(config.eval, adapters=adapters, skip_base=False))


def yield_shortfall(refine: dict, config: SSBConfig) -> str | None:
    """Why the run stops after refine (``refine``: its stats): too few kept solutions, or too few of them
    as long as ``distill.min_solution_tokens`` asks; None when it goes on."""
    from ssb.distillation import short_yield

    return no_yield({"refine": refine}, config) or short_yield(config)


def check_force(force: set[str]) -> None:
    unknown = force - {stage.name for stage in RUN_STAGES}
    if unknown:
        raise ValueError(f"--force: unknown stage(s) {', '.join(sorted(unknown))}; stages: {', '.join(s.name for s in RUN_STAGES)}")


def run_stages(config: SSBConfig, force: set[str], backend=None, with_base: bool = True) -> dict:
    """The stages of ``ssb run`` that apply to ``config``, in its run folder, in order.

    Returns {"wall_s": seconds per stage (this invocation), "pass@1": eval's table, or None when the
    run stopped, "stopped": why it stopped after refine, or None}. ``with_base``: evaluate the base
    model (and ``eval.adapters``) beside the run's own adapter.
    """
    runners = {stage.name: stage.runner() for stage in RUN_STAGES}  # a missing dependency fails now, not after hours of rollouts
    timings, results = {}, {}
    for stage in RUN_STAGES:
        if not stage.applies(config):
            continue
        start = time.monotonic()
        _log.info("=== %s (%s)", stage.name, config.run_dir)
        stage_config = eval_config_with_adapter(config, with_base) if stage.name == "eval" else config
        extra = {"backend": backend} if backend is not None and stage.takes_backend else {}
        results[stage.name] = runners[stage.name](stage_config, force=stage.name in force, **extra)
        timings[stage.name] = round(time.monotonic() - start, 1)
        if stage.name != "refine" or config.arm != "ssb":  # the on-policy arm says itself when refine kept nothing
            continue
        stopped = yield_shortfall(results["refine"], config)
        RunFolder(config.run_dir).record_stop(stopped)
        if stopped:
            _log.warning("%s: %s", config.run_dir, stopped)
            return {"wall_s": timings, "pass@1": None, "stopped": stopped}
    return {"wall_s": timings, "pass@1": results["eval"], "stopped": None}
