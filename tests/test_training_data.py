"""The training-data checks (ssb.training_data), the report's Training data section on run folders written by hand,
and refine.prompt_terms on a scripted refine.

Every expected count and share is worked out here from the texts; the similarity is checked against a longest
common subsequence computed here, on texts where difflib's matching blocks are one.
"""

import json
import random
import re
import string
from pathlib import Path

import pytest

from helpers import write_questions
from scripted import ScriptedBackend, refine_script, rollout_script
from ssb.chat import ChatFormat
from ssb.config import ConfigError, load_config
from ssb.refinement import KEPT, run_refine
from ssb.report import write_report
from ssb.report.training_data import markdown_text, training_data_section
from ssb.rollouts import run_rollouts
from ssb.runfolder.artifacts import read_jsonl
from ssb.runfolder.record import RunRecord
from ssb.training_data import (
    ANSWER_FIRST_CHARS,
    ANSWER_ONLY_CHARS,
    ANSWER_ONLY_TOKENS,
    COPY_SIMILARITY,
    KeptSolution,
    answer_only,
    answer_only_by_chars,
    answers_first,
    check,
    copies,
    opens_with_terms,
    similarity,
    uses_terms,
)


def lcs(a: str, b: str) -> int:
    """Length of the longest common subsequence (dynamic programming over prefixes)."""
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal, row[0] = 0, 0
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def test_the_thresholds_are_the_studies():
    assert (ANSWER_ONLY_TOKENS, ANSWER_ONLY_CHARS, ANSWER_FIRST_CHARS, COPY_SIMILARITY) == (32, 96, 80, 0.9)


def test_answer_only_is_fewer_tokens_or_characters_than_the_threshold():
    assert answer_only(31) and not answer_only(32) and answer_only(13)
    assert answer_only(9, below=10) and not answer_only(10, below=10)
    assert answer_only_by_chars("x" * 95) and not answer_only_by_chars("x" * 96)
    assert answer_only_by_chars("The final answer is \\(\\boxed{60}\\).")  # 35 characters, 13 tokens in the evidence study


def test_answer_first_is_a_box_starting_within_the_first_characters():
    assert answers_first("The final answer is \\boxed{4}. Because 2 + 2 = 4.")
    assert answers_first(" " * 79 + "\\boxed{4}") and not answers_first(" " * 80 + "\\boxed{4}")
    assert not answers_first("no box at all") and not answers_first("\\boxed{4}", 0)  # 0: off, as refine.answer_first_chars
    assert not answers_first("2 + 2 = 4 " * 9 + "\\boxed{4} and \\boxed{4}")  # the first box counts


def test_prompt_terms_are_found_anywhere_and_as_the_opening_words():
    heading, inline, plain = "**Correct Response:**\n\n2 + 2 = \\boxed{4}", "As the correct response says, \\boxed{4}", "2 + 2 = \\boxed{4}"
    assert uses_terms(heading) and uses_terms(inline) and not uses_terms(plain)
    assert uses_terms("THE CORRECT RESPONSE") and not uses_terms("correct, response") and not uses_terms("correct responce")
    assert opens_with_terms(heading) and opens_with_terms("## correct response\n") and not opens_with_terms(inline)
    assert uses_terms("the auto-evaluator", ("correct response", "auto-evaluator")) and not uses_terms(heading, ())


def test_similarity_is_difflibs_ratio_without_autojunk_against_an_lcs():
    for a, b in (("abcd", "abed"), ("kitten", "sitting"), ("same", "same"), ("abc", "xyz"), ("", "abc")):
        assert similarity(a, b) == pytest.approx(2 * lcs(a, b) / (len(a) + len(b)))
    assert similarity("abcd", "abed") == 0.75 and similarity("", "") == 1.0
    # 400 characters (past the 200 where difflib's autojunk, off here as in the study, would start), one changed: 399 in common.
    rng = random.Random(0)
    text = "".join(rng.choice(string.ascii_letters + " ") for _ in range(400))
    changed = text[:150] + "#" + text[151:]
    assert similarity(text, changed) == pytest.approx(2 * 399 / 800) == pytest.approx(2 * lcs(text, changed) / 800)


