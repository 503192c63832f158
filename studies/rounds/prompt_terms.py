"""Solutions written in the hinted prompt's own terms, per round: in the policy's rollouts, the refinements, the
kept (training) solutions and the evaluation's responses (``committed_views.round_texts``).

    python studies/rounds/prompt_terms.py [--phrase "correct response"]

The hinted prompt (src/ssb/prompts/hinted.txt) shows the refiner "the correct response from a student".
A refinement that talks about that response ("the enclosed final answer in the given correct response
matches...") passes the refine check when its last boxed answer is right, and the hinted teacher finds such
words likely in its own context. Distilled into the bare-question student, they have nothing to refer to.
This counts, model-free, from the committed round folders (``rounds-<arm>/round-<r>/``), the texts that
contain PHRASE (case-insensitive), those that open with it (after markdown emphasis and spaces), and how
often those and the others are right. Writes prompt_terms.json next to the round folders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from committed_views import round_folders, round_texts

RESULTS = Path(__file__).resolve().parent / "results"


def split(texts_and_correct: list[tuple[str, bool | None]], phrase: str) -> dict:
    """How many texts use the phrase and open with it, and the number right among those using it and the others."""
    uses = [phrase.lower() in text.lower() for text, _ in texts_and_correct]
    opens = [text.lstrip(" *#\n").lower().startswith(phrase.lower()) for text, _ in texts_and_correct]
    counts = {"texts": len(texts_and_correct), "using_phrase": sum(uses), "opening_with_phrase": sum(opens)}
    if all(correct is not None for _, correct in texts_and_correct):
        counts |= {"right_of_using": sum(c for (_, c), u in zip(texts_and_correct, uses) if u),
                   "right_of_others": sum(c for (_, c), u in zip(texts_and_correct, uses) if not u)}
    return counts


def round_counts(folder: Path, phrase: str) -> dict:
    return {name: split(texts, phrase) for name, texts in round_texts(folder).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phrase", default="correct response", help="the hinted prompt's words to look for (case-insensitive)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of the round exports, and of the JSON (default: the committed one)")
    args = parser.parse_args()
    result = {"command": " ".join(["python studies/rounds/prompt_terms.py", *sys.argv[1:]]), "phrase": args.phrase, "rounds": {}}
    for name, folder in round_folders(args.results):
        result["rounds"][name] = counts = round_counts(folder, args.phrase)
        print(name, json.dumps(counts))
    (args.results / "prompt_terms.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
