"""One ssb process per run folder at a time.

Stages resume from whatever the run folder holds, so two processes working on one folder (a second
``ssb run`` started by mistake, ``ssb distill`` while ``ssb run`` is still at it) would interleave
journal lines and overwrite each other's manifests and checkpoints. ``hold_run_folder`` takes an
exclusive ``flock`` on ``<run_dir>/.ssb/lock`` for as long as a command runs; a second process
stops at once with a message naming the holder. The kernel drops a ``flock`` when its holder
exits, however it exits (``kill -9``, out of memory), so there is never a stale lock to clean up:
the file's contents only describe the holder, for the message. The file itself is never deleted;
removing it would let one process lock the old file and another a new one at the same path.

Run folders nest: ``ssb run --rounds N`` keeps round r in ``RUN_DIR/round-r/``, a run folder of its own.
The rounds driver holds each round's folder while it runs that round, and a command on a folder inside
a run folder another process holds is refused, so a command on ``round-2/`` stops while the run that
owns it is at work, and the run stops at round 2 if such a command got there first.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssb.artifacts import RunFolderError, command_line, utc_now

_log = logging.getLogger(__name__)

# Resolved run folder -> [lock file descriptor, nesting depth]. Process-wide on purpose: two opens of
# one file in one process get two flocks that conflict with each other, so a process that already
# holds a folder must reuse its descriptor when it enters again.
_held: dict[Path, list] = {}


def _coordinates_run_folder() -> bool:
    # Under torchrun or accelerate launch every rank runs the same command on the same run folder;
    # rank 0 decides what gets written and the other ranks follow it, so rank 0 holds the lock for
    # all of them (the others would only find it taken by their own rank 0).
    # RANK alone (set by a cluster for other reasons) does not make a process a follower.
    return os.environ.get("RANK", "0") == "0" or int(os.environ.get("WORLD_SIZE", "1")) <= 1


def _describe_holder(lock_file: Path) -> str:
    try:
        holder = json.loads(lock_file.read_text(encoding="utf-8"))
        return f"pid {holder['pid']} on host {holder['host']} since {holder['started']} (command: {holder['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        # The holder may be between taking the lock and writing its description.
        return f"another process (no readable description in {lock_file})"


_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def _flock_soon(fd: int, operation: int) -> None:
    """``flock`` without waiting for a holder, but past a process that only checks the lock (for a microsecond,
    ``_refuse_inside_held_folder``); BlockingIOError when it stays taken."""
    for attempt in range(3):
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == 2:
                raise
            time.sleep(0.05)


def _refuse_inside_held_folder(run_dir: str | Path) -> None:
    """Raise ``RunFolderError`` when a run folder above ``run_dir`` (one with a lock file) is held by another process."""
    for ancestor in Path(run_dir).resolve().parents:
        lock_file = ancestor / ".ssb" / "lock"
        if ancestor in _held or not lock_file.is_file():
            continue
        fd = os.open(lock_file, os.O_RDONLY)
        try:
            # A shared lock is refused while the holder's exclusive one stands; taken, it is dropped at once.
            _flock_soon(fd, fcntl.LOCK_SH)
        except BlockingIOError:
            raise RunFolderError(f"{run_dir} is inside the run folder {ancestor}, which is in use by {_describe_holder(lock_file)}; "
                                 "wait for it to finish or stop it") from None
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                raise
        finally:
            os.close(fd)


def _acquire(run_dir: str | Path) -> int | None:
    """Lock ``run_dir`` for this process; its descriptor, or None where the filesystem has no locks."""
    lock_file = Path(run_dir) / ".ssb" / "lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock_soon(fd, fcntl.LOCK_EX)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderError(f"{run_dir} is in use by {_describe_holder(lock_file)}; wait for it to finish or stop it") from None
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _NO_LOCKS:
            raise
        _log.warning("%s: this filesystem cannot lock files (%s); nothing stops a second ssb process from using the folder", run_dir, exc)
        return None
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now(), "command": command_line()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return fd


@contextmanager
def hold_run_folder(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder ``run_dir`` for the duration of the block; re-entrant within a process.

    Raises ``RunFolderError`` naming the holder (pid, host, start time, command) when another
    process holds it or a run folder above it. Creates ``run_dir/.ssb`` if needed.
    """
    if not _coordinates_run_folder():
        yield
        return
    key = Path(run_dir).resolve()
    if key not in _held:
        _refuse_inside_held_folder(run_dir)  # before anything is created in run_dir
        _held[key] = [_acquire(run_dir), 0]
    _held[key][1] += 1
    try:
        yield
    finally:
        _held[key][1] -= 1
        if _held[key][1] == 0:
            fd = _held.pop(key)[0]
            if fd is not None:
                os.close(fd)  # releases the flock
