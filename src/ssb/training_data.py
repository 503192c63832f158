"""Checks of the solutions refine kept (the training data): pure functions on texts, with their thresholds.

Refine keeps a refinement when it ends on its own and its last boxed answer is right (the paper's
Algorithm 1). Four kinds of kept solution pass that check and still teach the student something other
than reasoning; the studies found each by hand, and these are their definitions:

- **answer-only**: the solution only restates its verified answer (``The final answer is \\boxed{60}.``):
  fewer than ``ANSWER_ONLY_TOKENS`` tokens. Trained on by cross-entropy, 7 such of 123 solutions cost
  SFT 7.5 points on GSM8K (studies/evidence/README.md); ``distill.min_solution_tokens`` leaves them out.
- **answer-first**: the solution opens with its boxed answer (copied from the hinted prompt, where the
  right answer is shown) and justifies it after: its first ``\\boxed`` starts within its first
  ``ANSWER_FIRST_CHARS`` characters. Iterated SFT trained on them until every answer came first, and
  collapsed (studies/rounds/README.md); ``refine.answer_first_chars`` drops them.
- **prompt terms**: the solution uses the hinted prompt's own words for what it was shown (``PROMPT_TERMS``:
  "correct response", also as a heading, ``**Correct Response:**``). They refer to nothing on a bare
  question; SSB's third round opened most of its test answers with that heading and collapsed
  (studies/rounds/README.md); ``refine.prompt_terms`` drops them.
- **copy**: the solution is, character for character, mostly the correct rollout the hinted prompt showed
  (``similarity`` at least ``COPY_SIMILARITY``). Its text is then the model's own sample, and the hinted
  teacher, which has it in its context, is nearly certain of every token: its soft targets carry little
  beyond the text (studies/evidence/README.md: median similarity 0.97). A diagnostic, not a filter.

Each threshold is the one its study counted with. No tokenizer is loaded here: answer-only counts the
tokens the refiner generated (``refinements.jsonl``'s ``num_tokens``, end-of-turn included, the count
``distill.min_solution_tokens`` compares up to re-tokenisation), or, where a folder records none,
characters (``ANSWER_ONLY_CHARS``).
"""

from __future__ import annotations

import difflib
import statistics
from dataclasses import dataclass

ANSWER_ONLY_TOKENS = 32  # the evidence study's knob (distill.min_solution_tokens 32): its 8 answer-only solutions had 13-19, the next 55
ANSWER_ONLY_CHARS = 96  # 32 tokens at 3 characters a token (the evidence study's kept solutions: 3.0 at the tenth percentile, median 3.4)
ANSWER_FIRST_CHARS = 80  # the rounds study's (studies/rounds/answer_first.py --chars 80)
PROMPT_TERMS = ("correct response",)  # the paper's hinted prompt calls the right rollout it shows "the correct response from a student"
COPY_SIMILARITY = 0.9  # the evidence study counted at 0.9 and 0.99 (90 and 49 of 131 kept)
BOX = "\\boxed"
OPENING = " *#\n"  # markdown emphasis, headings and spaces before a solution's first word (studies/rounds/prompt_terms.py)


@dataclass(frozen=True)
class KeptSolution:
    """One kept solution with what its run folder records about it: the tokens the refiner generated for it,
    and the correct rollout its hinted prompt showed (None where the folder does not record them)."""

    id: str
    text: str
    num_tokens: int | None = None
    shown_correct: str | None = None


def answer_only(num_tokens: int, below: int = ANSWER_ONLY_TOKENS) -> bool:
    """Whether a solution of ``num_tokens`` tokens (end-of-turn included) is too short to hold any reasoning."""
    return num_tokens < below


def answer_only_by_chars(text: str, below: int = ANSWER_ONLY_CHARS) -> bool:
    """``answer_only`` without a tokenizer: whether ``text`` has fewer than ``below`` characters."""
    return len(text) < below


def answers_first(text: str, chars: int = ANSWER_FIRST_CHARS) -> bool:
    """Whether ``text`` opens with a boxed answer: its first ``\\boxed`` starts within its first ``chars`` characters."""
    return 0 <= text.find(BOX) < chars


