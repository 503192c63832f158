"""Seeded multi-step arithmetic word problems, so a demo needs no downloaded dataset.

``data.source: synthetic`` draws problems from a handful of templates (two to four arithmetic
steps, integer answers) with ``data.shuffle_seed``; train and test are disjoint (a question's split
follows from its text). They are easy enough that a 0.5B instruct model
solves some and misses others, which is what the method needs: questions with mixed rollouts.
"""

from __future__ import annotations

import hashlib
import random

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Liam"]


def _shop(r: random.Random) -> tuple[str, int]:
    name, packs, per_pack, price, budget = r.choice(NAMES), r.randint(2, 9), r.randint(3, 12), r.randint(2, 9), r.randint(200, 500)
    cost = packs * per_pack * price
    budget = max(budget, cost + r.randint(1, 50))
    return (f"{name} buys {packs} packs of pencils. Each pack holds {per_pack} pencils and each pencil costs ${price}. "
            f"{name} pays with ${budget}. How many dollars of change does {name} get?", budget - cost)


def _garden(r: random.Random) -> tuple[str, int]:
    rows, per_row, eaten, extra = r.randint(3, 12), r.randint(4, 15), r.randint(2, 10), r.randint(5, 30)
    return (f"A garden has {rows} rows of tomato plants with {per_row} plants in each row. Rabbits eat {eaten} plants, "
            f"and then the gardener plants {extra} new ones. How many tomato plants are in the garden now?", rows * per_row - eaten + extra)


def _trip(r: random.Random) -> tuple[str, int]:
    speed, hours, back_speed, back_hours = r.randint(30, 70), r.randint(2, 6), r.randint(20, 60), r.randint(1, 3)
    return (f"A bus drives at {speed} miles per hour for {hours} hours, then at {back_speed} miles per hour for "
            f"{back_hours} more hours. How many miles does it travel in total?", speed * hours + back_speed * back_hours)


def _share(r: random.Random) -> tuple[str, int]:
    friends, each, kept = r.randint(3, 8), r.randint(4, 12), r.randint(2, 20)
    name = r.choice(NAMES)
    return (f"{name} had some stickers. After giving {each} stickers to each of {friends} friends, {name} has {kept} "
            f"stickers left. How many stickers did {name} have at first?", friends * each + kept)


def _savings(r: random.Random) -> tuple[str, int | None]:
    """None when half of the savings is not a whole number of dollars (the caller draws again)."""
    weekly, weeks, spent, name = r.randint(5, 25), r.randint(4, 12), r.randint(10, 40), r.choice(NAMES)
    return (f"{name} saves ${weekly} every week for {weeks} weeks, then spends half of the savings on a game and "
            f"${spent} on a book. How many dollars are left?", weekly * weeks - (weekly * weeks) // 2 - spent
            if (weekly * weeks) % 2 == 0 else None)


def _classroom(r: random.Random) -> tuple[str, int]:
    classes, students, absent, groups = r.randint(2, 6), r.randint(18, 32), r.randint(1, 9), r.randint(2, 5)
    present = classes * students - absent
    present -= present % groups
    absent = classes * students - present
    return (f"A school has {classes} classes of {students} students. On Monday {absent} students are absent. The "
            f"students who are present are split into {groups} equal teams. How many students are on each team?", present // groups)


TEMPLATES = [_shop, _garden, _trip, _share, _savings, _classroom]


SPLITS = ("train", "test")
TEST_SHARE = 0.2  # of the distinct questions


def _split_of(question: str) -> str:
    """A question's split, from its text alone: the same question can never land in both."""
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "little") / 2**64
    return "test" if bucket < TEST_SHARE else "train"


def synthetic_records(count: int, seed: int, split: str = "train") -> list[dict]:
    """The first ``count`` records ``{"question", "answer"}`` of ``split``, reproducible from ``seed``.

    Both splits walk one stream of candidate questions per seed; duplicates are skipped and each
    distinct question belongs to the split its text hashes to, so train and test never share one
    (some templates have only a few thousand distinct questions, so independent streams would).
    """
    if split not in SPLITS:
        raise ValueError(f"synthetic problems have splits {' and '.join(SPLITS)}, not {split!r}")
    r = random.Random(f"{seed}:synthetic")
    out: list[dict] = []
    seen: set[str] = set()
    candidate = 0
    while len(out) < count:
        question, answer = TEMPLATES[candidate % len(TEMPLATES)](r)
        candidate += 1
        if answer is None or answer < 0 or question in seen:
            continue
        seen.add(question)
        if _split_of(question) == split:
            out.append({"question": question, "answer": str(answer)})
    return out
