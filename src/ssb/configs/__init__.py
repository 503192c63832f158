"""The configs shipped with ssb (package data, so they work from an installed wheel).

``--config demo`` or ``--config demo.yaml`` names a shipped config when no such file exists where
the command runs; a file of that name in the working directory always wins. A config's ``base:``
is looked up beside it first and among the shipped configs next, so a user's own config can start
from ``base: demo.yaml``. ``ssb configs`` lists them.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent


def shipped_configs() -> dict[str, Path]:
    """{name without .yaml: path} of every shipped config."""
    return {path.stem: path for path in sorted(FOLDER.glob("*.yaml"))}


def resolve_config(path: str | Path) -> Path:
    """``path`` when it exists, else the shipped config of that file name, else ``path`` (for the not-found error)."""
    given = Path(path)
    if given.exists():
        return given
    shipped = shipped_configs().get(given.name.removesuffix(".yaml"))
    return shipped if shipped is not None else given


def summary(path: Path) -> str:
    """A config's first line: a one-line comment saying what it runs."""
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    return first.lstrip("# ").strip() if first.startswith("#") else ""
