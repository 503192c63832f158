"""studies/rounds/answer_first.py counts, per round folder, the texts that state their boxed answer first."""

import importlib.util
from pathlib import Path

from helpers import write_gz

spec = importlib.util.spec_from_file_location("answer_first", Path(__file__).resolve().parents[1] / "studies" / "rounds" / "answer_first.py")
answer_first = importlib.util.module_from_spec(spec)
spec.loader.exec_module(answer_first)


def test_answer_first_texts_are_counted_with_how_often_they_are_right(tmp_path):
    first, reasoned = "The final answer is \\boxed{4}. Because 2 + 2 = 4.", "2 + 2 = 4, so the answer is " + " " * 80 + "\\boxed{4}."
    write_gz(tmp_path / "rollouts.jsonl.gz", [{"rollouts": [{"text": first, "correct": True}, {"text": reasoned, "correct": True}]},
                                              {"rollouts": [{"text": first, "correct": False}, {"text": "no answer", "correct": False}]}])
    write_gz(tmp_path / "refinements.jsonl.gz", [{"outcome": "all-wrong"}, {"outcome": "kept", "refinement": {"text": first}},
                                                 {"outcome": "refinement-wrong", "refinement": {"text": reasoned}}])
    write_gz(tmp_path / "student.jsonl.gz", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": first}]}])
    write_gz(tmp_path / "eval/sft/gsm8k.samples.jsonl.gz", [{"completions": [{"text": reasoned, "correct": True}]}])
    counts = answer_first.round_counts(tmp_path, 80)
    assert counts == {"rollouts": {"texts": 4, "answer_first": 2, "right_of_answer_first": 1, "right_of_others": 1},
                      "refinements": {"texts": 2, "answer_first": 1, "right_of_answer_first": 1, "right_of_others": 0},
                      "kept": {"texts": 1, "answer_first": 1},
                      "eval/sft": {"texts": 1, "answer_first": 0, "right_of_answer_first": 0, "right_of_others": 1}}
    assert answer_first.round_counts(tmp_path, 200)["eval/sft"]["answer_first"] == 1  # the threshold is in characters