def uses_terms(text: str, terms: tuple[str, ...] | list[str] = PROMPT_TERMS) -> bool:
    """Whether ``text`` contains any of ``terms`` (case-insensitive); no terms: never."""
    lower = text.lower()
    return any(term.lower() in lower for term in terms)


def opens_with_terms(text: str, terms: tuple[str, ...] | list[str] = PROMPT_TERMS) -> bool:
    """Whether ``text`` starts with one of ``terms`` (case-insensitive) once markdown emphasis, heading marks and
    spaces are skipped: the term as a heading (``**Correct Response:**``)."""
    opening = text.lstrip(OPENING).lower()
    return any(opening.startswith(term.lower()) for term in terms)


def similarity(a: str, b: str) -> float:
    """Character-level similarity of two texts, as the evidence study measured it: ``difflib.SequenceMatcher``'s
    ratio without its junk heuristic, 2 x matched characters / total characters (1.0: identical; two empty
    texts: 1.0)."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def copies(text: str, shown: str, at_least: float = COPY_SIMILARITY) -> bool:
    """Whether ``text`` is mostly a copy of ``shown``: their similarity is at least ``at_least``."""
    return similarity(text, shown) >= at_least


DEFECTS = ("answer-only", "answer-first", "prompt-terms", "copy")


@dataclass(frozen=True)
class Flag:
    """A kept solution one check flagged, with what the check measured on it (its length, the position of its
    first box, whether the terms open it, its similarity) and where in its text the flagged part starts."""

    id: str
    text: str
    detail: str
    at: int = 0


@dataclass(frozen=True)
class Checked:
    """The checks over one run's kept solutions. ``checked``: {defect: how many solutions it could be checked on}
    (copy needs the shown rollout); ``answer_only_by``: "tokens" or "characters"."""

    kept: int
    flagged: dict[str, list[Flag]]
    checked: dict[str, int]
    answer_only_by: str
    opening_with_terms: int
    median_similarity: float | None


def check(solutions: list[KeptSolution], *, answer_only_tokens: int = ANSWER_ONLY_TOKENS, answer_only_chars: int = ANSWER_ONLY_CHARS,
          answer_first_chars: int = ANSWER_FIRST_CHARS, terms: tuple[str, ...] = PROMPT_TERMS,
          copy_similarity: float = COPY_SIMILARITY) -> Checked:
    """Every check on every kept solution, in their order. Answer-only counts tokens when every solution records
    them, else characters for all (one measure per run)."""
    by_tokens = all(s.num_tokens is not None for s in solutions)
    flagged: dict[str, list[Flag]] = {defect: [] for defect in DEFECTS}
    similarities = []
    for s in solutions:
        if by_tokens and answer_only(s.num_tokens, answer_only_tokens):
            flagged["answer-only"].append(Flag(s.id, s.text, f"{s.num_tokens} tokens"))
        elif not by_tokens and answer_only_by_chars(s.text, answer_only_chars):
            flagged["answer-only"].append(Flag(s.id, s.text, f"{len(s.text)} characters"))
        if answers_first(s.text, answer_first_chars):
            flagged["answer-first"].append(Flag(s.id, s.text, f"\\boxed at character {s.text.find(BOX)}"))
        if uses_terms(s.text, terms):
            at = min(i for i in (s.text.lower().find(term.lower()) for term in terms) if i >= 0)
            flagged["prompt-terms"].append(Flag(s.id, s.text, "opens with them" if opens_with_terms(s.text, terms) else "uses them", at))
        if s.shown_correct is not None:
            similarities.append(similarity(s.text, s.shown_correct))
            if similarities[-1] >= copy_similarity:
                flagged["copy"].append(Flag(s.id, s.text, f"similarity {similarities[-1]:.3f}"))
    checked = {defect: len(solutions) for defect in DEFECTS} | {"copy": len(similarities)}
    return Checked(kept=len(solutions), flagged=flagged, checked=checked, answer_only_by="tokens" if by_tokens else "characters",
                   opening_with_terms=sum(opens_with_terms(s.text, terms) for s in solutions),
                   median_similarity=statistics.median(similarities) if similarities else None)
