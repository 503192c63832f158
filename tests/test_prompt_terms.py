"""studies/rounds/prompt_terms.py counts, per round folder, the texts written in the hinted prompt's terms."""

import importlib.util
from pathlib import Path

from helpers import write_gz

spec = importlib.util.spec_from_file_location("prompt_terms", Path(__file__).resolve().parents[1] / "studies" / "rounds" / "prompt_terms.py")
prompt_terms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prompt_terms)


def test_texts_using_and_opening_with_the_phrase_are_counted_with_how_often_they_are_right(tmp_path):
    opening, using, plain = "**Correct Response:**\n\n2 + 2 = \\boxed{4}", "2 + 2 = 4, as the correct response says: \\boxed{4}", "\\boxed{5}"
    write_gz(tmp_path / "refinements.jsonl.gz", [{"outcome": "all-wrong"}, {"outcome": "kept", "refinement": {"text": opening}},
                                                 {"outcome": "refinement-wrong", "refinement": {"text": using}},
                                                 {"outcome": "refinement-wrong", "refinement": {"text": plain}}])
    solution = {"messages": [{"role": "user", "content": "correct response"}, {"role": "assistant", "content": plain}]}
    write_gz(tmp_path / "student.jsonl.gz", [solution])
    write_gz(tmp_path / "eval/ssb/gsm8k.samples.jsonl.gz", [{"completions": [{"text": opening, "correct": True}]},
                                                            {"completions": [{"text": plain, "correct": True}]}])
    assert prompt_terms.round_counts(tmp_path, "correct response") == {
        "refinements": {"texts": 3, "using_phrase": 2, "opening_with_phrase": 1, "right_of_using": 1, "right_of_others": 0},
        "kept": {"texts": 1, "using_phrase": 0, "opening_with_phrase": 0},  # only the solution, not the question, counts
        "eval/ssb": {"texts": 2, "using_phrase": 1, "opening_with_phrase": 1, "right_of_using": 1, "right_of_others": 1}}
