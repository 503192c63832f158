"""The configs shipped with ssb (package data, so they work from an installed wheel).

``--config demo`` or ``--config demo.yaml`` names a shipped config when no ``demo.yaml`` exists in
the working directory (a file there always wins); a path with a folder in it is only ever that
file. A config's ``base:`` is looked up beside it first and among the shipped configs next, so a
user's own config can start from ``base: demo.yaml``. ``ssb configs`` lists them.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent


def shipped_configs() -> dict[str, Path]:
    """{name without .yaml: path} of every shipped config."""
    return {path.stem: path for path in sorted(FOLDER.glob("*.yaml"))}


def resolve_config(path: str | Path) -> Path:
    """The config file ``path`` names: the file itself when it exists; for a bare name (``demo``,
    ``demo.yaml``, or the old source-checkout spelling ``configs/demo.yaml``) that is no file here,
    ``NAME.yaml`` in the working directory, else the shipped config; otherwise ``path`` unchanged, so
    that loading it reports the missing file (a mistyped path never falls back to a shipped config).
    """
    given = Path(path)
    if given.is_file() or given.parent not in (Path("."), Path("configs")):
        return given
    name = given.name.removesuffix(".yaml")
    local = Path(f"{name}.yaml")
    if local.is_file():
        return local
    return shipped_configs().get(name, given)


def summary(path: Path) -> str:
    """A config's first line: a one-line comment saying what it runs."""
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    return first.lstrip("# ").strip() if first.startswith("#") else ""
