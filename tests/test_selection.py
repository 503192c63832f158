import random

import pytest

from ssb.grading import answers_equivalent, group_by_equivalence
from ssb.selection import select_pair


def equivalent(a, b):
    return answers_equivalent(a, b) is True


def test_groups_by_equivalence_not_string():
    assert group_by_equivalence(["18", "18.00", "\\$18", "17"], equivalent) == [[0, 1, 2], [3]]


def test_majority_wrong_answer_is_chosen():
    answers = ["5", "7", "7.0", "9"]
    correct = [True, False, False, False]
    for seed in range(20):
        s = select_pair(answers, correct, random.Random(seed), equivalent)
        assert s.correct_index == 0
        assert s.wrong_index in (1, 2) and s.wrong_group_size == 2


def test_tie_between_largest_groups_is_broken_at_random():
    answers = ["1", "2", "2", "3", "3"]
    correct = [True, False, False, False, False]
    picked = {select_pair(answers, correct, random.Random(seed), equivalent).wrong_answer for seed in range(40)}
    assert picked == {"2", "3"}


def test_no_majority_picks_any_wrong_rollout():
    answers = ["1", "2", "3", "4"]
    correct = [True, False, False, False]
    picks = {select_pair(answers, correct, random.Random(seed), equivalent).wrong_index for seed in range(60)}
    assert picks == {1, 2, 3}
    assert all(select_pair(answers, correct, random.Random(s), equivalent).wrong_group_size == 1 for s in range(5))


def test_correct_rollout_is_random_among_correct():
    answers = ["1", "1", "1", "2"]
    correct = [True, True, True, False]
    assert {select_pair(answers, correct, random.Random(s), equivalent).correct_index for s in range(60)} == {0, 1, 2}


@pytest.mark.parametrize("correct", [[True, True, True], [False, False, False], []])
def test_all_correct_or_all_wrong_gives_none(correct):
    assert select_pair(["1"] * len(correct), correct, random.Random(0), equivalent) is None


def test_unanswered_wrong_rollouts_are_used_only_as_last_resort():
    answers = ["1", None, None, "4"]
    correct = [True, False, False, False]
    # Two unanswered rollouts do not outvote one answered wrong rollout.
    assert {select_pair(answers, correct, random.Random(s), equivalent).wrong_index for s in range(30)} == {3}
    only_unanswered = select_pair(["1", None, None], [True, False, False], random.Random(0), equivalent)
    assert only_unanswered.wrong_index in (1, 2) and only_unanswered.wrong_answer is None
    # Without the preference, the unanswered pair is the majority "answer".
    plain = {select_pair(answers, correct, random.Random(s), equivalent, prefer_answered=False).wrong_index for s in range(30)}
    assert plain == {1, 2}


def test_seeded_reproducibility():
    answers = ["1", "2", "3", "3", "2", "1"]
    correct = [True, False, False, False, False, True]
    first = [select_pair(answers, correct, random.Random(f"7:{q}"), equivalent) for q in range(10)]
    again = [select_pair(answers, correct, random.Random(f"7:{q}"), equivalent) for q in range(10)]
    assert first == again
