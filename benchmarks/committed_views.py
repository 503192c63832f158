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
