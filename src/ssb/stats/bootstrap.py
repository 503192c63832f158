"""Two-level bootstrap for ``ssb report``: an arm's pass@1 and a paired difference, resampling training runs and questions.

An arm pools training runs (one recipe trained with several seeds): per question it scores the mean of its runs' scores
(``ssb.stats.comparison``). The interval over questions (``metrics.mean_with_ci``, ``metrics.paired_difference``) holds the runs
fixed: it says how far the score would move on other questions drawn like these, with these very adapters. Training again
draws another adapter, and runs of one recipe can lie far apart (SFT's three seeds in the evidence study span 7.4 points),
so for a pooled arm that interval understates the uncertainty of a claim about the recipe. This bootstrap draws both:

1. questions: Q indices with replacement from the Q questions scored (by both sides of a paired difference), one draw
   shared by both sides, so the difference stays paired (a hard question stays hard for both);
2. runs: R indices with replacement from each side's R runs, drawn independently per side (the arms trained apart);

and recomputes the statistic: the mean over the drawn questions of the mean over the drawn runs (for a difference, A's
minus B's). The 95% interval is the 2.5th and 97.5th percentiles of the resampled statistic (numpy's default linear
interpolation). The two-sided p-value of a difference inverts that percentile interval: with k the smaller of the
counts of resamples at or below 0 and at or above 0, p = 2 (k + 1) / (resamples + 1), at most 1 (never 0: its floor
is about 2 / resamples). It is below 0.05 about when the 95% interval excludes 0.

With one run, step 2 draws that run every time and this is the ordinary bootstrap over questions. With few runs (three),
the run-level part rests on three values, and resampling R values gives their mean a variance (R - 1) / R times the usual
estimate (2/3 for three runs): the interval is, if anything, still too narrow. Two arms are resampled independently even
when they share models, so an arm of several distinct runs against a copy of itself varies like two independent arms of
those runs would.

Draws: one ``numpy.random.default_rng(seed)``; first the questions, ``integers(0, Q, (resamples, Q))``, then each side's
runs in order, ``integers(0, R, (resamples, R))``. A fixed seed gives the same interval every time, and an arm whose runs
are identical gets exactly the interval of one of them alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 2000
SEED = 0
# A resampled difference this close to 0 is a tie: A's and B's means summed in different orders can miss an exact 0 by
# rounding, which would put a tie on one side only.
TIE = 1e-12


def resample(a_RQ: Sequence[Sequence[float]], b_RQ: Sequence[Sequence[float]] | None = None, resamples: int = RESAMPLES,
             seed: int = SEED) -> np.ndarray:
    """The statistic in each of ``resamples`` two-level resamples, shape (resamples,).

    ``a_RQ``: one row per run of arm A, one column per question (each run's score on it: in [0, 1], or in [-1, 1]
    anchored on an engine's reference model, ``ssb.stats.engine_anchors``); ``b_RQ``: the same
    for arm B, on the same questions in the same order. The statistic is A's pass@1, or A's minus B's when ``b_RQ`` is
    given. No questions: every resample is 0 (as ``paired_difference`` gives on empty input).
    """
    sides = [np.asarray(a_RQ, dtype=float)] + ([] if b_RQ is None else [np.asarray(b_RQ, dtype=float)])
    if any(side.ndim != 2 or side.shape[0] == 0 for side in sides):
        raise ValueError("resample needs each side as runs x questions, with at least one run")
    questions = sides[0].shape[1]
    if any(side.shape[1] != questions for side in sides):
        raise ValueError(f"resample needs both sides on the same questions, got {[side.shape[1] for side in sides]}")
    if resamples < 1:
        raise ValueError(f"resample needs at least one resample, got {resamples}")
    if questions == 0:
        return np.zeros(resamples)
    rng = np.random.default_rng(seed)
    questions_NQ = rng.integers(0, questions, size=(resamples, questions))
    statistic_N = np.zeros(resamples)
    for sign, scores_RQ in zip((1.0, -1.0), sides):
        runs = scores_RQ.shape[0]
        runs_NR = rng.integers(0, runs, size=(resamples, runs))
        run_mean_NQ = sum(scores_RQ[runs_NR[:, j]] for j in range(runs)) / runs  # resample n's mean over its drawn runs
        statistic_N += sign * np.take_along_axis(run_mean_NQ, questions_NQ, axis=1).mean(axis=1)
    return statistic_N


def interval(statistic_N: np.ndarray) -> list[float]:
    """The 95% percentile interval of resampled statistics: [2.5th, 97.5th percentile]."""
    low, high = np.percentile(statistic_N, [2.5, 97.5])
    return [float(low), float(high)]


def two_sided_p(statistic_N: np.ndarray) -> float:
    """Twice the smaller share of resamples on either side of 0 (ties, within ``TIE``, count on both), each count plus one, at most 1."""
    below, above = int(np.sum(statistic_N <= TIE)), int(np.sum(statistic_N >= -TIE))
    return min(1.0, 2 * (1 + min(below, above)) / (len(statistic_N) + 1))