def test_a_copy_is_a_similarity_of_at_least_the_threshold():
    shown = "abcdefghij"
    assert copies(shown, shown) and copies("abcdefghiX", shown)  # 2 x 9 / 20 = 0.9
    assert not copies("abcdefghXY", shown)  # 0.8
    assert copies("abcdefghXY", shown, at_least=0.8)


def test_check_counts_each_defect_and_measures_answer_only_by_one_measure():
    solutions = [KeptSolution("a", "The final answer is \\boxed{4}.", 12, "ZZZZ"),
                 KeptSolution("b", "x" * 100 + " the correct response: \\boxed{4}", 32, None)]
    checked = check(solutions)
    assert checked.kept == 2 and checked.answer_only_by == "tokens" and checked.checked == {"answer-only": 2, "answer-first": 2,
                                                                                          "prompt-terms": 2, "copy": 1}
    assert [f.id for f in checked.flagged["answer-only"]] == ["a"] and checked.flagged["answer-only"][0].detail == "12 tokens"
    assert [(f.id, f.detail) for f in checked.flagged["answer-first"]] == [("a", "\\boxed at character 20")]
    assert [(f.id, f.detail, f.at) for f in checked.flagged["prompt-terms"]] == [("b", "uses them", 105)]
    assert checked.flagged["copy"] == [] and checked.median_similarity == 0.0 and checked.opening_with_terms == 0
    # One solution without a token count: characters for all (the 30 of "a" and the 133 of "b").
    by_chars = check([solutions[0], KeptSolution("b", solutions[1].text)])
    assert by_chars.answer_only_by == "characters" and [f.detail for f in by_chars.flagged["answer-only"]] == ["30 characters"]
    assert check([]).kept == 0 and check([]).median_similarity is None


def student_line(id_: str, solution: str) -> dict:
    return {"id": id_, "gold": "4", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "correct response?"},
                                                 {"role": "assistant", "content": solution}]}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


# A plain run folder: four kept solutions, each with its refinement (token count) and shown rollouts.
REASONED = "Let x be the number of apples; x = 2 + 2, since each of the two baskets holds two apples, and so " + "\\boxed{4}"
assert REASONED.find("\\boxed") == 97 and len(REASONED) == 106
SOLUTIONS = {
    "q-short": ("The final answer is \\boxed{4}.", 12, "ZZZZ"),  # answer-only and answer-first
    "q-terms": ("**Correct Response:**\n" + REASONED, 40, "ZZZZ"),  # opens with the prompt's term
    "q-copy": ("Copied | *as is*: " + REASONED, 50, "Copied | *as is*: " + REASONED),  # similarity 1
    "q-plain": (REASONED, 32, REASONED[:-10] + "Z" * 10),  # 32 tokens: not answer-only; 96 of 106 in common: 0.906, a copy
}


def plain_run(folder: Path) -> Path:
    write_jsonl(folder / "student.jsonl", [student_line(i, text) for i, (text, _, _) in SOLUTIONS.items()])
    # q-terms was refined under another question's hint (refine.hint random): q-donor's rollouts were shown.
    rollouts = {i: [{"text": "wrong \\boxed{5}"}, {"text": shown}] for i, (_, _, shown) in SOLUTIONS.items()}
    rollouts["q-donor"], rollouts["q-terms"] = rollouts["q-terms"], [{"text": "not shown"}, {"text": "not shown"}]
    write_jsonl(folder / "rollouts.jsonl", [{"id": i, "rollouts": r} for i, r in rollouts.items()])
    write_jsonl(folder / "refinements.jsonl", [{"id": "q-none", "outcome": "all-wrong"}] + [
        {"id": i, "outcome": KEPT, "selection": {"correct_index": 1, "wrong_index": 0}, **({"hint_from": "q-donor"} if i == "q-terms" else {}),
         "refinement": {"text": text, "num_tokens": tokens}} for i, (text, tokens, _) in SOLUTIONS.items()])
    return folder


