"""OpenVINO IR for the CPU engine, exported once per (source weights, adapter, weight format).

The exporter is optimum-intel (``optimum-cli export openvino``). It pins transformers to an older
range than ssb does (optimum-intel 2.2: ``transformers<5.6``), so it never runs in ssb's own
environment: on first use ssb builds a separate virtual environment under the cache folder holding
the exporter's packages, and makes torch and openvino visible to it through a ``.pth`` file pointing
at this environment's site-packages. The packages are the full resolved set in the lock file shipped
beside this module (``openvino_exporter.lock.txt``: every package at one version, with the sha256 of
its wheels for CPython 3.11, installed with ``--no-deps --require-hashes``; on another Python, the same
versions without the hashes), so the environment built on a user's machine is the tested one; a
package already in ssb's environment at the locked version is used from there. Nothing in ssb's
environment is installed, removed or shadowed. Set ``SSB_OPENVINO_EXPORTER`` to a Python that already
has optimum-intel to skip building it (on a platform the lock does not cover).

An adapter is merged into the base weights by PEFT (``merge_and_unload``) and the merged model is
exported like any other: the engine then runs one plain model at full speed, and the adapter's
effect is exactly PEFT's (no second implementation of LoRA scaling).

The cache key hashes the source weights' bytes (not their path), the adapter's weights, the weight
format and the exporter's pins, so a changed model or adapter is re-exported, never served stale.
Every adapter evaluated gets its own export (about 0.6 GB for a 0.5B model in int8), so the cache is
kept under ``SSB_OPENVINO_CACHE_GB`` (default 20) by removing the least recently used exports after
each new one; a removed export is simply exported again when next needed.

The cache is shared by every process of the machine (two run folders evaluating one adapter ask for one
key), so each key has two locks (``flock`` on files beside its folder). ``.KEY.lock`` is its use: a process
using the entry holds it shared (``use_export``, from before its export until the engine may no longer
compile the IR, which happens after the export and again after the backend's ``close``), and pruning takes it
exclusively without waiting, so it skips an entry in use and removes one only when no one uses it.
``.KEY.export-lock`` is its export: the exporter holds it exclusively while it exports, so one process
exports and the others wait for that export alone, then find it (never for the exporter's use of it, which
lasts as long as its backend). An export is
written to a staging folder and published by renaming it into place, and pruning renames an entry
away before deleting it, so a folder under a key's name is always a complete export; its
``ssb_export.json`` lists every file with its size, and a folder missing any is exported again.
Nothing in the cache is written through a link: lock files are opened with ``O_NOFOLLOW``, records are
renamed into place, and a link where a lock, a staging folder or the exporter's environment goes is an
error naming it.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssb.runfolder.artifacts import RunFolderError, refuse_link, write_text_atomic

_log = logging.getLogger(__name__)

# optimum-intel is installed without its declared dependencies: it requires torchvision, which is not
# used to export a text model and whose PyPI build breaks `import transformers` next to a CPU-only
# torch build. EXPORTER_DEPENDENCIES are the rest of what it needs, pinned to versions it supports.
EXPORTER_PACKAGES = ["optimum-intel==2.2.0"]
EXPORTER_DEPENDENCIES = ["optimum==2.3.0", "transformers==5.5.4", "nncf==3.4.0", "huggingface-hub>=1.3,<1.22",
                         "requests>=2.33,<3", "setuptools",
                         # optimum imports datasets when present; the environment's may need a newer huggingface-hub
                         "datasets>=4,<5"]
# Every package the environment installs, at the version and with the hashes tested, resolved from the
# lists above by dev/lock_openvino_exporter.py; torch and openvino are ssb's own (the .pth file).
EXPORTER_LOCK = Path(__file__).with_name("openvino_exporter.lock.txt")
SHARED_PACKAGES = frozenset({"torch", "openvino"})
EXPORTER_LOCK_PYTHON = (3, 11)  # the CPython whose wheels the lock's hashes are of
EXPORT_FILES = ("openvino_model.xml", "openvino_model.bin")
EXPORT_RECORD = "ssb_export.json"  # written last into an export, before it is published
DEFAULT_CACHE_GB = 20.0
# An export interrupted this long ago has no live exporter writing to it (an export takes minutes).
STALE_STAGING_SECONDS = 24 * 3600


class ExportError(RuntimeError):
    """The OpenVINO export failed; the message ends with the exporter's last output lines."""


@functools.lru_cache(maxsize=64)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of one file; cached per (path, size, mtime) so that every stage and adapter of a run
    does not re-read the same gigabyte of base weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        stat = path.stat()
        digest.update(path.name.encode())
        digest.update(_file_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns).encode())
    return digest.hexdigest()


