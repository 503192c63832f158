"""The paper's prompts, verbatim (sections 3.1.1 and 3.1.3), as template files users may replace.

``hinted.txt`` holds three placeholders, ``{question}``, ``{chosen_correct_generation}`` and
``{rejected_generation}``; every other brace (``\\boxed{}``) is literal text.

``onpolicy_teacher.txt`` is not the paper's: it is the on-policy arm's teacher prompt (``ssb.arms.onpolicy``),
the student's user turn ``{prompt}`` followed by ``{privileged_context}`` and the instruction to derive
the answer rather than copy it, as OPSD's teacher prompt does. TRL fills it with ``str.format``, so
``teacher_template`` doubles its literal braces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ssb.runfolder.artifacts import read_text_file

HINTED_FIELDS = ("question", "chosen_correct_generation", "rejected_generation")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(HINTED_FIELDS) + r")\}")


def _read(path: str | None, packaged_name: str) -> str:
    if path is None:
        return resources.files(__package__).joinpath(packaged_name).read_text(encoding="utf-8")
    return read_text_file(Path(path))


@dataclass(frozen=True)
class Prompts:
    system: str  # the "expert math tutor" system prompt
    hinted_template: str  # the refinement user prompt with its three placeholders

    def render_hinted(self, question: str, correct: str, wrong: str) -> str:
        """Fill the hinted template in one pass, so texts that contain braces stay untouched."""
        values = {"question": question, "chosen_correct_generation": correct, "rejected_generation": wrong}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.hinted_template)


TEACHER_FIELDS = ("prompt", "privileged_context")
IDENTITY_TEACHER_TEMPLATE = "{prompt}{privileged_context}"  # with an empty context, the teacher's prompt is the student's


def teacher_template(path: str | None = None) -> str:
    """The on-policy teacher prompt (packaged, or the user's file) as TRL's ``teacher_prompt_template``: each placeholder
    once, every other brace doubled so that ``str.format`` writes it as it stands."""
    text = _read(path, "onpolicy_teacher.txt")
    where = path or "packaged onpolicy_teacher.txt"
    pieces = re.split(r"(\{(?:" + "|".join(TEACHER_FIELDS) + r")\})", text)
    found = [p[1:-1] for p in pieces[1::2]]
    for name in TEACHER_FIELDS:
        if found.count(name) != 1:
            raise ValueError(f"{where}: the on-policy teacher prompt must hold {{{name}}} exactly once (found {found.count(name)})")
    return "".join(p if i % 2 else p.replace("{", "{{").replace("}", "}}") for i, p in enumerate(pieces))


def load_prompts(system_path: str | None = None, hinted_path: str | None = None) -> Prompts:
    """The packaged paper prompts, or the user's files in their place."""
    hinted = _read(hinted_path, "hinted.txt")
    missing = [f for f in HINTED_FIELDS if "{" + f + "}" not in hinted]
    if missing:
        where = hinted_path or "packaged hinted.txt"
        raise ValueError(f"{where}: hinted prompt template lacks placeholder(s) {', '.join('{' + f + '}' for f in missing)}")
    return Prompts(system=_read(system_path, "system.txt"), hinted_template=hinted)