def iterated_run(folder: Path) -> Path:
    """Round 1 in the folder itself, with only its views and the filters its stages recorded; round 2 kept nothing yet."""
    write_jsonl(folder / "student.jsonl", [student_line("r-box", "\\boxed{5}"), student_line("r-long", "y" * 96)])
    (folder / "round-2").mkdir()
    (folder / "rounds.json").write_text(json.dumps({"rounds": 2, "rounds_data": "fresh", "stopped": None,
                                                    "per_round": [{"round": 1, "folder": "."}, {"round": 2, "folder": "round-2"}]}))
    dropped = {"refinement-wrong": 1, "refinement-no-answer": 0, "refinement-truncated": 0, "refinement-answer-first": 2,
               "refinement-prompt-terms": 3}
    (folder / "stats.json").write_text(json.dumps({"refine": {"questions": 9, "mixed": 8, "kept": 2, "dropped": dropped},
                                                   "distill": {"examples": 1, "short_examples_left_out": 1}}))
    inputs = {"refine": {"inputs": {"refine": {"answer_first_chars": 80, "prompt_terms": ["correct response"]}}},
              "distill": {"inputs": {"distill": {"min_solution_tokens": 32}}}}
    (folder / "manifest.json").write_text(json.dumps({"stages": inputs}))
    return folder


def test_markdown_text_escapes_markup_shows_line_breaks_and_cuts():
    assert markdown_text("a|b *c* _d_ `e` <f> \\g\nh") == "a\\|b \\*c\\* \\_d\\_ \\`e\\` \\<f\\> \\\\g⏎h"
    assert markdown_text("x" * 121) == "x" * 120 + "…" and markdown_text("x" * 120) == "x" * 120
    assert markdown_text("a" * 50 + "TERM" + "b" * 200, at=50) == "…" + "a" * 40 + "TERM" + "b" * 76 + "…"  # from 40 before it
    assert markdown_text("a" * 40 + "TERM", at=40) == "a" * 40 + "TERM"


def test_the_kept_solutions_carry_the_refiners_tokens_and_the_shown_rollout(tmp_path):
    solutions = RunRecord(plain_run(tmp_path / "run")).kept_solutions()
    assert [(s.id, s.num_tokens) for s in solutions] == [("q-short", 12), ("q-terms", 40), ("q-copy", 50), ("q-plain", 32)]
    assert [s.shown_correct for s in solutions] == [shown for _, _, shown in SOLUTIONS.values()]  # q-terms: its donor's
    bare = RunRecord(iterated_run(tmp_path / "rounds")).kept_solutions()
    assert [(s.id, s.num_tokens, s.shown_correct) for s in bare] == [("r-box", None, None), ("r-long", None, None)]


def test_the_section_counts_each_defect_per_run_and_round_with_examples(tmp_path):
    lines = training_data_section([plain_run(tmp_path / "run"), iterated_run(tmp_path / "rounds")])
    assert lines[0] == "## Training data"
    table = lines[lines.index("| run | kept | answer-only | answer-first | prompt terms | copy of the shown correct rollout | filters set |"):]
    # Similarities of the four: 0 (no Z in the solutions), 0, 1 and 2 x 96 / 212 = 0.906; median (0 + 0.906) / 2 = 0.45.
    assert table[2] == "| run | 4 | 1 (25.0%) | 1 (25.0%) | 1 (25.0%); 1 open with them | 2 (50.0%); median 0.45 | none recorded |"
    assert table[3] == ("| rounds round 1 | 2 | 1 (50.0%) by characters | 1 (50.0%) | 0 (0.0%); 0 open with them | - | "
                        "`distill.min_solution_tokens 32`: 1 left out; `refine.answer_first_chars 80`: 2 dropped; "
                        "`refine.prompt_terms` \"correct response\": 3 dropped |")
    assert table[4] == ""  # round 2 has no training data: no row
    examples = [line for line in lines if line.startswith("- ")]
    assert examples == [
        "- answer-only, run: q-short (12 tokens): The final answer is \\\\boxed{4}.",
        "- answer-only, rounds round 1: r-box (9 characters): \\\\boxed{5}",
        "- answer-first, run: q-short (\\\\boxed at character 20): The final answer is \\\\boxed{4}.",
        "- answer-first, rounds round 1: r-box (\\\\boxed at character 0): \\\\boxed{5}",
        "- prompt terms, run: q-terms (opens with them): \\*\\*Correct Response:\\*\\*⏎" + markdown_text(REASONED, limit=98),
        "- copy of the shown correct rollout, run: q-copy (similarity 1.000): Copied \\| \\*as is\\*: " + markdown_text(REASONED, limit=102),
        "- copy of the shown correct rollout, run: q-plain (similarity 0.906): " + markdown_text(REASONED)]
    assert "Filters, each off by default" in "\n".join(lines) and "`refine.prompt_terms '[\"correct response\"]'`" in "\n".join(lines)


