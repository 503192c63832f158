"""Files in a run folder: append-only JSONL journals, atomic JSON writes, and manifests.

Crash safety rests on two rules. A JSON document is written to a temporary file and renamed into
place, so readers see the old or the new version, never half of one. A JSONL journal is only ever
appended to, one flushed and fsynced line per record; a crash can tear at most the last line, and
``read_jsonl`` drops such a tail (``repair_jsonl_tail`` cuts it off before new appends) instead of
parsing it as data. A malformed line anywhere else is corruption and an error naming file and line.
A write that fails (a full disk) is an OSError naming the file, whichever library wrote it (``writing``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

TRACKED_PACKAGES = ("ssb", "torch", "transformers", "accelerate", "peft", "safetensors", "math-verify", "vllm")


class RunFolderError(RuntimeError):
    """A run folder's contents are inconsistent with what a stage expects."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Name ``path`` in an OS error (a full disk) while writing it: safetensors reports one as its own error ("... (os error
    28)") and torch.save as a RuntimeError over it, neither naming the file, so it would read as a library traceback."""
    try:
        yield
    except Exception as exc:
        cause = _os_error(exc)
        if cause is None or cause is exc and exc.filename is not None:
            raise
        raise OSError(cause.errno, cause.strerror, str(path)) from exc


def _os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc.__context__, OSError):  # torch.save into a Python file object
        return exc.__context__
    found = re.search(r"\(os error (\d+)\)", str(exc))  # safetensors
    return OSError(int(found[1]), os.strerror(int(found[1]))) if found else None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path: Path, text_chunks: Iterable[str]) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over ``path``; a failed write names ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would make run folders unreadable to collaborators
    try:
        with writing(path), os.fdopen(fd, "w", encoding="utf-8") as f:
            for chunk in text_chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    _write_atomic(path, [text])


def write_json_atomic(path: Path, obj: Any) -> None:
    _write_atomic(path, [json.dumps(obj, indent=2, ensure_ascii=False), "\n"])


def write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    """Replace ``path`` with ``records``, all or nothing."""
    _write_atomic(path, (json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def _complete_prefix_length(data: bytes, path: Path) -> int:
    """Length of the leading run of complete, parseable lines; errors on corruption mid-file."""
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]
    for number, line in enumerate(lines, start=1):
        try:
            json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and end == len(data):
                # The last complete line is garbage and nothing follows it: a torn write whose
                # newline made it to disk. Treat it as the tail.
                return len(data) - len(line) - 1
            raise RunFolderError(f"{path}:{number}: not valid JSON ({exc.msg}); the file is corrupt") from exc
    return end


def read_jsonl(path: Path) -> list[dict]:
    """All complete records of a journal; a torn last line is ignored (and logged)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    keep = _complete_prefix_length(data, path)
    if keep < len(data):
        _log.warning("%s: ignoring a torn last line (%d bytes) left by an interrupted write", path, len(data) - keep)
    return [json.loads(line) for line in data[:keep].split(b"\n") if line]


def repair_jsonl_tail(path: Path) -> None:
    """Cut a torn last line off ``path`` so that new appends start on a clean line."""
    if not path.exists():
        return
    data = path.read_bytes()
    keep = _complete_prefix_length(data, path)
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())


class JsonlAppender:
    """Appends one durable line per record to a journal."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl_tail(path)
        self.path, self._file = path, open(path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        with writing(self.path):
            self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def fingerprint(obj: Any) -> str:
    """Short stable hash of a JSON-serialisable object (configs, inputs)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


IDENTIFIER = re.compile(r"[A-Za-z0-9_.-]+")


def check_identifier(name: str, what: str) -> str:
    """``name`` when it can safely become one path component (letters, digits, '-', '_', '.'; not '.' or '..');
    a ValueError naming ``what`` otherwise. Every name that becomes a path goes through this."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"{what}: {name!r} is not a name (letters, digits, '-', '_' and '.'; not '.' or '..'): it becomes a path")
    return name


def file_digest(path: Path) -> dict:
    """{"bytes": size, "sha256": hex digest} of a file, read in blocks (a few hundred MB/s: a run folder's outputs in seconds)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def command_line() -> str:
    return " ".join(sys.argv)
