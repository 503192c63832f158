import itertools
import math

import pytest

from ssb.grading import answers_equivalent
from ssb.metrics import majority_score, mean_with_ci, paired_difference, pass_at_k, wilson_interval


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
                                                       "better": 0, "worse": 0, "p_value": 1.0}
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([1, 0], [1])
