"""Solutions that state their final answer first, per round: in the policy's rollouts, the refinements, the
kept (training) solutions and the evaluation's responses.

    python studies/rounds/answer_first.py [--chars 80]

A refinement is kept when its last boxed answer is right. One that opens with the answer ("The final
answer is \\boxed{35}.") and then justifies it passes that check as well as one that reasons to it,
and in the hinted prompt the right answer is there to copy. Trained on, such solutions teach the
student to answer before reasoning. This counts, model-free, from the committed round folders
(``rounds-<arm>/round-<r>/``), the texts whose first ``\\boxed`` comes within their first CHARS
characters (what ``refine.answer_first_chars`` drops), and how often those and the others are
right: the rollouts (sampled by the previous round's model, without hints), every refinement, the
kept solutions and the round's greedy evaluation (``committed_views.round_texts``). Writes answer_first.json next to the round folders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from committed_views import round_folders, round_texts
from ssb.refinement import answers_first

RESULTS = Path(__file__).resolve().parent / "results"


def split(texts_and_correct: list[tuple[str, bool | None]], chars: int) -> dict:
    """How many texts answer first, and the number right among those and among the others (when graded)."""
    first = [correct for text, correct in texts_and_correct if answers_first(text, chars)]
    others = [correct for text, correct in texts_and_correct if not answers_first(text, chars)]
    counts = {"texts": len(texts_and_correct), "answer_first": len(first)}
    if all(correct is not None for _, correct in texts_and_correct):
        counts |= {"right_of_answer_first": sum(first), "right_of_others": sum(others)}
    return counts


def round_counts(folder: Path, chars: int) -> dict:
    return {name: split(texts, chars) for name, texts in round_texts(folder).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=80, help="a text answers first when its first \\boxed starts within this many characters")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of the round exports, and of the JSON (default: the committed one)")
    args = parser.parse_args()
    result = {"command": " ".join(["python studies/rounds/answer_first.py", *sys.argv[1:]]), "chars": args.chars, "rounds": {}}
    for name, folder in round_folders(args.results):
        result["rounds"][name] = counts = round_counts(folder, args.chars)
        print(name, json.dumps(counts))
    (args.results / "answer_first.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
