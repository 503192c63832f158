"""Whose rollouts fill a question's hinted prompt: its own (the paper), or another question's (a control).

The random-hint controls (``refine.hint: random`` when refining, ``teacher.hint: random`` when
computing teacher targets) both draw the donor here, with a seed per question, so the two controls
show a question the same foreign pair.
"""

from __future__ import annotations

import random


def random_donor(record_id: str, mixed: list[dict], seed: int, option: str) -> dict:
    """Another mixed question, drawn with a seed of its own per question (never the question itself)."""
    others = [r for r in mixed if r["id"] != record_id]
    if not others:
        raise ValueError(f"{option}=random needs at least two questions with mixed rollouts")
    return random.Random(f"{seed}:hint:{record_id}").choice(others)


def hint_donor(record: dict, mixed: list[dict], hint: str, seed: int) -> dict:
    """The question whose rollouts fill ``record``'s hinted prompt: itself, or (hint=random) another one."""
    return record if hint == "own" else random_donor(record["id"], mixed, seed, "refine.hint")


def hinted_prompt(prompts, question: str, donor: dict, correct_index: int, wrong_index: int) -> str:
    """The paper's hinted prompt for ``question``, showing the donor's selected correct and wrong rollouts."""
    return prompts.render_hinted(question, donor["rollouts"][correct_index]["text"], donor["rollouts"][wrong_index]["text"])
