"""The training-data checks (ssb.training_data), and refine.prompt_terms on a scripted refine.

Every expected count is worked out here from the texts; the similarity is checked against a longest common
subsequence computed here, on texts where difflib's matching blocks are one.
"""

import json
import random
import re
import string
from pathlib import Path

import pytest

from helpers import write_questions
from scripted import ScriptedBackend, refine_script, rollout_script
from ssb.artifacts import read_jsonl
from ssb.chat import ChatFormat
from ssb.config import ConfigError, load_config
from ssb.refinement import run_refine
from ssb.rollouts import run_rollouts
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
    """refine.prompt_terms drops a right refinement using the terms; off (the default), it is kept and the stage records
    its inputs as before the option existed."""
    config, stats = scripted_refine(tmp_path, tokenizer, "off")
    run = Path(config.run_dir)
    assert stats["kept"] == 4 and stats["dropped"]["refinement-prompt-terms"] == 0
    assert "prompt_terms" not in json.loads((run / "manifest.json").read_text())["stages"]["refine"]["inputs"]["refine"]

    config, stats = scripted_refine(tmp_path, tokenizer, "on", **{"refine.prompt_terms": ["CORRECT response"]})
    run = Path(config.run_dir)
    assert stats["kept"] == 3 and stats["dropped"]["refinement-prompt-terms"] == 1
    assert {d["id"]: d["reason"] for d in read_jsonl(run / "dropped.jsonl")}["jsonl-train-10"] == "refinement-prompt-terms"
    assert [s["id"] for s in read_jsonl(run / "student.jsonl")] == [f"jsonl-train-{i}" for i in (2, 3, 11)]
    assert json.loads((run / "manifest.json").read_text())["stages"]["refine"]["inputs"]["refine"]["prompt_terms"] == ["CORRECT response"]
    with pytest.raises(ConfigError, match="refine.prompt_terms: an empty phrase"):
        load_config(None, {"refine.prompt_terms": ["correct response", " "]})
