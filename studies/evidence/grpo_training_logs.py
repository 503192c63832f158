"""Every GRPO run of the evidence study, summarised from its committed per-update log.

    python studies/evidence/grpo_training_logs.py

Finished arms (``results/<arm>/grpo/metrics.jsonl.gz``, TRL's per-update log as its trainer printed it):
``grpo`` sampled through TRL's transformers generation; ``grpo-wall`` through ssb's engine, one completion per
micro-step, both at SSB's wall-clock; ``grpo-tokens`` as grpo-wall at lr 1e-5, stopped at SSB's generated tokens or
8 hours (plan-grpo-tokens.yaml; the 8 hours stopped it at update 398). Unfinished attempts
(``results/grpo-wall-attempts/<attempt>.metrics.jsonl.gz``): ``shared-cores``, the first engine-sampled one, shared
the cores with other work and ended with its session; ``micro-steps-of-4``, rerun on a quiet machine, was killed for
memory at update 65. Neither reached its evaluation.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ARMS = ("grpo", "grpo-wall", "grpo-tokens")
COMPLETIONS_PER_UPDATE = 8


def summary(rows: list[dict]) -> dict:
    half = len(rows) // 2
    mean = lambda key, part: round(sum(r[key] for r in part) / len(part), 3)  # noqa: E731
    return {"updates": len(rows), "train_s": round(sum(r["step_time"] for r in rows), 1),
            "s_at_update_35": round(sum(r["step_time"] for r in rows[:35]), 1),
            "generated_tokens": round(sum(r["completions/mean_length"] for r in rows) * COMPLETIONS_PER_UPDATE),
            f"reward_updates_1_{half}": mean("reward", rows[:half]), f"reward_updates_{half + 1}_{len(rows)}": mean("reward", rows[half:]),
            "capped_share": mean("completions/clipped_ratio", rows), "capped_share_last_7": mean("completions/clipped_ratio", rows[-7:]),
            "capped_share_max": max(r["completions/clipped_ratio"] for r in rows), "entropy_last_7": mean("entropy", rows[-7:]),
            "reward_updates_1_17": mean("reward", rows[:17]),  # a window every run reached, for comparing their samplers
            "reward_by_50_updates": [mean("reward", rows[i:i + 50]) for i in range(0, len(rows), 50)],
            **sampler(rows)}


def sampler(rows: list[dict]) -> dict:
    """The engine sampler's share of the step time and its tokens/s (runs sampled by TRL log neither)."""
    if "sampler/generate_s" not in rows[0]:
        return {}
    return {"sampling_share": round(sum(r["sampler/generate_s"] for r in rows) / sum(r["step_time"] for r in rows), 3),
            "sampler_tokens_per_s": [round(min(r["sampler/tokens_per_s"] for r in rows), 1), round(max(r["sampler/tokens_per_s"] for r in rows), 1)]}


def logs() -> dict[str, Path]:
    found = {arm: RESULTS / arm / "grpo" / "metrics.jsonl.gz" for arm in ARMS}
    found = {arm: path for arm, path in found.items() if path.exists()}
    for path in sorted((RESULTS / "grpo-wall-attempts").glob("*.metrics.jsonl.gz")):
        found["attempt " + path.name.removesuffix(".metrics.jsonl.gz")] = path
    return found


def main() -> None:
    for name, path in logs().items():
        with gzip.open(path, "rt") as f:
            rows = [row for row in map(json.loads, f) if "step_time" in row]  # not the trainer's closing summary
        print(name, json.dumps(summary(rows)))


if __name__ == "__main__":
    main()
