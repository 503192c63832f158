"""Solutions that state their final answer first, per round: in the policy's rollouts, the refinements, the
kept (training) solutions and the evaluation's responses.

    python benchmarks/answer_first.py [--chars 80]

A refinement is kept when its last boxed answer is right. One that opens with the answer ("The final
answer is \\boxed{35}.") and then justifies it passes that check as well as one that reasons to it,
and in the hinted prompt the right answer is there to copy. Trained on, such solutions teach the
student to answer before reasoning. This counts, model-free, from the committed round folders
(``rounds-<arm>/round-<r>/``), the texts whose first ``\\boxed`` comes within their first CHARS
characters (what ``refine.answer_first_chars`` drops), and how often those and the others are
right: the rollouts (sampled by the previous round's model, without hints), every refinement, the
kept solutions (student.jsonl, before distillation's held-out and min_solution_tokens split) and
the round's greedy evaluation. Writes answer_first.json next to the round folders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from committed_views import read_gz  # noqa: E402
from ssb.refinement import answers_first  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "evidence"


def split(texts_and_correct: list[tuple[str, bool | None]], chars: int) -> dict:
    """How many texts answer first, and the number right among those and among the others (when graded)."""
    first = [correct for text, correct in texts_and_correct if answers_first(text, chars)]
    others = [correct for text, correct in texts_and_correct if not answers_first(text, chars)]
    counts = {"texts": len(texts_and_correct), "answer_first": len(first)}
    if all(correct is not None for _, correct in texts_and_correct):
        counts |= {"right_of_answer_first": sum(first), "right_of_others": sum(others)}
    return counts


def round_counts(folder: Path, chars: int) -> dict:
    out = {}
    if (folder / "rollouts.jsonl.gz").exists():
        out["rollouts"] = split([(r["text"], r["correct"]) for q in read_gz(folder / "rollouts.jsonl.gz") for r in q["rollouts"]], chars)
    if (folder / "refinements.jsonl.gz").exists():
        refined = [r for r in read_gz(folder / "refinements.jsonl.gz") if "refinement" in r]
        out["refinements"] = split([(r["refinement"]["text"], r["outcome"] == "kept") for r in refined], chars)
    if (folder / "student.jsonl.gz").exists():
        out["kept"] = split([(r["messages"][-1]["content"], None) for r in read_gz(folder / "student.jsonl.gz")], chars)
    for samples in sorted(folder.glob("eval/*/gsm8k.samples.jsonl.gz")):
        out[f"eval/{samples.parent.name}"] = split([(c["text"], c["correct"]) for q in read_gz(samples) for c in q["completions"]], chars)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chars", type=int, default=80, help="a text answers first when its first \\boxed starts within this many characters")
    args = parser.parse_args()
    result = {"command": " ".join(["python benchmarks/answer_first.py", *sys.argv[1:]]), "chars": args.chars, "rounds": {}}
    for export in sorted(RESULTS.glob("rounds-*/rounds.json")):
        for folder in sorted(export.parent.glob("round-*"), key=lambda p: int(p.name.removeprefix("round-"))):
            counts = round_counts(folder, args.chars)
            result["rounds"][f"{export.parent.name}/{folder.name}"] = counts
            print(export.parent.name, folder.name, json.dumps(counts))
    (RESULTS / "answer_first.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