def export_input_hash(folder: Path) -> str:
    """sha256 of a model (or adapter) folder's weights and config: what the export depends on."""
    files = [p for p in folder.iterdir() if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name in
                                                             ("config.json", "adapter_config.json"))]
    if not files:
        raise FileNotFoundError(f"{folder}: no weights (*.safetensors or *.bin) to export")
    return _hash_files(files)


def read_exporter_lock(text: str) -> list[dict]:
    """The entries of a lock file's text: ``{"name", "version", "marker" (or None), "hashes"}`` per package.

    Raises ValueError on a line that is not ``name==version [; marker]`` followed by ``--hash=sha256:...``."""
    entries = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split(" --hash=")
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(?:;\s*(.+))?", requirement.strip())
        hashes = [option.strip().removeprefix("sha256:") for option in options]
        if match is None or not hashes or not all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes):
            raise ValueError(f"not a pinned requirement with sha256 hashes: {line[:120]}")
        entries.append({"name": match[1], "version": match[2], "marker": match[3] and match[3].strip(), "hashes": hashes})
    return entries


def unhashed_requirements(text: str) -> str:
    """A lock file's packages as plain ``name==version [; marker]`` lines: the versions without the hashes."""
    return "".join(f"{e['name']}=={e['version']}" + (f" ; {e['marker']}" if e["marker"] else "") + "\n" for e in read_exporter_lock(text))


def exporter_lock_sha256() -> str:
    """What the exporter environment and its exports depend on: the lock file's bytes."""
    return hashlib.sha256(EXPORTER_LOCK.read_bytes()).hexdigest()[:16]


