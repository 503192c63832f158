import multiprocessing
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ssb.grading import answers_equivalent, extract_boxed_answer, grade, is_correct, strict_match


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{18}.", "18"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("first \\boxed{1} then \\boxed{2} finally", "2"),
        ("\\fbox{7}", "7"),
        ("\\boxed{3} and later \\fbox{4}", "4"),
        ("\\fbox{3} and later \\boxed{4}", "4"),
        ("The answer is $\\boxed 5$.", "5"),
        ("\\boxed 12.", "12"),
        ("no box here, the answer is 5", None),
        ("\\boxed{}", None),
        ("\\boxed{   }", None),
        ("\\boxed{5} and then \\boxed{\\frac{1}{", None),  # truncated last box
        ("\\boxed{18} dollars. Hope this helps!", "18"),
        ("", None),
    ],
)
def test_extract_boxed_answer(text, expected):
    assert extract_boxed_answer(text) == expected


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("18.00", "18"),
        ("\\$18", "18"),
        ("1,000", "1000"),
        ("1000", "1,000"),
        ("\\dfrac{14}{3}", "\\frac{14}{3}"),
        ("90^\\circ", "90"),
        ("\\text{Evelyn}", "\\text{Evelyn}"),
        ("\\text{Evelyn}", "Evelyn"),
        ("(3,\\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("\u22125", "-5"),  # unicode minus
        ("10\\text{ cm}", "10"),  # units
        ("27", "27.0"),
        ("\\frac12", "0.5"),
    ],
)
def test_equivalent_answers_are_correct(answer, gold):
    assert is_correct(f"Work... so \\boxed{{{answer}}}", gold)


@pytest.mark.parametrize(
    "response, gold",
    [
        ("\\boxed{19}", "18"),
        ("The answer is 18.", "18"),  # right number but not boxed: wrong, as in the paper
        ("\\boxed{18} wait no \\boxed{17}", "18"),  # last box wins
        ("\\boxed{\\text{Eve}}", "Evelyn"),
        ("\\boxed{18", "18"),  # unclosed
    ],
)
def test_wrong_answers_are_wrong(response, gold):
    assert not is_correct(response, gold)


def test_strict_match_is_the_narrow_criterion():
    assert strict_match("18", "18") and strict_match(" \\text{Evelyn} ", "evelyn")
    assert not strict_match("18.00", "18")
    assert not strict_match(None, "18")


def test_grade_reports_answer():
    g = grade("... \\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}")
    assert g.answer == "\\dfrac{14}{3}" and g.correct and not g.timed_out


def test_pathological_comparison_times_out_as_wrong_in_main_thread():
    # In a fresh interpreter: in a pytest process where an OpenVINO engine had run before (the backend
    # contract tests), this comparison crashed the process with SIGSEGV in CPython's long
    # multiplication, which no plain process reproduced; the timer is what is under test here.
    code = """
import time
from ssb.grading import answers_equivalent, grade
start = time.monotonic()
assert answers_equivalent("5", "9^{9^{9}}", timeout_s=1.0) is None
assert time.monotonic() - start < 10
g = grade("\\\\boxed{9^{9^{9}}}", "5", timeout_s=1.0)
assert g.timed_out and not g.correct
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def _grade_in_pool(args):
    return is_correct(*args)


def test_safe_from_threads_including_timeouts():
    cases = [("\\boxed{1,000}", "1000", True), ("\\boxed{19}", "18", False)] * 3
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda c: is_correct(c[0], c[1]), cases))
        assert results == [c[2] for c in cases]
        start = time.monotonic()
        timed = pool.submit(answers_equivalent, "5", "9^{9^{9}}", 1.0).result()
    assert timed is None
    assert time.monotonic() - start < 70  # includes the helper process start
    # After a timeout killed the helper, threads still grade.
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(is_correct, "\\boxed{\\dfrac{14}{3}}", "\\frac{14}{3}").result()


def test_safe_under_multiprocessing():
    cases = [("\\boxed{18.00}", "18"), ("\\boxed{17}", "18")]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.map(_grade_in_pool, cases) == [True, False]
