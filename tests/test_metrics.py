import itertools
import math
import random
import statistics

import pytest

from ssb.grading import answers_equivalent
from ssb.stats.metrics import majority_score, mean_with_ci, paired_difference, pass_at_k, wilson_interval


def brute_force_pass_at_k(outcomes, k):
    subsets = list(itertools.combinations(outcomes, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n, c", [(1, 0), (1, 1), (4, 1), (5, 2), (6, 3), (7, 0), (7, 7), (8, 5)])
def test_pass_at_k_equals_enumeration_over_subsets(n, c):
    outcomes = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(outcomes, k))


def test_pass_at_1_is_the_fraction_correct_and_bad_arguments_fail():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def equivalent(a, b):
    return answers_equivalent(a, b) is True


def test_majority_vote_groups_equivalent_answers_and_splits_ties():
    assert majority_score(["18", "18.00", "17"], [True, True, False], equivalent) == 1.0
    assert majority_score(["17", "17", "18"], [False, False, True], equivalent) == 0.0
    assert majority_score(["17", "18"], [False, True], equivalent) == 0.5  # tie: half the tied groups are right
    assert majority_score(["1", "1", "2", "2", "3"], [True, True, False, False, False], equivalent) == 0.5
    assert majority_score([None, None, "5"], [False, False, True], equivalent) == 1.0  # no answer never wins
    assert majority_score([None, None], [False, False], equivalent) == 0.0


def test_wilson_interval_known_values():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(0, 30)
    assert low == 0.0 and high == pytest.approx(0.1135, abs=1e-4)


def test_mean_with_ci_on_known_inputs():
    scores = [0.0, 0.5, 1.0, 0.5]
    out = mean_with_ci(scores, binary=False)
    sd = math.sqrt(sum((s - 0.5) ** 2 for s in scores) / 3)
    assert out["mean"] == 0.5 and out["stderr"] == pytest.approx(sd / 2)
    assert out["ci95"] == pytest.approx([0.5 - 1.959964 * sd / 2, 0.5 + 1.959964 * sd / 2])
    binary = mean_with_ci([1, 0, 1, 1, 0, 1, 0, 1, 0, 0], binary=True)
    assert binary["ci95"] == pytest.approx(list(wilson_interval(5, 10)))
    assert mean_with_ci([], binary=True)["n_questions"] == 0


def exact_two_sided_sign_test(better, worse):
    """Reference: sum the Binomial(n, 1/2) probabilities no larger than the observed one."""
    n = better + worse
    pmf = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return sum(p for p in pmf if p <= pmf[better] * (1 + 1e-12))


def test_paired_difference_counts_discordant_pairs_and_matches_the_sign_test():
    base = [1] * 30 + [0] * 10 + [1] * 2 + [0] * 8
    model = [1] * 30 + [1] * 10 + [0] * 2 + [0] * 8  # 10 questions gained, 2 lost
    out = paired_difference(model, base)
    assert (out["better"], out["worse"], out["n_questions"]) == (10, 2, 50)
    assert out["mean"] == pytest.approx(8 / 50)
    diffs = [m - b for m, b in zip(model, base)]
    sd = math.sqrt(sum((d - 0.16) ** 2 for d in diffs) / 49)
    assert out["stderr"] == pytest.approx(sd / math.sqrt(50))
    assert out["ci95"] == pytest.approx([0.16 - 1.959964 * sd / math.sqrt(50), 0.16 + 1.959964 * sd / math.sqrt(50)])
    assert out["p_value"] == pytest.approx(exact_two_sided_sign_test(10, 2)) and out["p_value"] == pytest.approx(0.0386, abs=1e-4)
    assert paired_difference(base, model)["ci95"][1] < 0  # a loss has a negative interval, not one clamped at 0


def test_paired_difference_without_discordant_pairs_and_on_mismatched_lengths():
    assert paired_difference([1, 0, 1], [1, 0, 1]) == {"mean": 0.0, "stderr": 0.0, "ci95": [0.0, 0.0], "n_questions": 3,
                                                       "better": 0, "worse": 0, "p_value": 1.0, "test": "sign"}
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([1, 0], [1])


def test_paired_z_test_is_the_normal_test_the_interval_inverts():
    scores, baseline = [1, 2 / 3, 1 / 3, 1, 0, 1 / 3, 1], [0, 1, 0, 0, 0, 1, 1]
    diffs = [s - b for s, b in zip(scores, baseline)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    out = paired_difference(scores, baseline, test="z")
    assert out["test"] == "z" and out["p_value"] == pytest.approx(2 * (1 - statistics.NormalDist().cdf(abs(statistics.mean(diffs)) / se)))
    # At the CI's edge the test sits at 0.05: shift the scores so that the interval's lower end is 0.
    shifted = paired_difference([s - out["ci95"][0] for s in scores], baseline, test="z")
    assert shifted["p_value"] == pytest.approx(0.05) and shifted["ci95"][0] == pytest.approx(0.0, abs=1e-12)
    assert paired_difference([1, 0], [1, 0], test="z")["p_value"] == 1.0
    # No spread to scale by: one question, or every difference the same (then the sign test's 2 / 2^n).
    assert paired_difference([1], [0], test="z")["p_value"] == 1.0
    assert paired_difference([1, 1, 1], [0, 0, 0], test="z")["p_value"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="unknown test 'wilcoxon'"):
        paired_difference([1], [0], test="wilcoxon")


def test_sign_test_between_an_average_of_three_and_one_sample_rejects_a_true_null():
    # Both sides draw from the same per-question accuracy (20-45%), one as a mean of three samples.
    rng = random.Random(0)
    rejected = {"sign": 0, "z": 0}
    for _ in range(200):
        accuracy = [rng.uniform(0.2, 0.45) for _ in range(300)]
        three = [sum(rng.random() < p for _ in range(3)) / 3 for p in accuracy]
        one = [float(rng.random() < p) for p in accuracy]
        for test in rejected:
            rejected[test] += paired_difference(three, one, test=test)["p_value"] < 0.05
    assert rejected["sign"] / 200 > 0.5  # the averaged side is above far more often than below
    assert rejected["z"] / 200 < 0.1  # the z test keeps about its 5%
