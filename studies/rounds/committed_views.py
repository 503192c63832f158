"""Reading the committed rounds: gzipped JSONL files, a round folder's texts, and its aligned training examples.

    python studies/rounds/committed_views.py [FOLDER ...]

prints, per committed round folder (default: every ``results/rounds-<arm>/round-<r>/``), how many texts of each kind it
holds and how many of them are right where they were graded: what prompt_terms.py and answer_first.py count in. The
scripts of this folder import its functions (a script's own folder is on its import path when it runs as a file).
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def read_gz(path: Path) -> list[dict]:
    """The records of a committed ``*.jsonl.gz``."""
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def committed_examples(folder: Path, chat) -> list:
    """``ssb.alignment.align_examples`` on ``folder``'s teacher.jsonl.gz and student.jsonl.gz (``chat``: a ChatFormat)."""
    from ssb.alignment import align_examples
    from ssb.runfolder.export import gunzip

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("teacher.jsonl", "student.jsonl"):
            gunzip(folder / f"{name}.gz", Path(tmp) / name)
        return align_examples(Path(tmp) / "teacher.jsonl", Path(tmp) / "student.jsonl", chat)


def round_folders(results: Path) -> list[tuple[str, Path]]:
    """Every exported round folder under ``results`` (``rounds-<arm>/round-<r>/``), named ``rounds-<arm>/round-<r>``, in round order."""
    return [(f"{export.parent.name}/{folder.name}", folder) for export in sorted(results.glob("rounds-*/rounds.json"))
            for folder in sorted(export.parent.glob("round-*"), key=lambda p: int(p.name.removeprefix("round-")))]


def round_texts(folder: Path) -> dict[str, list[tuple[str, bool | None]]]:
    """A committed round folder's texts, each with whether it was right (None where not graded): the rollouts, every
    refinement (right: kept), the kept solutions (student.jsonl, before distillation's held-out and
    min_solution_tokens split) and each evaluated model's GSM8K responses (``eval/<model>``)."""
    out = {}
    if (folder / "rollouts.jsonl.gz").exists():
        out["rollouts"] = [(r["text"], r["correct"]) for q in read_gz(folder / "rollouts.jsonl.gz") for r in q["rollouts"]]
    if (folder / "refinements.jsonl.gz").exists():
        out["refinements"] = [(r["refinement"]["text"], r["outcome"] == "kept") for r in read_gz(folder / "refinements.jsonl.gz")
                              if "refinement" in r]
    if (folder / "student.jsonl.gz").exists():
        out["kept"] = [(r["messages"][-1]["content"], None) for r in read_gz(folder / "student.jsonl.gz")]
    for samples in sorted(folder.glob("eval/*/gsm8k.samples.jsonl.gz")):
        out[f"eval/{samples.parent.name}"] = [(c["text"], c["correct"]) for q in read_gz(samples) for c in q["completions"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, metavar="FOLDER", help="round folders (default: every committed one)")
    args = parser.parse_args()
    folders = [(str(folder), folder) for folder in args.folders] or round_folders(RESULTS)
    for name, folder in folders:
        counts = {kind: {"texts": len(texts), **({"right": sum(right for _, right in texts)} if all(r is not None for _, r in texts) else {})}
                  for kind, texts in round_texts(folder).items()}
        print(name, json.dumps(counts))


if __name__ == "__main__":
    main()
