"""The seed-0 arm whose context plan.yaml's rule selects for more training seeds: the higher GSM8K pass@1 of
onpolicy-gold and onpolicy-hint, from their committed summaries.

    python studies/onpolicy/selected_context.py [--results studies/onpolicy/results]

Prints the arm's name (onpolicy-gold: the gold-solution context; onpolicy-hint: the hint pair), for ``onpolicy.sh seed``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ARMS = ("onpolicy-gold", "onpolicy-hint")


def selected(results: Path) -> str:
    score = {arm: json.loads((results / arm / "gsm8k.summary.json").read_text())["pass@1"]["mean"] for arm in ARMS}
    return max(score, key=score.get)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the study's results folder (default: the committed one)")
    args = parser.parse_args()
    print(selected(args.results))


if __name__ == "__main__":
    main()
