"""The two-level bootstrap of ``ssb.stats.bootstrap`` written as plain loops over exact fractions, for tests to check it against.

It takes the same draws in the same order (questions, then each side's runs, from one seeded numpy generator) and
recomputes each resample's statistic one question and one run at a time.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def reference_resample(a, b=None, resamples=2000, seed=0) -> list[Fraction]:
    sides = [a] if b is None else [a, b]
    q = len(a[0])
    rng = np.random.default_rng(seed)
    questions = rng.integers(0, q, size=(resamples, q)).tolist()
    runs = [rng.integers(0, len(side), size=(resamples, len(side))).tolist() for side in sides]
    out = []
    for n in range(resamples):
        value = Fraction(0)
        for sign, side, drawn in zip((1, -1), sides, runs):
            per_question = [sum(Fraction(side[r][i]) for r in drawn[n]) / len(drawn[n]) for i in questions[n]]
            value += sign * sum(per_question) / q
        out.append(value)
    return out


def percentile(values, p: float) -> float:
    """numpy's default (linear) percentile: position p/100 * (n - 1) in the sorted values, interpolated."""
    ordered = sorted(values)
    position = p / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * Fraction(position - low))


def reference_interval(values) -> list[float]:
    return [percentile(values, 2.5), percentile(values, 97.5)]


def reference_p(values) -> float:
    below, above = sum(v <= 0 for v in values), sum(v >= 0 for v in values)
    return min(1.0, 2 * (1 + min(below, above)) / (len(values) + 1))
