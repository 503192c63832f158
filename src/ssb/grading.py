"""Answer extraction and equivalence: the one grader every stage and tool uses.

The paper compares the last ``\\boxed{}`` string to the gold answer exactly; that mislabels
``18.00``, ``\\$18``, ``1,000`` or ``\\dfrac{14}{3}``. We keep the paper's extraction rule (the last
box; a response without one is wrong) and decide equivalence with math-verify, gold parsed first.

math-verify guards its sympy calls with SIGALRM, which only works in a process's main thread and
raises elsewhere. We switch its own timeouts off and bound every comparison ourselves:
in the main thread with an interval timer, in any other thread by running the comparison in a
helper process that is killed on timeout. A comparison that times out counts as wrong and is
reported as such (``Grade.timed_out``); nothing here can hang a run.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import re
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

GRADER_VERSION = "ssb-grader-1 (math-verify, last boxed answer)"
DEFAULT_TIMEOUT_S = 5.0

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_log = logging.getLogger(__name__)
# math-verify warns on every call that its own timeouts are off; we bound the time ourselves.
logging.getLogger("math_verify").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Grade:
    """Outcome of grading one response against one gold answer."""

    answer: str | None  # the extracted boxed answer, None when there is none
    correct: bool
    timed_out: bool = False


def extract_boxed_answer(text: str) -> str | None:
    """Return the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``.

    Braces are matched with nesting, so ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``. The
    brace-less form ``\\boxed 5`` gives ``5``. Returns None when there is no box, when the last
    box is empty, or when it is never closed (a truncated generation).
    """
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    command = next(cmd for cmd in _BOX_COMMANDS if text.startswith(cmd, start))
    rest = text[start + len(command) :]
    if rest.startswith("{"):
        depth = 0
        for i, ch in enumerate(rest):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    content = rest[1:i].strip()
                    return content or None
        return None  # unclosed
    # "\boxed 5": the command followed by whitespace and one token.
    match = re.match(r"\s+([^\s$]+)", rest)
    if match is None:
        return None
    return match.group(1).rstrip(".,;") or None


def _normalise_string(answer: str) -> str:
    """Cheap canonical form used before calling sympy: spacing, \\text{}, $ and trailing dots."""
    s = answer.strip().replace("\u2212", "-")
    s = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\!", "").replace("\\,", "")
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".").lower()


def strict_match(answer: str | None, gold: str) -> bool:
    """Normalised string equality, the paper's strict criterion made insensitive to spacing."""
    return answer is not None and _normalise_string(answer) == _normalise_string(gold)


def _math_verify_equal(gold: str, answer: str) -> bool:
    """math-verify with its own (SIGALRM) timeouts off: callers bound the time."""
    from math_verify import parse, verify

    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)
    answer_parsed = parse("\\boxed{" + answer + "}", parsing_timeout=None)
    if not gold_parsed or not answer_parsed:
        return False
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


class _Alarm(BaseException):
    """Raised by the interval timer. A BaseException so sympy's `except Exception` won't eat it."""


def _with_alarm(fn, timeout_s: float, *args) -> bool | None:
    """``fn(*args)``, or None when it runs past ``timeout_s`` (main thread only)."""

    def on_alarm(signum, frame):
        raise _Alarm()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn(*args)
    except _Alarm:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _worker_loop(conn) -> None:
    while True:
        try:
            gold, answer = conn.recv()
        except EOFError:
            return
        try:
            conn.send(_math_verify_equal(gold, answer))
        except Exception:  # a parse failure is "not equal", as math-verify itself treats it
            conn.send(False)


