"""The report's "Training data" section: per run folder (per round of an iterated run), the kept solutions that pass
refine's check and still teach something other than reasoning (``ssb.training_data``), counted, with examples.

One row per run folder that has refine's views (``student.jsonl``), one per round of an iterated run
(``rounds.json``): the kept solutions, and per check the count and share of those it flags; which of the
filters that act on them the folder's stages recorded, and what they removed; then up to ``EXAMPLES`` of
each defect per row, escaped for markdown. Read through ``ssb.runfolder.record`` only. A report of folders
without training data has no such section.
"""

from __future__ import annotations

import json
from pathlib import Path

from ssb.runfolder.record import RunRecord
from ssb.training_data import (
    ANSWER_FIRST_CHARS,
    ANSWER_ONLY_CHARS,
    ANSWER_ONLY_TOKENS,
    COPY_SIMILARITY,
    DEFECTS,
    PROMPT_TERMS,
    Checked,
    Flag,
    check,
)

EXAMPLES = 2  # per defect and row
EXAMPLE_CHARS = 120
CONTEXT_CHARS = 40  # shown before a prompt term found further in
MARKDOWN = set("\\`*_[]<>|~$&")  # the characters that would start markup inside a line (CommonMark escapes any ASCII punctuation)
TITLES = {"answer-only": "answer-only", "answer-first": "answer-first", "prompt-terms": "prompt terms", "copy": "copy of the shown correct rollout"}


def markdown_text(text: str, limit: int = EXAMPLE_CHARS, at: int = 0) -> str:
    """``limit`` characters of ``text`` as one line of literal markdown (markup escaped, line breaks shown as ⏎): its first
    ``limit``, or, when what is to be seen starts at character ``at`` past the first ``CONTEXT_CHARS``, from ``CONTEXT_CHARS``
    before it."""
    start = at - CONTEXT_CHARS if at > CONTEXT_CHARS else 0
    cut = ("…" if start else "") + text[start:start + limit] + ("…" if len(text) > start + limit else "")
    return "".join("\\" + c if c in MARKDOWN else "⏎" if c == "\n" else c for c in cut)


def example(flag: Flag) -> str:
    return f"{markdown_text(flag.id)} ({markdown_text(flag.detail)}): {markdown_text(flag.text, at=flag.at)}"


def training_data_rows(folders: list[Path]) -> list[tuple[str, RunRecord]]:
    """(label, record) of every run folder among ``folders`` with training data, each round of an iterated run apart."""
    rows = []
    for folder in folders:
        rounds = RunRecord(folder).round_folders()
        named = [(folder.name, folder)] if rounds is None else [(f"{folder.name} round {r}", path) for r, path in rounds]
        records = [(label, RunRecord(path)) for label, path in named]
        rows += [(label, record) for label, record in records if record.has_training_data()]
    return rows


def _share(n: int, of: int) -> str:
    return f"{n} ({100 * n / of:.1f}%)" if of else "0"


def _cells(checked: Checked) -> list[str]:
    flagged, kept = checked.flagged, checked.kept
    answer_only = _share(len(flagged["answer-only"]), kept) + (" by characters" if checked.answer_only_by == "characters" else "")
    terms = f"{_share(len(flagged['prompt-terms']), kept)}; {checked.opening_with_terms} open with them"
    copies = "-" if not checked.checked["copy"] else (
        _share(len(flagged["copy"]), checked.checked["copy"]) + ("" if checked.checked["copy"] == kept else f" of {checked.checked['copy']}")
        + f"; median {checked.median_similarity:.2f}")
    return [str(kept), answer_only, _share(len(flagged["answer-first"]), kept), terms, copies]


def filters_set(record: RunRecord) -> str:
    """The training-data filters the folder's stages recorded as set, each with what it removed (from the stats)."""
    out = []
    tokens = record.recorded_input("distill", "distill", "min_solution_tokens")
    if tokens:
        left_out = record.stage_stats("distill").get("short_examples_left_out")
        out.append(f"`distill.min_solution_tokens {tokens}`" + ("" if left_out is None else f": {left_out} left out"))
    dropped = record.stage_stats("refine").get("dropped", {})
    chars = record.recorded_input("refine", "refine", "answer_first_chars")
    if chars:
        out.append(f"`refine.answer_first_chars {chars}`: {dropped.get('refinement-answer-first', 0)} dropped")
    terms = record.recorded_input("refine", "refine", "prompt_terms")
    if terms:
        quoted = ", ".join(markdown_text(f'"{term}"') for term in terms)
        out.append(f"`refine.prompt_terms` {quoted}: {dropped.get('refinement-prompt-terms', 0)} dropped")
    return "; ".join(out) if out else "none recorded"


def _note() -> str:
    terms = ", ".join(f'"{t}"' for t in PROMPT_TERMS)
    return (f"Kept: the solutions in student.jsonl (before distillation holds some out and leaves short ones out). Answer-only: fewer "
            f"than {ANSWER_ONLY_TOKENS} tokens, as the refiner generated them (refinements.jsonl's num_tokens, end-of-turn included); "
            f"marked by characters where the folder records no token counts: fewer than {ANSWER_ONLY_CHARS} characters. Answer-first: "
            f"the first \\\\boxed starts within the first {ANSWER_FIRST_CHARS} characters. Prompt terms: the solution contains {terms} "
            "(case-insensitive), the hinted prompt's words for the right rollout it shows; open with them: as the first words, headings "
            f"and emphasis skipped (`**Correct Response:**`). Copy: character similarity (difflib's ratio) of at least {COPY_SIMILARITY} to "
            "the correct rollout the hinted prompt showed (rollouts.jsonl; - where the folder has none), with the median over the kept.")


FILTERS = (f"Filters, each off by default (the paper's method): answer-only solutions are left out of training by "
           f"`distill.min_solution_tokens {ANSWER_ONLY_TOKENS}` (held-out examples are drawn first and kept); answer-first ones are "
           f"dropped at refine by `refine.answer_first_chars {ANSWER_FIRST_CHARS}` (refinement-answer-first), and those using the "
           f"prompt's terms by `refine.prompt_terms '{json.dumps(list(PROMPT_TERMS))}'` (refinement-prompt-terms); copies have no filter (a copy is "
           "a right solution, and most kept solutions may be one: the count says how much of the training text is the model's own "
           "sample). docs/training-data.md has the checks and the filters together.")


def training_data_section(folders: list[Path]) -> list[str]:
    """The "Training data" section for ``folders``; empty when none of them (and no round of them) has training data."""
    rows = [(label, check(record.kept_solutions()), record) for label, record in training_data_rows(folders)]
    if not rows:
        return []
    header = ["run", "kept", *(TITLES[d] for d in DEFECTS), "filters set"]
    lines = ["## Training data", "", _note(), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([markdown_text(label), *_cells(checked), filters_set(record)]) + " |" for label, checked, record in rows]
    lines += ["", FILTERS, ""]
    examples = [f"- {TITLES[defect]}, {markdown_text(label)}: {example(flag)}"
                for defect in DEFECTS for label, checked, _ in rows for flag in checked.flagged[defect][:EXAMPLES]]
    if examples:
        lines += [f"Examples (the first {EXAMPLES} of each per row: id, what the check measured, {EXAMPLE_CHARS} characters: the first, or for a "
                  f"prompt term further in, from {CONTEXT_CHARS} before it):", "", *examples, ""]
    return lines