def export_key(source: Path, adapter: Path | None, weight_format: str) -> str:
    parts = {"source": export_input_hash(source), "adapter": export_input_hash(adapter) if adapter else None,
             "weight_format": weight_format, "exporter_lock": exporter_lock_sha256()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def exporter_venv(cache_dir: Path) -> Path:
    """Where the exporter environment for this Python and lock file lives in the cache."""
    pins = hashlib.sha256(json.dumps([sys.version_info[:2], exporter_lock_sha256()]).encode()).hexdigest()[:12]
    return cache_dir / "openvino-exporter" / pins


def exporter_python(cache_dir: Path) -> Path:
    """A Python that can run ``optimum-cli export openvino``: $SSB_OPENVINO_EXPORTER or a cached venv."""
    if os.environ.get("SSB_OPENVINO_EXPORTER"):
        return Path(os.environ["SSB_OPENVINO_EXPORTER"])
    venv = exporter_venv(cache_dir)
    python = venv / "bin" / "python"
    # rmtree cannot remove a link (and says so only to ignore_errors), so venv and pip would write into its target.
    refuse_link(venv)
    if (venv / "ready").exists():
        return python
    _log.info("building the OpenVINO exporter environment in %s (once; about a minute)", venv)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # Before any install, so pip counts this environment's packages as present and installs only what
    # the exporter needs in another version (those land in the venv and come first on its sys.path).
    write_text_atomic(Path(site, "_ssb_shared_site.pth"), "\n".join(sorted(shared)) + "\n")
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    requirements, checks = EXPORTER_LOCK, ["--require-hashes"]
    if sys.version_info[:2] != EXPORTER_LOCK_PYTHON:
        # Other Pythons take other wheels, whose hashes the lock does not hold: the same versions, unchecked.
        _log.warning("the OpenVINO exporter lock holds the wheel hashes of CPython %d.%d; on %d.%d its versions are installed "
                     "without hash checks", *EXPORTER_LOCK_PYTHON, *sys.version_info[:2])
        requirements, checks = venv / "exporter-versions.txt", []
        write_text_atomic(requirements, unhashed_requirements(EXPORTER_LOCK.read_text(encoding="utf-8")))
    _run(pip + ["--no-deps", *checks, "--only-binary=:all:", "-r", str(requirements)],
         f"installing the OpenVINO exporter's locked packages ({EXPORTER_LOCK.name}; where it does not cover this platform, "
         "set SSB_OPENVINO_EXPORTER to a Python with optimum-intel)")
    write_text_atomic(venv / "ready", exporter_lock_sha256() + "\n")
    return python


def _run(command: list[str], what: str, log: Path | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if log is not None:
        write_text_atomic(log, result.stdout + result.stderr)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise ExportError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{tail}")


def write_merged_model(source: Path, adapter: Path, target: Path) -> None:
    """Save the base model with ``adapter`` merged in (PEFT's merge) as a plain model folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ssb.lora import load_adapter

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    merged = load_adapter(model, adapter).merge_and_unload()
    merged.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)


def export_is_complete(target: Path) -> bool:
    """Whether ``target`` holds a whole export: its record and every file the record lists, at its size."""
    try:
        record = json.loads((target / EXPORT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = record.get("files") or dict.fromkeys(EXPORT_FILES)  # exports recorded before the record listed its files
    for name, size in files.items():
        path = target / name
        if not path.is_file() or (size is not None and path.stat().st_size != size):
            return False
    return True


_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _open_lock(path: Path) -> int:
    """A descriptor of the lock file ``path``, created if missing, never through a link (a ``RunFolderError`` naming it):
    opening a dangling link with ``O_CREAT`` would create its target."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path)
        raise


def _flock(fd: int, operation: int, exports: Path, waiting_for: str) -> None:
    """``flock`` a lock file, waiting for a holder it conflicts with (logged as ``waiting_for``); where the filesystem has
    no locks, a warning."""
    try:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            _log.info("OpenVINO cache: %s; waiting for it", waiting_for)
            fcntl.flock(fd, operation)
    except OSError as exc:
        if exc.errno not in _NO_LOCKS:
            raise
        _log.warning("%s: this filesystem cannot lock files (%s); concurrent exports of one model may collide", exports, exc)


@contextmanager
def _entry_lock(exports: Path, key: str) -> Iterator[bool]:
    """Hold cache entry ``key``'s lock exclusively for the block (yields True), or yield False at once when another
    process (or thread) uses it, or its lock file is a link. The lock file is never removed: removing it would let one
    process lock the old file and another a new one at the same path."""
    try:
        fd = _open_lock(exports / f".{key}.lock")
    except RunFolderError as exc:  # pruning is housekeeping: the entry stays, and its next use names the link
        _log.warning("OpenVINO cache: not removing %s: %s", exports / key, exc)
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                raise
        yield True
    finally:
        os.close(fd)  # releases the flock


def _remove_entry(folder: Path) -> None:
    """Rename ``folder`` out of its key's name, then delete it: a kill in between leaves only a ``.removing`` folder."""
    doomed = folder.with_name(f".{folder.name}.removing-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


class ExportInUse:
    """An export a process is using: ``path`` and a shared lock on its cache entry, which keeps any prune from removing
    it. ``release`` drops the lock (as does garbage collection); the entry may be pruned after that."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._release = weakref.finalize(self, os.close, fd)

    @property
    def held(self) -> bool:
        return self._release.alive

    def release(self) -> None:
        self._release()


def use_export(source: Path, cache_dir: Path, weight_format: str = "int8", adapter: Path | None = None,
               trust_remote_code: bool = False) -> ExportInUse:
    """The cached OpenVINO IR of ``source`` (a local model folder) with ``adapter`` merged in, exported if needed, held
    in use until released."""
    limit_bytes = cache_limit_bytes()  # a bad value stops here, not after minutes of exporting
    key = export_key(source, adapter, weight_format)
    exports = cache_dir / "openvino"
    target = exports / key
    exports.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(exports / f".{key}.lock")
    exported = False
    try:
        # Shared with every other user, exporter included: only a prune removing the entry holds it exclusively (briefly),
        # and none can start while this is held, so what is found complete under it stays so.
        _flock(fd, fcntl.LOCK_SH, exports, f"another process is removing {target}")
        if not export_is_complete(target):
            # The export has its own lock, which the exporter holds only while it exports: waiting on the use lock
            # instead would mean waiting for the exporter's whole use of the export, as long as its backend lives.
            export_fd = _open_lock(exports / f".{key}.export-lock")
            try:
                _flock(export_fd, fcntl.LOCK_EX, exports, f"another process is exporting {target}")
                if not export_is_complete(target):  # another process's export, finished while this one waited
                    _export(source, exports, key, weight_format, adapter, trust_remote_code, exporter_python(cache_dir))
                    exported = True
            finally:
                os.close(export_fd)  # releases its flock
        os.utime(target)  # its last use, which decides what pruning removes first
    except BaseException:
        os.close(fd)
        raise
    in_use = ExportInUse(target, fd)
    if exported:
        prune_exports(exports, keep=target, limit_bytes=limit_bytes)
    return in_use


def export_openvino(source: Path, cache_dir: Path, weight_format: str = "int8", adapter: Path | None = None,
                    trust_remote_code: bool = False) -> Path:
    """The cached OpenVINO IR folder of ``source``, with ``adapter`` merged in, not held: a prune may remove it once this
    returns, so an engine that compiles it later holds it with ``use_export``."""
    in_use = use_export(source, cache_dir, weight_format, adapter, trust_remote_code)
    in_use.release()
    return in_use.path


def _export(source: Path, exports: Path, key: str, weight_format: str, adapter: Path | None, trust_remote_code: bool,
            python: Path) -> None:
    """Export into a staging folder and rename it into place as ``exports/key``; the caller holds the key's locks."""
    target, staging = exports / key, exports / f".{key}.exporting"
    refuse_link(staging)  # rmtree cannot remove a link (silently, with ignore_errors): the export would go into its target
    shutil.rmtree(staging, ignore_errors=True)  # a dead exporter's: a live one would hold the export lock
    staging.mkdir(parents=True)
    start = time.monotonic()
    model_folder = source
    if adapter is not None:
        model_folder = staging / "merged"
        write_merged_model(source, adapter, model_folder)
    command = [str(python), "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model", str(model_folder),
               "--task", "text-generation-with-past", "--weight-format", weight_format, str(staging / "ir")]
    if trust_remote_code:
        command.append("--trust-remote-code")
    _log.info("exporting %s%s to OpenVINO IR (%s weights; once, cached in %s)", source, f" + adapter {adapter}" if adapter else "",
              weight_format, target)
    _run(command, f"exporting {model_folder} to OpenVINO", log=staging / "export.log")
    ir = staging / "ir"
    missing = [name for name in EXPORT_FILES if not (ir / name).is_file()]
    if missing:
        raise ExportError(f"exporting {model_folder} to OpenVINO wrote no {', '.join(missing)} in {ir}")
    files = {str(p.relative_to(ir)): p.stat().st_size for p in sorted(ir.rglob("*")) if p.is_file()}
    provenance = {"source": str(source), "adapter": str(adapter) if adapter else None, "weight_format": weight_format,
                  "exporter_lock": exporter_lock_sha256(), "seconds": round(time.monotonic() - start, 1), "files": files}
    write_text_atomic(ir / EXPORT_RECORD, json.dumps(provenance, indent=2) + "\n")
    if target.exists():  # an incomplete one (from before exports were published whole)
        _remove_entry(target)
    os.rename(ir, target)
    shutil.rmtree(staging, ignore_errors=True)
    _log.info("exported in %.0fs", provenance["seconds"])


def cache_limit_bytes() -> int:
    """``SSB_OPENVINO_CACHE_GB`` (GiB) as bytes: how much the exports may take together.

    Raises a one-line ValueError naming the variable unless it is a number of GiB > 0 whose bytes are finite."""
    value = os.environ.get("SSB_OPENVINO_CACHE_GB", str(DEFAULT_CACHE_GB))
    shown = repr(value[:40] + ("..." if len(value) > 40 else ""))  # the environment may hold anything, at any length
    try:
        gigabytes = float(value)
    except ValueError:
        raise ValueError(f"SSB_OPENVINO_CACHE_GB={shown}: not a number of GiB") from None
    if not math.isfinite(gigabytes * 2**30):  # inf, nan, and 1e308 GiB, whose bytes overflow
        raise ValueError(f"SSB_OPENVINO_CACHE_GB={shown}: must be a finite number of GiB (default {DEFAULT_CACHE_GB:g})")
    if gigabytes <= 0:
        raise ValueError(f"SSB_OPENVINO_CACHE_GB={shown}: must be > 0")
    return int(gigabytes * 2**30)


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    except FileNotFoundError:  # renamed away by another process's pruning meanwhile
        return 0


def prune_exports(exports: Path, keep: Path, limit_bytes: int, now: float | None = None) -> list[Path]:
    """Remove the least recently used exports in ``exports`` until they take at most ``limit_bytes``
    (``keep``, the export in use, is never removed, nor one any process is exporting or holds in use: an
    entry is removed only under its lock, taken exclusively without waiting), staging folders of exports
    interrupted over a day ago, and what an interrupted removal left. Last use is a folder's mtime, which a
    cache hit refreshes. Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    for leftover in exports.glob(".*.removing-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for staging in exports.glob(".*.exporting"):
        if now - staging.stat().st_mtime > STALE_STAGING_SECONDS:
            with _entry_lock(exports, staging.name[1:-len(".exporting")]) as free:
                if free:
                    shutil.rmtree(staging, ignore_errors=True)
                    removed.append(staging)
    folders = [p for p in exports.iterdir() if p.is_dir() and not p.name.startswith(".")]
    sizes = {folder: _folder_bytes(folder) for folder in folders}
    last_used = {folder: folder.stat().st_mtime for folder in folders}
    total = sum(sizes.values())
    for folder in sorted(folders, key=last_used.get):
        if total <= limit_bytes:
            break
        if folder == keep:
            continue
        with _entry_lock(exports, folder.name) as free:
            # Busy, or used since it was listed: the next least recently used goes instead.
            if not free or not folder.exists() or folder.stat().st_mtime != last_used[folder]:
                continue
            _remove_entry(folder)
        total -= sizes[folder]
        removed.append(folder)
    if removed:
        _log.info("OpenVINO cache: removed %d least recently used export(s); %.1f GiB left (limit %.1f, "
                  "SSB_OPENVINO_CACHE_GB)", len(removed), total / 2**30, limit_bytes / 2**30)
    return removed
