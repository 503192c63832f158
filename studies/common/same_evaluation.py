"""Is a fresh evaluation the one that produced a committed arm's samples? Compared question by question.

    python studies/common/same_evaluation.py FRESH.samples.jsonl[.gz] COMMITTED.samples.jsonl[.gz]

A study that reuses committed samples beside new arms must grade the new arms with the same engine, template and
grader. Rerunning a committed model on a few of its questions and comparing says whether it does: every question the
two files share (by id) is compared on its completions' text, final answer and grade. Prints the counts as JSON and
exits 1 if any grade differs, so a driver can stop before it spends hours on an evaluation that is not the same.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path


def read_samples(path: Path) -> dict[str, list[dict]]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                rows[row["id"]] = row["completions"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise SystemExit(f"{path}:{line_number}: not a samples row with 'id' and 'completions' ({error})") from None
    return rows


def compare(fresh: dict[str, list[dict]], committed: dict[str, list[dict]]) -> dict:
    shared = [qid for qid in fresh if qid in committed]
    if not shared:
        raise SystemExit("the two files share no question id")
    pairs = [(a, b) for qid in shared for a, b in zip(fresh[qid], committed[qid], strict=True)]
    return {"questions": len(shared), "completions": len(pairs),
            "same_text": sum(a["text"] == b["text"] for a, b in pairs),
            "same_answer": sum(a["answer"] == b["answer"] for a, b in pairs),
            "same_grade": sum(a["correct"] == b["correct"] for a, b in pairs),
            "correct_fresh": sum(a["correct"] for a, _ in pairs), "correct_committed": sum(b["correct"] for _, b in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fresh", type=Path)
    parser.add_argument("committed", type=Path)
    args = parser.parse_args()
    counts = compare(read_samples(args.fresh), read_samples(args.committed))
    print(json.dumps(counts))
    sys.exit(0 if counts["same_grade"] == counts["completions"] else 1)


if __name__ == "__main__":
    main()