class _IsolatedVerifier:
    """One helper process per grading process, used from threads where signals are unavailable.

    Requests are serialised by a lock; a request that exceeds the timeout kills the helper, which
    is restarted on the next request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process = None
        self._conn = None
        self._owner_pid = None
        self._warm = False  # the first answer also waits for the helper's imports

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=_worker_loop, args=(child,), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        self._owner_pid = os.getpid()
        self._warm = False

    def _stop(self) -> None:
        if self._process is not None and self._owner_pid == os.getpid():
            self._process.kill()
            self._process.join()
        self._process = self._conn = None

    def equal(self, gold: str, answer: str, timeout_s: float) -> bool | None:
        with self._lock:
            if self._owner_pid != os.getpid() or self._process is None or not self._process.is_alive():
                self._process = None  # a forked copy of another process's helper is not ours
                self._start()
            self._conn.send((gold, answer))
            # Start-up (imports of sympy and math-verify) is not the comparison's fault.
            if self._conn.poll(timeout_s if self._warm else timeout_s + 60.0):
                self._warm = True
                return self._conn.recv()
            self._stop()
            return None


_isolated = _IsolatedVerifier()


def answers_equivalent(gold: str, answer: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool | None:
    """True when ``answer`` equals ``gold`` mathematically, False when not, None on timeout.

    Both are bare answers (the content of a box, no ``\\boxed``). Safe to call from any thread or
    process.
    """
    if strict_match(answer, gold):
        return True
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread and hasattr(signal, "setitimer"):
        result = _with_alarm(_math_verify_equal, timeout_s, gold, answer)
    else:
        result = _isolated.equal(gold, answer, timeout_s)
    if result is None:
        _log.warning("grader timed out after %.1fs comparing %r to gold %r", timeout_s, answer, gold)
    return result


def group_by_equivalence(answers: Sequence[str], equivalent: Callable[[str, str], bool]) -> list[list[int]]:
    """Partition indices of ``answers`` into groups of mutually equivalent answers.

    Each answer joins the first group whose first member it is equivalent to (``equivalent(first,
    answer)``), so grouping costs at most one comparison per (answer, group).
    """
    groups: list[list[int]] = []
    for i, answer in enumerate(answers):
        for group in groups:
            if equivalent(answers[group[0]], answer):
                group.append(i)
                break
        else:
            groups.append([i])
    return groups


def _gold_parses(gold: str) -> bool:
    from math_verify import parse

    return bool(parse("\\boxed{" + gold + "}", parsing_timeout=None))


@functools.cache
def _parser_loaded() -> bool:
    """Parse once, unbounded: the first parse imports and builds math-verify's parsers (seconds on a busy
    machine), which the time bound on each gold is not meant to cover."""
    return _gold_parses("1")


def gold_is_gradable(gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when math-verify can parse ``gold``; a gold it cannot parse would mark every answer wrong."""
    _parser_loaded()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return bool(_with_alarm(_gold_parses, timeout_s, gold))
    return _gold_parses(gold)


def grade(response_text: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Grade:
    """Extract the last boxed answer of ``response_text`` and compare it to ``gold``."""
    answer = extract_boxed_answer(response_text)
    if answer is None:
        return Grade(answer=None, correct=False)
    verdict = answers_equivalent(gold, answer, timeout_s)
    return Grade(answer=answer, correct=bool(verdict), timed_out=verdict is None)


def is_correct(response_text: str, gold: str) -> bool:
    """True when the last boxed answer of ``response_text`` is equivalent to ``gold``.

    A response without a boxed answer is wrong, as in the paper.
    """
    return grade(response_text, gold).correct


def correctness_reward(completions: list, gold: list[str], timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs) -> list[float]:
    """A TRL reward function: 1.0 when a completion's last boxed answer equals its gold (``grade``), else 0.0. GRPO's
    reward, and the on-policy arm's test of a correct sibling (SDPO).

    ``completions`` are TRL's conversational completions (``[{"role": "assistant", "content": ...}]``)
    or plain strings; ``gold`` is the dataset column of the same name, one per completion.
    """
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [1.0 if grade(text, answer, timeout_s).correct else 0.0 for text, answer in zip(texts, gold)]
