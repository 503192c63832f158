"""Files in a run folder: append-only JSONL journals, atomic JSON writes, and manifests.

Crash safety rests on two rules. A JSON document is written to a temporary file and renamed into
place, so readers see the old or the new version, never half of one. A JSONL journal is only ever
appended to, one flushed and fsynced line per record; a crash can tear at most the last line, and
``read_jsonl`` drops such a tail (``repair_jsonl_tail`` cuts it off before new appends) instead of
parsing it as data. A malformed line anywhere else is corruption and an error naming file and line.
A write that fails (a full disk) is an OSError naming the file, whichever library wrote it (``writing``).

Every write goes through this module, and none goes through a link: a journal or lock is opened with ``O_NOFOLLOW``,
a document is renamed into place, and a link where ssb would write is a ``RunFolderError`` naming it, so a link left
in a run folder (by mistake or on purpose) never makes ssb overwrite a file outside it (``check_no_links``).
Reading is bounded the same way for every JSON file ssb reads back (``read_json_file``): a damaged, non-UTF-8 or
absurdly nested file is one error naming it.
"""

from __future__ import annotations

import errno
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

from ssb.runfolder.file_modes import umask_mode

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


def refuse_link(path: Path) -> None:
    """A ``RunFolderError`` naming ``path`` when it is a link: ssb writes only plain files and folders it made."""
    if path.is_symlink():
        raise RunFolderError(f"{path}: a link (to {os.readlink(path)}); ssb does not write through links. Remove the link "
                             "(or replace it by the file itself), then run the command again")


def check_no_links(root: Path) -> None:
    """Refuse a link anywhere inside the folder ``root`` (``root`` itself may be one: a run folder on another disk).

    The files a stage writes are opened without following a link, but a linked *folder* on the way (``eval/`` pointing
    elsewhere) would still lead outside; a run folder has no business holding links, so a stage looks once, before it
    writes, rather than at every path it builds."""
    for parent, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            refuse_link(Path(parent, name))


def open_for_writing(path: Path, append: bool = False) -> int:
    """A descriptor for writing ``path`` (created with the umask's mode, truncated unless ``append``), never through a
    link at ``path``: the one way ssb opens a file it writes in place (journals, locks, staging files)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        return os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path)
        raise


def _write_atomic(path: Path, text_chunks: Iterable[str]) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over ``path``; a failed write names ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_link(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, umask_mode())  # mkstemp's 0600 would make run folders unreadable to collaborators
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
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting past the parser's depth
            if number == len(lines) and end == len(data):
                # The last complete line is garbage and nothing follows it: a torn write whose
                # newline made it to disk. Treat it as the tail.
                return len(data) - len(line) - 1
            raise RunFolderError(f"{path}:{number}: not valid JSON ({_json_problem(exc)}); the file is corrupt") from None
    return end


def _json_problem(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 at byte {exc.start}"
    if isinstance(exc, RecursionError):
        return "nested too deep"
    return str(exc)


def read_text_file(path: Path) -> str:
    """The text of a user's file (a prompt, a chat template); one that is not UTF-8 is a ValueError naming it."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def read_json_file(path: Path) -> dict:
    """The JSON object in ``path`` (which must exist); a ``RunFolderError`` naming the file when it is not UTF-8, not
    JSON, nested past the parser's depth, or not an object: what ssb reads back from a run
    folder, an export or the cache (manifests, stats, recorded inputs, summaries) is checked as it is read."""
    return parse_json(path.read_bytes(), path)


def parse_json(data: bytes, path: Path) -> dict:
    """``read_json_file`` on bytes already read from ``path``."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RunFolderError(f"{path}: not a valid JSON file ({_json_problem(exc)}); put back the file ssb wrote, or redo the "
                             "stage that wrote it") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{path}: holds a JSON {type(value).__name__}, not the dict ssb writes there; put back the file "
                             "ssb wrote, or redo the stage that wrote it")
    return value


def read_jsonl(path: Path) -> list[dict]:
    """All complete records of a journal; a torn last line is ignored (and logged)."""
    return parse_jsonl(path.read_bytes(), path) if path.exists() else []


def parse_jsonl(data: bytes, path: Path) -> list[dict]:
    """``read_jsonl`` on bytes already read from ``path``."""
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
        fd = open_for_writing(path, append=True)
        try:
            os.ftruncate(fd, keep)
            os.fsync(fd)
        finally:
            os.close(fd)


class JsonlAppender:
    """Appends one durable line per record to a journal."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl_tail(path)
        self.path, self._file = path, os.fdopen(open_for_writing(path, append=True), "a", encoding="utf-8")

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


def digest_problem(path: Path, digest: dict) -> str | None:
    """What is wrong with ``path`` against its recorded ``digest`` ({"bytes", "sha256"}), or None when it matches."""
    if not path.is_file():
        return "is missing"
    if path.stat().st_size != digest["bytes"]:
        return f"has {path.stat().st_size} bytes, not the {digest['bytes']} it had"
    return _sha256_problem(file_digest(path)["sha256"], digest)


def bytes_problem(data: bytes, digest: dict) -> str | None:
    """``digest_problem`` for a file's bytes already read, so that what is checked is what is used."""
    if len(data) != digest["bytes"]:
        return f"has {len(data)} bytes, not the {digest['bytes']} it had"
    return _sha256_problem(hashlib.sha256(data).hexdigest(), digest)


def _sha256_problem(now: str, digest: dict) -> str | None:
    return f"has changed (sha256 {now[:16]}, not {digest['sha256'][:16]})" if now != digest["sha256"] else None


def changed_since(path: Path, problem: str, stage: str, how: str, run_dir: Path) -> str:
    """The one message for a file that is not as the finished stage ``stage`` left (``how``: "wrote") or read it."""
    command = stage.split("/")[0]
    return (f"{path}: {problem} since stage '{stage}' {how} it in {run_dir}, so what it computed cannot be trusted. "
            f"Put the file back, or redo the stage: ssb {command} --force (ssb run: --force {command})")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def command_line() -> str:
    return " ".join(sys.argv)
