"""Which saved checkpoint a training run resumes from: the newest whose files all load.

A kill mid-save, a rotation of old checkpoints cut short or a damaged disk leaves a checkpoint with a file
missing or torn; resuming from it would fail inside the library that reads it (a ``SafetensorError`` traceback,
or torch's "[Errno 22] Invalid argument" naming no file). Each file is read here as the resume will read it,
without running code, and a checkpoint with one that does not load gives way to the one before it (logged,
naming the file); with none intact, training starts over (logged). ssb's own loop (``ssb.training_loop``) and
the TRL-trained arms (``ssb.arms.trl``) choose their checkpoint this way.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

_log = logging.getLogger(__name__)

_MESSAGE_CHARS = 200  # a library's message can run to paragraphs (torch's weights-only refusal does)


def _first_line(exc: BaseException) -> str:
    line = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return line if len(line) <= _MESSAGE_CHARS else line[:_MESSAGE_CHARS] + "..."


def missing(path: Path) -> str | None:
    """Why ``path`` cannot be a checkpoint's file before it is read: absent, or empty (a save cut short)."""
    if not path.is_file():
        return f"{path} is missing"
    if path.stat().st_size == 0:
        return f"{path} is empty"
    return None


def safetensors_damage(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, or None: safetensors parses the header and checks that its
    tensors' sizes cover the file exactly, so a torn or padded file is refused here, before any tensor is read."""
    from safetensors import SafetensorError, safe_open

    if why := missing(path):
        return why
    try:
        with safe_open(str(path), framework="pt"):
            return None
    except (SafetensorError, OSError) as exc:
        return f"{path} does not load ({_first_line(exc)})"


def torch_state_damage(path: Path) -> str | None:
    """Why ``torch.load(path, weights_only=True)`` fails, or None: a torn file, one whose bytes changed (torch does not
    check the archive's CRCs, so they are checked first), or one that would unpickle code."""
    import pickle

    import torch

    if why := missing(path):
        return why
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            return f"{path} does not load (its member {bad} fails its CRC check: the file changed after it was saved)"
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"WeightsUnpickler error: ([^.\n]*)", str(exc))  # what torch refused, under its advice on loading anyway
        why = found[1][:_MESSAGE_CHARS] if found else _first_line(exc)
        return f"{path} is not a checkpoint of tensors and plain values, refused ({why})"
    except zipfile.BadZipFile:
        return f"{path} does not load (not a whole torch archive: cut short, or not written by torch.save)"
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        return f"{path} does not load ({_first_line(exc)})"
    return None


def newest_intact(checkpoints: list[Path], damage: Callable[[Path], str | None]) -> Path | None:
    """The first of ``checkpoints`` (newest first) that ``damage`` finds nothing wrong with, logging why each one before
    it is skipped; None (logged, where there were checkpoints) when none is intact: training then starts over."""
    for checkpoint in checkpoints:
        why = damage(checkpoint)
        if why is None:
            return checkpoint
        _log.warning("skipping %s: incomplete (%s); trying the checkpoint before it", checkpoint, why)
    if checkpoints:
        _log.warning("none of the %d checkpoint(s) in %s is intact: training starts over from step 0", len(checkpoints), checkpoints[0].parent)
    return None
