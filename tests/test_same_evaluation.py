"""studies/common/same_evaluation.py: a fresh evaluation compared with committed samples, question by question."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "common" / "same_evaluation.py"


def row(qid: str, text: str, answer: str, correct: bool) -> dict:
    return {"id": qid, "completions": [{"text": text, "answer": answer, "correct": correct}]}


def write(path: Path, rows: list[dict]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def compared(fresh: Path, committed: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(fresh), str(committed)], capture_output=True, text=True)


def run(fresh: Path, committed: Path) -> tuple[int, dict]:
    done = compared(fresh, committed)
    return done.returncode, json.loads(done.stdout)


def test_only_the_shared_questions_are_compared_and_equal_files_pass(tmp_path):
    committed = write(tmp_path / "c.jsonl.gz", [row("q1", "a", "1", True), row("q2", "b", "2", False), row("q3", "c", "3", True)])
    fresh = write(tmp_path / "f.jsonl", [row("q1", "a", "1", True), row("q2", "b", "2", False)])
    code, counts = run(fresh, committed)
    assert code == 0
    assert counts == {"questions": 2, "completions": 2, "same_text": 2, "same_answer": 2, "same_grade": 2,
                      "correct_fresh": 1, "correct_committed": 1}


def test_a_different_text_with_the_same_grade_passes_but_a_different_grade_fails(tmp_path):
    committed = write(tmp_path / "c.jsonl", [row("q1", "a", "1", True), row("q2", "b", "2", False)])
    reworded = write(tmp_path / "f1.jsonl", [row("q1", "a, reworded", "1", True), row("q2", "b", "2", False)])
    code, counts = run(reworded, committed)
    assert (code, counts["same_text"], counts["same_grade"]) == (0, 1, 2)
    regraded = write(tmp_path / "f2.jsonl", [row("q1", "a", "1", True), row("q2", "b", "5", True)])
    code, counts = run(regraded, committed)
    assert (code, counts["same_answer"], counts["same_grade"], counts["correct_fresh"]) == (1, 1, 1, 2)


def test_a_damaged_row_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(row("q1", "a", "1", True)) + "\n" + '{"id": "q2"}\n')
    done = compared(path, path)
    assert done.returncode == 1 and f"{path}:2: not a samples row" in done.stderr and "Traceback" not in done.stderr


def test_files_that_share_no_question_are_refused(tmp_path):
    done = compared(write(tmp_path / "f.jsonl", [row("q1", "a", "1", True)]), write(tmp_path / "c.jsonl", [row("q2", "a", "1", True)]))
    assert done.returncode == 1 and "share no question id" in done.stderr
