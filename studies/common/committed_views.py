"""Reading committed results: gzipped JSONL files, and a run folder's aligned training examples (its gzipped views)."""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path


def read_gz(path: Path) -> list[dict]:
    """The records of a committed ``*.jsonl.gz``."""
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def committed_examples(folder: Path, chat) -> list:
    """``ssb.alignment.align_examples`` on ``folder``'s teacher.jsonl.gz and student.jsonl.gz (``chat``: a ChatFormat)."""
    from ssb.alignment import align_examples

    with tempfile.TemporaryDirectory() as tmp:
        views = {}
        for name in ("teacher.jsonl", "student.jsonl"):
            views[name] = Path(tmp) / name
            with gzip.open(folder / f"{name}.gz", "rb") as f, open(views[name], "wb") as g:
                shutil.copyfileobj(f, g)
        return align_examples(views["teacher.jsonl"], views["student.jsonl"], chat)


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
