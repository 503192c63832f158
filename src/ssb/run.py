"""``ssb run``: the whole method in one run folder (one round, or ``rounds`` of them), then the before/after report.

One round is ``ssb.pipeline.run_stages``; with ``rounds`` > 1, ``ssb.rounds`` runs them round after
round. The report (``ssb.report``) is written last, from the run folder alone.
"""

from __future__ import annotations

from ssb.config import SSBConfig
from ssb.pipeline import check_force, run_stages
from ssb.report import write_report
from ssb.rounds import run_rounds


def run_all(config: SSBConfig, force: list[str] | None = None, backend=None) -> dict:
    """Run the whole method; returns wall seconds per stage (this invocation), the pass@1 table and the report's path,
    with "stopped" (why) when refine kept too few solutions to train on; with ``rounds`` > 1, one such entry per round (``ssb.rounds``).

    ``backend`` replaces the model's backend of the stages that take one (tests script outcomes).
    """
    force = set(force or [])
    check_force(force)
    if config.rounds > 1:
        return run_rounds(config, force, backend)
    outcome = run_stages(config, force, backend)
    report = write_report(config.run_dir, stopped=outcome["stopped"])
    stopped = {"stopped": outcome["stopped"]} if outcome["stopped"] else {}
    return {"wall_s": outcome["wall_s"], "pass@1": outcome["pass@1"], **stopped, "report": str(report)}