def test_the_report_has_the_section_only_for_folders_with_training_data(tmp_path):
    text = write_report(plain_run(tmp_path / "run")).read_text()
    assert "## Training data" in text and "| run | 4 | 1 (25.0%) |" in text
    assert training_data_section([tmp_path / "empty"]) == []
    (tmp_path / "eval-only").mkdir()
    assert "Training data" not in write_report(tmp_path / "eval-only").read_text()


def scripted_refine(tmp_path: Path, tokenizer, run: str, **overrides):
    """Rollouts and refine on the scripted backend (12 questions; 2, 3, 10 and 11 kept by the plain refine script), question
    10's refinement written in the hinted prompt's terms."""
    def terms_on_10(user: str, s: int):
        i = int(re.search(r"-----\nQuestion (\d+)", user).group(1))
        return f"**Correct Response:** {i} = {i}, so \\boxed{{{i}}}" if i == 10 else refine_script(user, s)

    data = write_questions(tmp_path / "questions.jsonl")
    config = load_config(None, {"run_dir": str(tmp_path / run), "data.source": "jsonl", "data.path": str(data), "model.name_or_path": "scripted",
                                "rollouts.chunk_questions": 3, "refine.chunk_questions": 2, "progress": False, **overrides})
    run_rollouts(config, backend=ScriptedBackend(ChatFormat(tokenizer), rollout_script))
    return config, run_refine(config, backend=ScriptedBackend(ChatFormat(tokenizer), terms_on_10))


def test_prompt_term_refinements_are_dropped_when_asked(tmp_path, tokenizer):
    """refine.prompt_terms drops a right refinement using the terms; off (the default), it is kept, the stage records its
    inputs and its stats as before the option existed, and the report's section counts it."""
    config, stats = scripted_refine(tmp_path, tokenizer, "off")
    run = Path(config.run_dir)
    assert stats["kept"] == 4 and "refinement-prompt-terms" not in stats["dropped"]
    assert "prompt_terms" not in json.loads((run / "manifest.json").read_text())["stages"]["refine"]["inputs"]["refine"]
    checked = check(RunRecord(run).kept_solutions())
    assert [(f.id, f.detail) for f in checked.flagged["prompt-terms"]] == [("jsonl-train-10", "opens with them")]
    # The other three ("Careful solution, step by step. \boxed{i}", 43 characters) against the shown "Right: \boxed{i}" (16).
    assert checked.checked["copy"] == 4 and checked.flagged["copy"] == []

    config, stats = scripted_refine(tmp_path, tokenizer, "on", **{"refine.prompt_terms": ["CORRECT response"]})
    run = Path(config.run_dir)
    assert stats["kept"] == 3 and stats["dropped"]["refinement-prompt-terms"] == 1
    assert {d["id"]: d["reason"] for d in read_jsonl(run / "dropped.jsonl")}["jsonl-train-10"] == "refinement-prompt-terms"
    assert [s["id"] for s in read_jsonl(run / "student.jsonl")] == [f"jsonl-train-{i}" for i in (2, 3, 11)]
    assert json.loads((run / "manifest.json").read_text())["stages"]["refine"]["inputs"]["refine"]["prompt_terms"] == ["CORRECT response"]
    assert "`refine.prompt_terms` \"CORRECT response\": 1 dropped" in training_data_section([run])[6]
    with pytest.raises(ConfigError, match="refine.prompt_terms: an empty phrase"):
        load_config(None, {"refine.prompt_terms": ["correct response", " "]})
