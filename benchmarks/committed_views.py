"""The aligned training examples of a committed run folder (its gzipped teacher and student views)."""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path


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
