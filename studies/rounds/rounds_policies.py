"""Two arms' round models as sampling policies, paired on the same training questions.

    python studies/rounds/rounds_policies.py [--round 2] [--arms rounds-ssb-min32 rounds-sft-min32]

Rounds with fresh data give round r of every arm the same training questions, so round r's rollouts
(K samples per question at the rollout temperature, by round r-1's trained model) compare the arms'
previous-round models as policies on far more questions than the held-out evaluation: per question the
fraction of its K rollouts that are right, second arm minus first, paired (``ssb.stats.comparison.compare``).
Reads the committed exports (``studies/rounds/results/<arm>/round-<r>/rollouts.jsonl.gz``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from committed_views import read_gz

RESULTS = Path(__file__).resolve().parent / "results"


def rollout_accuracy(folder: Path) -> tuple[dict[str, float], int]:
    """Per question the fraction of right rollouts, and K."""
    records = read_gz(folder / "rollouts.jsonl.gz")
    return {r["id"]: r["num_correct"] / len(r["rollouts"]) for r in records}, len(records[0]["rollouts"])


def main() -> None:
    from ssb.stats.comparison import compare

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--round", type=int, default=2)
    parser.add_argument("--arms", nargs=2, default=["rounds-ssb-min32", "rounds-sft-min32"])
    args = parser.parse_args()
    first, second = (RESULTS / arm / f"round-{args.round}" for arm in args.arms)
    (a, k_a), (b, k_b) = rollout_accuracy(first), rollout_accuracy(second)
    if a.keys() != b.keys():
        raise SystemExit(f"{first} and {second} hold other questions ({len(a.keys() ^ b.keys())} differ): not the same round slice")
    difference = compare(b, a, samples=([k_b], [k_a]))
    print(json.dumps({"round": args.round, "questions": len(a), "k": [k_a, k_b],
                      "rollout_accuracy": {args.arms[0]: sum(a.values()) / len(a), args.arms[1]: sum(b.values()) / len(b)},
                      f"{args.arms[1]} - {args.arms[0]}": difference}, indent=2))


if __name__ == "__main__":
    main()
