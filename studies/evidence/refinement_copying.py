"""How much of each kept refinement is new writing, and how much a copy of a rollout it was shown.

    python studies/evidence/refinement_copying.py [PHASE1_DIR] [--out FILE]

Reads a run's (or an exported phase1 folder's) rollouts and refinements, gzipped or not, and for
every kept refinement measures its character-level similarity (``difflib.SequenceMatcher.ratio``:
2 x matched characters / total characters, 1.0 = identical) to the correct and to the wrong rollout
shown in its hinted prompt. For every wrong refinement it counts those whose answer is the wrong
answer shown. A refiner that mostly copies the correct rollout makes SSB's training text the
model's own correct sample, and its teacher, which has that text in its context, nearly certain of
every token: the soft targets then carry little beyond the text itself.
"""

from __future__ import annotations

import argparse
import difflib
import gzip
import json
import os
import statistics
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "results" / "phase1"


def read_jsonl(folder: Path, name: str) -> list[dict]:
    for path, opener in ((folder / f"{name}.gz", gzip.open), (folder / name, open)):
        if path.exists():
            with opener(path, "rt") as f:
                return [json.loads(line) for line in f]
    raise SystemExit(f"{folder}: no {name} or {name}.gz")


def similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def summarise(values: list[float]) -> dict:
    quartiles = statistics.quantiles(values, n=4)
    return {"mean": round(statistics.mean(values), 4), "quartiles": [round(q, 4) for q in quartiles],
            "at_least_0.9": sum(v >= 0.9 for v in values), "at_least_0.99": sum(v >= 0.99 for v in values)}


def measure(folder: Path) -> dict:
    rollouts = {e["id"]: e["rollouts"] for e in read_jsonl(folder, "rollouts.jsonl")}
    to_correct, to_wrong, wrong, copied_wrong = [], [], 0, 0
    for entry in read_jsonl(folder, "refinements.jsonl"):
        if "refinement" not in entry:
            continue
        shown, selection, refinement = rollouts[entry["id"]], entry["selection"], entry["refinement"]
        if entry["outcome"] == "kept":
            to_correct.append(similarity(refinement["text"], shown[selection["correct_index"]]["text"]))
            to_wrong.append(similarity(refinement["text"], shown[selection["wrong_index"]]["text"]))
        elif entry["outcome"] == "refinement-wrong":
            wrong += 1
            copied_wrong += refinement["answer"] == selection["wrong_answer"]
    if not to_correct:
        raise SystemExit(f"{folder}: no kept refinement")
    return {"source": os.path.relpath(folder), "kept": len(to_correct),
            "kept_similarity_to_shown_correct_rollout": summarise(to_correct),
            "kept_similarity_to_shown_wrong_rollout": summarise(to_wrong),
            "wrong_refinements": wrong, "wrong_refinements_with_the_shown_wrong_answer": copied_wrong}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = measure(args.folder)
    text = json.dumps(result, indent=2) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
