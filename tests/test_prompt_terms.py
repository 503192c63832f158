"""studies/rounds/prompt_terms.py counts, per round folder, the texts written in the hinted prompt's terms."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import write_gz

SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "rounds" / "prompt_terms.py"


def test_texts_using_and_opening_with_the_phrase_are_counted_with_how_often_they_are_right(tmp_path):
    opening, using, plain = "**Correct Response:**\n\n2 + 2 = \\boxed{4}", "2 + 2 = 4, as the correct response says: \\boxed{4}", "\\boxed{5}"
    round_1 = tmp_path / "rounds-ssb" / "round-1"  # an export's round folder, as the committed ones are laid out
    (tmp_path / "rounds-ssb").mkdir()
    (tmp_path / "rounds-ssb" / "rounds.json").write_text("{}")
    write_gz(round_1 / "refinements.jsonl.gz", [{"outcome": "all-wrong"}, {"outcome": "kept", "refinement": {"text": opening}},
                                                {"outcome": "refinement-wrong", "refinement": {"text": using}},
                                                {"outcome": "refinement-wrong", "refinement": {"text": plain}}])
    solution = {"messages": [{"role": "user", "content": "correct response"}, {"role": "assistant", "content": plain}]}
    write_gz(round_1 / "student.jsonl.gz", [solution])
    write_gz(round_1 / "eval/ssb/gsm8k.samples.jsonl.gz", [{"completions": [{"text": opening, "correct": True}]},
                                                           {"completions": [{"text": plain, "correct": True}]}])
    done = subprocess.run([sys.executable, str(SCRIPT), "--phrase", "correct response", "--results", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "prompt_terms.json").read_text())
    assert written["phrase"] == "correct response" and written["command"].startswith("python studies/rounds/prompt_terms.py --phrase")
    assert written["rounds"] == {"rounds-ssb/round-1": {
        "refinements": {"texts": 3, "using_phrase": 2, "opening_with_phrase": 1, "right_of_using": 1, "right_of_others": 0},
        "kept": {"texts": 1, "using_phrase": 0, "opening_with_phrase": 0},  # only the solution, not the question, counts
        "eval/ssb": {"texts": 2, "using_phrase": 1, "opening_with_phrase": 1, "right_of_using": 1, "right_of_others": 1}}}
    assert done.stdout.startswith("rounds-ssb/round-1 ")
