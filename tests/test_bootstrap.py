"""The two-level bootstrap (runs within each arm, then questions) against a plain loop over the same draws, and the
properties it must have: identical runs give the one-run interval, runs far apart widen it, an arm of one run against
itself is exactly 0."""

import numpy as np
import pytest

from bootstrap_reference import reference_interval, reference_p, reference_resample
from ssb.stats.bootstrap import interval, resample, two_sided_p

# Three runs of arm A and two of arm B on six questions (fractions of two samples correct).
A = [[1, 0.5, 0, 1, 0.5, 0], [1, 1, 0, 0.5, 0, 0], [0.5, 1, 0.5, 1, 0, 0]]
B = [[0, 0.5, 0, 1, 0, 0.5], [1, 0, 0, 0, 0.5, 0]]


@pytest.mark.parametrize("seed", [0, 7])
def test_the_resamples_are_those_of_a_loop_over_the_same_draws(seed):
    for sides in ((A, B), (A, None), (B, A)):
        expected = reference_resample(*sides, resamples=400, seed=seed)
        got = resample(*sides, resamples=400, seed=seed)
        assert got == pytest.approx([float(v) for v in expected], abs=1e-12)
        assert interval(got) == pytest.approx(reference_interval(expected), abs=1e-12)
        assert two_sided_p(got) == reference_p(expected)


def test_a_fixed_seed_gives_the_same_interval_and_another_seed_another():
    assert interval(resample(A, B, seed=3)) == interval(resample(A, B, seed=3))
    assert not np.array_equal(resample(A, B, seed=3), resample(A, B, seed=4))


def test_identical_runs_give_exactly_the_interval_of_one_run_over_questions():
    run = A[0]
    one = resample([run])
    assert np.array_equal(resample([run, run, run]), one)
    # With one run a side, the two-level bootstrap is the bootstrap over questions alone.
    questions = np.random.default_rng(0).integers(0, 6, size=(2000, 6))
    assert one == pytest.approx(np.asarray(run)[questions].mean(axis=1), abs=1e-12)
    assert np.array_equal(resample([run, run], [B[0]]), resample([run], [B[0]]))


def test_runs_far_apart_widen_the_interval_that_runs_alike_leave_to_the_questions():
    # 100 questions whose pooled scores are the same both ways: 1 on 30, 0 on 30, 0.5 on 40. Runs alike score 0.5
    # on the 40 each; runs apart score 1 and 0 there, so a resample drawing one of them twice moves 20 points.
    pooled = [1.0] * 30 + [0.0] * 30 + [0.5] * 40
    alike = [pooled, pooled]
    apart = [[1.0] * 30 + [0.0] * 30 + [1.0] * 40, [1.0] * 30 + [0.0] * 30 + [0.0] * 40]
    low_alike, high_alike = interval(resample(alike))
    low_apart, high_apart = interval(resample(apart))
    assert high_apart - low_apart > 2 * (high_alike - low_alike)
    base = [[0.35] * 100]  # 15 points below both
    assert two_sided_p(resample(apart, base)) > two_sided_p(resample(alike, base))


def test_an_arm_of_one_run_against_itself_is_exactly_zero():
    for side in ([A[0]], [A[0], A[0]]):
        statistic = resample(side, side)
        assert not statistic.any() and interval(statistic) == [0.0, 0.0] and two_sided_p(statistic) == 1.0


def test_shapes_are_checked_and_no_questions_give_zero():
    with pytest.raises(ValueError, match="same questions"):
        resample(A, [[0, 1]])
    with pytest.raises(ValueError, match="at least one run"):
        resample([])
    assert not resample([[]], [[]], resamples=5).any()
