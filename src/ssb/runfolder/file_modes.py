"""The permission bits of what ssb writes: those the process umask gives a new file, also where a library decides otherwise.

safetensors 0.8 writes every file (``save_file``, and through it transformers' and PEFT's ``save_pretrained``) into a
temporary file created 0600 and renamed into place (safetensors/safetensors#782), so weights, adapters and teacher
targets would stay private to their writer whatever the umask, while every other file follows it: a run folder shared
with a group could not be evaluated from another account. Each place that writes safetensors calls ``follow_umask``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def umask_mode(base: int = 0o666) -> int:
    """base & ~umask: the mode ``open`` gives a new file (``mkdir`` a new folder, with base 0o777)."""
    try:  # Linux shows the umask without changing it, which the change-and-restore below does for a moment, in every thread
        found = re.search(r"^Umask:\s*([0-7]+)$", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        found = None
    if found:
        umask = int(found[1], 8)
    else:
        umask = os.umask(0o022)
        os.umask(umask)
    return base & ~umask


def follow_umask(path: Path) -> None:
    """Give ``path``, or each ``*.safetensors`` file directly in the folder ``path`` (what ``save_pretrained`` leaves),
    the mode the umask gives a new file. Never through a link: one at ``path`` is an OSError naming it."""
    path, mode = Path(path), umask_mode()
    for file in sorted(path.glob("*.safetensors")) if path.is_dir() and not path.is_symlink() else [path]:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
