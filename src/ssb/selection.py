"""Choosing the correct and the wrong rollout shown to the teacher (paper section 3.1.2).

The correct rollout is drawn at random. Wrong rollouts are grouped by the *equivalence* of their
boxed answers (``18`` and ``18.00`` are one answer), not by string; the wrong rollout is drawn from
the largest group when that group has more than one member, ties between largest groups broken at
random (Algorithm 1, line 19); otherwise from all wrong rollouts at random.

One refinement of the paper: a wrong rollout without any boxed answer (usually truncated) shows no
misconception, so with ``prefer_answered=True`` such rollouts are only chosen when no wrong rollout
has an answer. Every draw comes from the ``rng`` passed in, so a seeded run is reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ssb.grading import group_by_equivalence


@dataclass(frozen=True)
class Selection:
    correct_index: int
    wrong_index: int
    wrong_answer: str | None
    wrong_group_size: int  # rollouts sharing the chosen wrong answer (1 = no majority)


def select_pair(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    rng: random.Random,
    equivalent: Callable[[str, str], bool],
    prefer_answered: bool = True,
) -> Selection | None:
    """Pick (correct, wrong) rollout indices, or None unless there is at least one of each."""
    right = [i for i, ok in enumerate(correct) if ok]
    wrong = [i for i, ok in enumerate(correct) if not ok]
    if not right or not wrong:
        return None
    correct_index = rng.choice(right)

    answered = [i for i in wrong if answers[i] is not None]
    pool = answered if (prefer_answered and answered) else wrong
    groups = [[answered[j] for j in g] for g in group_by_equivalence([answers[i] for i in answered], equivalent)]
    if len(pool) != len(answered):  # unanswered rollouts form one more group
        groups.append([i for i in wrong if answers[i] is None])
    largest = max(len(g) for g in groups)
    if largest > 1:
        group = rng.choice([g for g in groups if len(g) == largest])
        wrong_index = rng.choice(group)
    else:
        group = [rng.choice(pool)]
        wrong_index = group[0]
    return Selection(correct_index, wrong_index, answers[wrong_index], len(group))
