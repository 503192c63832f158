"""studies/onpolicy/diagnostics.py: the shape of an arm's responses and its training log, counted by hand here."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "onpolicy" / "diagnostics.py"


def completion(text: str, tokens: int, answer: str | None, correct: bool, finish: str = "stop") -> dict:
    return {"text": text, "num_tokens": tokens, "answer": answer, "correct": correct, "finish_reason": finish}


def write_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def diagnosed(results: Path, *arms: str, also: Path | None = None) -> tuple[dict, str]:
    """The script's JSON for ``arms`` (looked up in ``results``, then ``also``) and the tables it printed."""
    folders = ["--results", str(results), *(["--results", str(also)] if also else [])]
    done = subprocess.run([sys.executable, str(SCRIPT), "--benchmark", "gsm8k", *folders, *arms], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads((results / "diagnostics-gsm8k.json").read_text())["arms"], done.stdout


def test_responses_counts_each_shape(tmp_path):
    reasoning = "First, 3 + 4 = 7 apples are in the basket, and then ... " * 3 + "so \\boxed{7}"
    samples = [
        {"id": "q1", "completions": [completion(reasoning, 60, "7", True)]},
        {"id": "q2", "completions": [completion("\\boxed{7}", 8, "7", False)]},  # answer-only and answer-first
        {"id": "q3", "completions": [completion("Using the information above, " + "x " * 200, 1024, None, False, "length")]},
        {"id": "q4", "completions": [completion("The answer is " + reasoning, 40, "7", True)]},
    ]
    write_gz(tmp_path / "arm" / "gsm8k.samples.jsonl.gz", samples)
    arms, _ = diagnosed(tmp_path, "arm")
    assert arms["arm"]["training"] is None  # no training log committed
    assert arms["arm"]["responses"] == {"questions": 4, "responses": 4, "pass@1": 0.5, "mean_tokens": round((60 + 8 + 1024 + 40) / 4, 1),
                                        "capped": 0.25, "no_answer": 0.25, "answer_only": 0.25, "answer_first": 0.25, "context_terms": 0.25}


def test_training_reads_the_first_and_last_steps(tmp_path):
    arm = tmp_path / "arm"
    log = [{"self_distillation/distillation_loss": 0.01 * (i + 1), "completions/mean_length": 100.0 + i,
            "completions/clipped_ratio": 0.5 if i == 0 else 0.0, "sampler/token_nll": 1.0 - 0.05 * i,
            "sampler/generate_s": 20.0, "sampler/push_s": 1.0 if i == 0 else 0.0,
            **({"student/correct": 0.25 * (i % 2)} if i < 10 else {})} for i in range(12)]
    log.append({"train_runtime": 99.0})  # TRL's closing entry: not a step
    write_gz(arm / "onpolicy" / "metrics.jsonl.gz", log)
    (arm / "training-stats.json").write_text(json.dumps({"onpolicy": {"steps": 12, "generated_tokens": 5000,
                                                                      "this_invocation": {"wall_s": 700.0}}}))
    write_gz(arm / "gsm8k.samples.jsonl.gz", [{"id": "q1", "completions": [completion("\\boxed{7}", 8, "7", True)]}])
    arms, _ = diagnosed(tmp_path, "arm")
    t = arms["arm"]["training"]
    assert t["distillation_loss_first"] == pytest.approx(0.03)  # mean of 0.01 .. 0.05
    assert t["distillation_loss_last"] == pytest.approx(0.10)  # mean of 0.08 .. 0.12
    assert t["student_tokens_first"] == pytest.approx(102.0) and t["student_tokens_last"] == pytest.approx(109.0)
    assert t["student_capped"] == pytest.approx(0.5 / 12, abs=1e-5)
    assert (t["steps"], t["generated_tokens"], t["wall_s"]) == (12, 5000, 700.0)
    assert t["sampling_share"] == pytest.approx((12 * 20.0 + 1.0) / 700.0, abs=1e-4)
    assert t["token_nll_first"] == pytest.approx(0.9) and t["token_nll_last"] == pytest.approx(1.0 - 0.05 * 9)
    assert t["student_correct_first"] == pytest.approx(0.1) and t["student_correct_last"] == pytest.approx(0.15)  # steps 0-4, 5-9


def test_training_without_the_watched_values_shows_none(tmp_path):
    arm = tmp_path / "arm"
    log = [{"self_distillation/distillation_loss": 0.1, "completions/mean_length": 9.0, "completions/clipped_ratio": 0.0}]
    write_gz(arm / "onpolicy" / "metrics.jsonl.gz", log)
    (arm / "training-stats.json").write_text(json.dumps({"onpolicy": {"steps": 1, "generated_tokens": 9, "this_invocation": {"wall_s": 1.0}}}))
    write_gz(arm / "gsm8k.samples.jsonl.gz", [{"id": "q1", "completions": [completion("\\boxed{7}", 8, "7", True)]}])
    arms, tables = diagnosed(tmp_path, "arm")
    t = arms["arm"]["training"]
    assert t["student_correct_first"] is None and t["token_nll_last"] is None and t["sampling_share"] is None
    assert tables.splitlines()[-3].endswith("| - | - | - |")  # student correct, token NLL and sampling share: not logged


def test_an_arm_is_looked_up_in_each_results_folder_in_turn(tmp_path):
    own, other = tmp_path / "own", tmp_path / "other"
    write_gz(other / "base" / "gsm8k.samples.jsonl.gz", [{"id": "q1", "completions": [completion("\\boxed{7}", 8, "7", True)]}])
    write_gz(own / "arm" / "gsm8k.samples.jsonl.gz", [{"id": "q1", "completions": [completion("\\boxed{7}", 8, "7", False)]}])
    arms, _ = diagnosed(own, "arm", "base", also=other)
    assert (arms["arm"]["responses"]["pass@1"], arms["base"]["responses"]["pass@1"]) == (0.0, 1.0)
    assert not (other / "diagnostics-gsm8k.json").exists()  # the JSON goes into the first folder
    done = subprocess.run([sys.executable, str(SCRIPT), "--results", str(own), "missing"], capture_output=True, text=True)
    assert done.returncode == 1 and f"missing: no such arm in {own}" in done.stderr
