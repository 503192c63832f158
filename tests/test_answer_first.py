"""studies/rounds/answer_first.py counts, per round folder, the texts that state their boxed answer first."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import write_gz

SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "rounds" / "answer_first.py"


def counts(results: Path, chars: int) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), "--chars", str(chars), "--results", str(results)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = json.loads((results / "answer_first.json").read_text())
    assert written["chars"] == chars
    return written["rounds"]["rounds-sft/round-1"]


def test_answer_first_texts_are_counted_with_how_often_they_are_right(tmp_path):
    first, reasoned = "The final answer is \\boxed{4}. Because 2 + 2 = 4.", "2 + 2 = 4, so the answer is " + " " * 80 + "\\boxed{4}."
    round_1 = tmp_path / "rounds-sft" / "round-1"  # an export's round folder, as the committed ones are laid out
    (tmp_path / "rounds-sft").mkdir()
    (tmp_path / "rounds-sft" / "rounds.json").write_text("{}")
    write_gz(round_1 / "rollouts.jsonl.gz", [{"rollouts": [{"text": first, "correct": True}, {"text": reasoned, "correct": True}]},
                                             {"rollouts": [{"text": first, "correct": False}, {"text": "no answer", "correct": False}]}])
    write_gz(round_1 / "refinements.jsonl.gz", [{"outcome": "all-wrong"}, {"outcome": "kept", "refinement": {"text": first}},
                                                {"outcome": "refinement-wrong", "refinement": {"text": reasoned}}])
    write_gz(round_1 / "student.jsonl.gz", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": first}]}])
    write_gz(round_1 / "eval/sft/gsm8k.samples.jsonl.gz", [{"completions": [{"text": reasoned, "correct": True}]}])
    assert counts(tmp_path, 80) == {"rollouts": {"texts": 4, "answer_first": 2, "right_of_answer_first": 1, "right_of_others": 1},
                                    "refinements": {"texts": 2, "answer_first": 1, "right_of_answer_first": 1, "right_of_others": 0},
                                    "kept": {"texts": 1, "answer_first": 1},
                                    "eval/sft": {"texts": 1, "answer_first": 0, "right_of_answer_first": 0, "right_of_others": 1}}
    assert counts(tmp_path, 200)["eval/sft"]["answer_first"] == 1  # the threshold is in characters
