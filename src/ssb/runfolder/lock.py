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

The ranks of one multi-process launch (``torchrun``, ``accelerate launch``) run the same command on one
folder; rank 0 holds it for all of them. The other ranks take no lock only where they are known to be
that launch's: a rank of an initialised ``torch.distributed`` group of several processes, or (before the
group exists, when the CLI takes the lock) a process whose launcher variables, host and parent process
(torch's elastic launcher, which starts every rank of a host) equal those the folder's holder recorded as rank 0.
Launch variables left in a shell exempt nothing: the processes started from it have the shell for a parent.
Other launchers (``srun``, ``mpirun``, a wrapper that ``torchrun --no-python`` runs and that does not ``exec``
the command) are not recognised, so their ranks are refused.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssb.runfolder.artifacts import RunFolderError, command_line, refuse_link, utc_now

_log = logging.getLogger(__name__)

# Resolved run folder -> [lock file descriptor, nesting depth]. Process-wide on purpose: two opens of
# one file in one process get two flocks that conflict with each other, so a process that already
# holds a folder must reuse its descriptor when it enters again.
_held: dict[Path, list] = {}


# What torchrun's agent (which accelerate launch runs too) sets in every process it starts.
_LAUNCH_VARIABLES = ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE")
# How long a rank other than 0 waits for its rank 0 to take the folder: the ranks start together, in no set order.
FOLLOWER_WAIT_SECONDS = 60.0


def _launcher_parent() -> bool:
    """Whether this process's parent is torch's elastic launcher: ``torchrun``, ``python -m torch.distributed.run``, or
    ``accelerate launch``, which runs that launcher in its own process. False where there is no ``/proc`` to tell."""
    # The launcher starts every rank of its host, but two processes started from one shell share a parent too (the
    # shell), and with a launch's variables left exported there they would pass for the ranks of one launch.
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    if Path(argv[0]).name.startswith("python"):  # an interpreter running the launcher's script, or its module with -m
        argv = argv[2:] if argv[1:2] == ["-m"] else argv[1:]
    program = Path(argv[0]).name if argv else ""
    return program in ("torchrun", "torch.distributed.run", "accelerate-launch") or (program == "accelerate" and argv[1:2] == ["launch"])


def _launch() -> dict | None:
    """The launch of several processes that started this one, as its holder records it; None where there is none."""
    env = os.environ
    if any(name not in env for name in (*_LAUNCH_VARIABLES, "RANK", "LOCAL_RANK")) or not env["WORLD_SIZE"].isdigit():
        return None
    if int(env["WORLD_SIZE"]) <= 1 or not _launcher_parent():
        return None
    # The launcher's pid is what no leftover variable can name, and it tells this launch from another with the same variables.
    return {"host": socket.gethostname(), "launcher_pid": os.getppid(), **{name: env[name] for name in _LAUNCH_VARIABLES}}


def _in_process_group() -> bool:
    """Whether this process is a rank other than 0 of an initialised ``torch.distributed`` group of several processes."""
    dist = sys.modules.get("torch.distributed")  # not imported here: a process with a group has imported it
    return dist is not None and dist.is_available() and dist.is_initialized() and dist.get_rank() != 0 and dist.get_world_size() > 1


def _held_by(lock_file: Path) -> dict | None:
    """The description of the process holding ``lock_file``: None when no one holds it, {} when its holder has not
    described itself (yet)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # free; dropped at once by the close below
        return None
    except BlockingIOError:
        try:
            holder = json.loads(lock_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}
    finally:
        os.close(fd)


def _follows_its_rank_zero(run_dir: str | Path) -> bool:
    """Whether this process is a rank other than 0 of a launch whose rank 0 holds ``run_dir``; waits for that rank 0
    to take the folder while no one holds it."""
    launch = _launch()
    if launch is None or os.environ["RANK"] == "0":
        return False
    lock_file = Path(run_dir) / ".ssb" / "lock"
    deadline = time.monotonic() + FOLLOWER_WAIT_SECONDS
    while True:
        try:
            holder = _held_by(lock_file)
        except OSError:  # no locks on this filesystem: nothing to follow
            return False
        if holder:
            return holder.get("launch") == launch
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if holder is None:
        _log.warning("%s: rank 0 of this launch did not take the run folder within %.0f s; this rank (RANK=%s) takes it instead",
                     run_dir, FOLLOWER_WAIT_SECONDS, os.environ["RANK"])
    return False


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
    refuse_link(lock_file.parent)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)  # the holder's description goes nowhere else
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(lock_file)
        raise
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
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now(), "command": command_line(),
              # what the other ranks of a launch compare with their own, to follow this one without a lock
              "launch": _launch() if os.environ.get("RANK") == "0" else None}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return fd


@contextmanager
def hold_run_folder(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder ``run_dir`` for the duration of the block; re-entrant within a process.

    Raises ``RunFolderError`` naming the holder (pid, host, start time, command) when another
    process holds it or a run folder above it. Creates ``run_dir/.ssb`` if needed. A rank other than 0 of a
    multi-process launch whose rank 0 holds the folder takes no lock (the module's docstring says how it is known).
    """
    if _in_process_group() or _follows_its_rank_zero(run_dir):
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
