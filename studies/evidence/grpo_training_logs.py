"""Every GRPO run of the evidence study, summarised from its committed per-update log.

    python studies/evidence/grpo_training_logs.py [--split-at 80,225,375]

``--split-at`` also prints, for one run's updates cut after the given ones (where a resumed run's invocations began:
grpo-tokens resumed after updates 80, 225 and 375), each segment's pace: median update seconds, completion length,
generated tokens per second of update time and the engine sampler's median tokens/s.

Finished arms (``results/<arm>/grpo/metrics.jsonl.gz``, TRL's per-update log as its trainer printed it):
``grpo`` sampled through TRL's transformers generation; ``grpo-wall`` through ssb's engine, one completion per
micro-step, both at SSB's wall-clock; ``grpo-tokens`` as grpo-wall at lr 1e-5, stopped at SSB's generated tokens or
8 hours (plan-grpo-tokens.yaml; the 8 hours stopped it at update 398). Unfinished attempts
(``results/grpo-wall-attempts/<attempt>.metrics.jsonl.gz``): ``shared-cores``, the first engine-sampled one, shared
the cores with other work and ended with its session; ``micro-steps-of-4``, rerun on a quiet machine, was killed for
memory at update 65. Neither reached its evaluation.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
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


def segments(rows: list[dict], split_at: list[int]) -> list[dict]:
    """The pace of each stretch of updates between the cuts (update numbers count from 1; a cut ends its segment)."""
    bounds = [0, *split_at, len(rows)]
    out = []
    for start, end in zip(bounds, bounds[1:]):
        part = rows[start:end]
        tokens = sum(r["completions/mean_length"] for r in part) * COMPLETIONS_PER_UPDATE
        seconds = sum(r["step_time"] for r in part)
        out.append({"updates": f"{start + 1}-{end}", "seconds": round(seconds), "generated_tokens": round(tokens),
                    "median_update_s": round(statistics.median(r["step_time"] for r in part), 1),
                    "mean_completion_length": round(tokens / COMPLETIONS_PER_UPDATE / len(part), 1),
                    "tokens_per_update_second": round(tokens / seconds, 1),
                    **({"sampler_median_tokens_per_s": round(statistics.median(r["sampler/tokens_per_s"] for r in part), 1)}
                       if "sampler/tokens_per_s" in part[0] else {})})
    return out


def logs(results: Path) -> dict[str, Path]:
    found = {arm: results / arm / "grpo" / "metrics.jsonl.gz" for arm in ARMS}
    found = {arm: path for arm, path in found.items() if path.exists()}
    for path in sorted((results / "grpo-wall-attempts").glob("*.metrics.jsonl.gz")):
        found["attempt " + path.name.removesuffix(".metrics.jsonl.gz")] = path
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--split-at", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="updates after which to cut each run into segments, e.g. 80,225,375")
    parser.add_argument("--arm", default="grpo-tokens", help="the run --split-at applies to")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of the arms (default: the committed one)")
    args = parser.parse_args()
    for name, path in logs(args.results).items():
        with gzip.open(path, "rt") as f:
            rows = [row for row in map(json.loads, f) if "step_time" in row]  # not the trainer's closing summary
        print(name, json.dumps(summary(rows)))
        if args.split_at and name == args.arm:
            for segment in segments(rows, args.split_at):
                print("  ", json.dumps(segment))


if __name__ == "__main__":
    main()
