"""The unfinished attempts at GRPO with SSB's wall-clock, summarised from their committed per-step logs.

    python studies/evidence/grpo_attempts.py

``results/grpo-wall-attempts/<attempt>.metrics.jsonl.gz``: TRL's per-update log of each attempt, as its trainer printed it.
``shared-cores`` is the first one, which shared the cores with other work and ended with its session.
``micro-steps-of-4`` is the rerun on a quiet machine, killed for memory at update 65. Neither reached its evaluation.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ATTEMPTS = Path(__file__).resolve().parent / "results" / "grpo-wall-attempts"
COMPLETIONS_PER_UPDATE = 8


def summary(rows: list[dict]) -> dict:
    half = len(rows) // 2
    mean = lambda key, part: round(sum(r[key] for r in part) / len(part), 3)  # noqa: E731
    return {"updates": len(rows), "train_s": round(sum(r["step_time"] for r in rows), 1),
            "s_at_update_35": round(sum(r["step_time"] for r in rows[:35]), 1),
            "generated_tokens": round(sum(r["completions/mean_length"] for r in rows) * COMPLETIONS_PER_UPDATE),
            f"reward_updates_1_{half}": mean("reward", rows[:half]), f"reward_updates_{half + 1}_{len(rows)}": mean("reward", rows[half:]),
            "capped_share": mean("completions/clipped_ratio", rows), "capped_share_last_7": mean("completions/clipped_ratio", rows[-7:]),
            "capped_share_max": max(r["completions/clipped_ratio"] for r in rows), "entropy_last_7": mean("entropy", rows[-7:])}


def main() -> None:
    for path in sorted(ATTEMPTS.glob("*.metrics.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            rows = [json.loads(line) for line in f]
        print(path.name.removesuffix(".metrics.jsonl.gz"), json.dumps(summary(rows)))


if __name__ == "__main__":
    main()
