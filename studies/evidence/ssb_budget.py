"""SSB's training budget, from a run's stats: what the GRPO arms of the evidence study are given.

    python studies/evidence/ssb_budget.py wall_s STATS.json             seconds from rollouts to the adapter
    python studies/evidence/ssb_budget.py generated_tokens STATS.json   tokens the rollouts and the refinements generated

STATS.json is a run folder's stats.json (``evidence.sh main``: the SSB run's) or an exported arm's training-stats.json
(``grpo_budget``, ``grpo_tokens``: studies/evidence/results/ssb/training-stats.json). The wall-clock is costed as ``ssb
report`` costs each stage (``ssb.report.stage_compute``), summed over rollouts, refine, teacher and distill and rounded to
a second; the tokens are the generating stages' recorded counts. Prints the number alone, for a driver to pass on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ssb.report import stage_compute

TRAINING_STAGES = ("rollouts", "refine", "teacher", "distill")
GENERATING_STAGES = ("rollouts", "refine")


def wall_s(stats: dict) -> int:
    return round(sum(stage_compute(stage, stats[stage])[2] for stage in TRAINING_STAGES))


def generated_tokens(stats: dict) -> int:
    return sum(stats[stage]["generated_tokens"] for stage in GENERATING_STAGES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("budget", choices=["wall_s", "generated_tokens"])
    parser.add_argument("stats", type=Path, metavar="STATS.json")
    args = parser.parse_args()
    stats = json.loads(args.stats.read_text())
    print(wall_s(stats) if args.budget == "wall_s" else generated_tokens(stats))


if __name__ == "__main__":
    main()
