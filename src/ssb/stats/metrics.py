"""Evaluation statistics as pure functions: pass@k, maj@k, means with standard errors and 95% CIs.

pass@k is the unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
``1 - C(n-c, k) / C(n, k)``, averaged over questions. maj@k votes over the first k samples'
answers, grouped by equivalence; a tie between groups counts as the fraction of tied groups that
are correct (the expected score under a random tie-break). Confidence intervals: Wilson's score
interval when every question has one sample (binary outcomes; it stays sensible at 0% and 100%),
otherwise mean +- 1.96 standard errors of the per-question scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ssb.grading import group_by_equivalence

Z95 = 1.959963984540054


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # prod_{i=n-c+1}^{n} (1 - k/i) == C(n-c, k) / C(n, k), without huge binomials.
    failure = 1.0
    for i in range(n - c + 1, n + 1):
        failure *= 1.0 - k / i
    return 1.0 - failure


def majority_score(answers: Sequence[str | None], correct: Sequence[bool], equivalent: Callable[[str, str], bool]) -> float:
    """Score of a majority vote over ``answers`` (None = no answer, never voted for). In [0, 1]."""
    voted = [i for i, answer in enumerate(answers) if answer is not None]
    groups = [[voted[j] for j in g] for g in group_by_equivalence([answers[i] for i in voted], equivalent)]
    if not groups:
        return 0.0
    top = max(len(g) for g in groups)
    tied = [g for g in groups if len(g) == top]
    return sum(correct[g[0]] for g in tied) / len(tied)


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    if total == 0:
        return (0.0, 0.0)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # The interval contains p; the min/max only absorbs rounding at p = 0 and p = 1.
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def mean_with_ci(scores: Sequence[float], binary: bool) -> dict:
    """Mean, standard error and 95% CI of per-question scores."""
    m = len(scores)
    if m == 0:
        return {"mean": 0.0, "stderr": 0.0, "ci95": [0.0, 0.0], "n_questions": 0}
    mean = sum(scores) / m
    variance = sum((s - mean) ** 2 for s in scores) / (m - 1) if m > 1 else 0.0
    stderr = math.sqrt(variance / m)
    if binary:
        low, high = wilson_interval(round(sum(scores)), m)
    else:
        low, high = max(0.0, mean - Z95 * stderr), min(1.0, mean + Z95 * stderr)
    return {"mean": mean, "stderr": stderr, "ci95": [low, high], "n_questions": m}


def paired_difference(scores: Sequence[float], baseline: Sequence[float], test: str = "sign") -> dict:
    """``scores - baseline`` on the same questions: mean, standard error, 95% CI and a two-sided test.

    Pairing removes the between-question variance that separate per-model intervals carry, so a
    difference can be significant while the two models' intervals overlap. ``better``/``worse``
    count questions where the model scores above/below the baseline. ``test="sign"``: ``p_value`` is
    the exact two-sided binomial test on those counts (McNemar's test with one sample per question);
    it assumes that, without a difference, each side is as likely to be higher, which holds when both
    scores average the same number of samples. An average of several 0/1 samples is not distributed
    as one sample: below 50% accuracy it lies above a single sample more often than below it, so a
    sign test between them finds differences that are not there. ``test="z"`` is for such pairs: the
    normal test of the mean difference, the one the CI inverts.
    """
    if len(scores) != len(baseline):
        raise ValueError(f"paired_difference needs scores on the same questions, got {len(scores)} and {len(baseline)}")
    diffs = [s - b for s, b in zip(scores, baseline)]
    m = len(diffs)
    mean = sum(diffs) / m if m else 0.0
    variance = sum((d - mean) ** 2 for d in diffs) / (m - 1) if m > 1 else 0.0
    stderr = math.sqrt(variance / m) if m else 0.0
    better, worse = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    discordant = better + worse
    if test == "sign":
        tail = sum(math.comb(discordant, i) for i in range(min(better, worse) + 1)) / 2**discordant if discordant else 1.0
        p_value = min(1.0, 2 * tail)
    elif test == "z":
        if m < 2:
            p_value = 1.0
        elif stderr == 0:  # every difference the same: nothing to scale by; the sign test on the counts
            p_value = 1.0 if mean == 0 else min(1.0, 2 / 2**discordant)
        else:
            p_value = math.erfc(abs(mean) / stderr / math.sqrt(2))
    else:
        raise ValueError(f"unknown test {test!r} (sign or z)")
    return {"mean": mean, "stderr": stderr, "ci95": [mean - Z95 * stderr, mean + Z95 * stderr], "n_questions": m,
            "better": better, "worse": worse, "p_value": p_value, "test": test}
