"""The paper's prompts, verbatim (sections 3.1.1 and 3.1.3), as template files users may replace.

``hinted.txt`` holds three placeholders, ``{question}``, ``{chosen_correct_generation}`` and
``{rejected_generation}``; every other brace (``\\boxed{}``) is literal text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

HINTED_FIELDS = ("question", "chosen_correct_generation", "rejected_generation")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(HINTED_FIELDS) + r")\}")


def _read(path: str | None, packaged_name: str) -> str:
    if path is None:
        return resources.files(__package__).joinpath(packaged_name).read_text(encoding="utf-8")
    return Path(path).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Prompts:
    system: str  # the "expert math tutor" system prompt
    hinted_template: str  # the refinement user prompt with its three placeholders

    def render_hinted(self, question: str, correct: str, wrong: str) -> str:
        """Fill the hinted template in one pass, so texts that contain braces stay untouched."""
        values = {"question": question, "chosen_correct_generation": correct, "rejected_generation": wrong}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.hinted_template)


def load_prompts(system_path: str | None = None, hinted_path: str | None = None) -> Prompts:
    """The packaged paper prompts, or the user's files in their place."""
    hinted = _read(hinted_path, "hinted.txt")
    missing = [f for f in HINTED_FIELDS if "{" + f + "}" not in hinted]
    if missing:
        where = hinted_path or "packaged hinted.txt"
        raise ValueError(f"{where}: hinted prompt template lacks placeholder(s) {', '.join('{' + f + '}' for f in missing)}")
    return Prompts(system=_read(system_path, "system.txt"), hinted_template=hinted)
