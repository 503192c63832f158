"""Rollouts and refine stages end to end: scripted outcomes, the real HF backend, resume, refusals."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import N_QUESTIONS, write_questions
from scripted import ScriptedBackend, possible_hinted_prompts, refine_script, rollout_script
from ssb.chat import ChatFormat
from ssb.cli import main
from ssb.config import ConfigError, load_config
from ssb.data import DataError
from ssb.prompts import load_prompts
from ssb.refinement import KEPT, run_refine
from ssb.rollouts import run_rollouts
from ssb.runfolder.artifacts import RunFolderError, read_jsonl


def make_config(tmp_path: Path, run: str = "run", **overrides):
    data = write_questions(tmp_path / "questions.jsonl")
    return load_config(None, {"run_dir": str(tmp_path / run), "data.source": "jsonl", "data.path": str(data),
                              "model.name_or_path": "scripted", "rollouts.chunk_questions": 3, "refine.chunk_questions": 2,
                              "progress": False, **overrides})


def scripted(tokenizer, script=None):
    return ScriptedBackend(ChatFormat(tokenizer), script or rollout_script)


def run_both(config, tokenizer):
    run_rollouts(config, backend=scripted(tokenizer))
    return run_refine(config, backend=scripted(tokenizer, refine_script))


def test_rollouts_and_refine_produce_the_run_folder(tmp_path, tokenizer):
    config = make_config(tmp_path)
    stats = run_both(config, tokenizer)
    run = Path(config.run_dir)

    rollouts = read_jsonl(run / "rollouts.jsonl")
    assert [r["index"] for r in rollouts] == list(range(N_QUESTIONS))
    first = rollouts[2]
    assert set(first) >= {"id", "question", "gold", "rollouts", "num_correct"}
    assert [r["correct"] for r in first["rollouts"]] == [True, False, False, False]
    assert [r["answer"] for r in first["rollouts"]] == ["2", "102", "102.0", "9"]
    assert set(first["rollouts"][0]) == {"text", "answer", "correct", "grader_timed_out", "finish_reason", "num_tokens"}
    assert rollouts[3]["rollouts"][1]["finish_reason"] == "length" and rollouts[3]["rollouts"][1]["answer"] is None

    teacher, student = read_jsonl(run / "teacher.jsonl"), read_jsonl(run / "student.jsonl")
    # Mixed questions: 2, 3, 6, 7, 10, 11; 6 refined wrong, 7 truncated.
    assert [t["id"] for t in teacher] == [f"jsonl-train-{i}" for i in (2, 3, 10, 11)] == [s["id"] for s in student]
    system = load_prompts().system
    for t, s, i in zip(teacher, student, (2, 3, 10, 11)):
        assert [m["role"] for m in t["messages"]] == ["system", "user", "assistant"] == [m["role"] for m in s["messages"]]
        assert t["messages"][0]["content"] == s["messages"][0]["content"] == system
        assert t["messages"][2]["content"] == s["messages"][2]["content"] == f"Careful solution, step by step. \\boxed{{{i}}}"
        assert s["messages"][1]["content"] == f"Question {i}: what is {i}?"
        assert t["messages"][1]["content"] in possible_hinted_prompts(i, i)
    # The wrong rollout shown is one of the majority (102 / 102.0 are one answer), never the lone 9.
    assert re.search(r"Majority [AB] \\boxed\{102", teacher[0]["messages"][1]["content"])
    # With only unboxed wrong rollouts (question 3), one of those is shown.
    assert "and so on and so on" in teacher[1]["messages"][1]["content"]

    dropped = {d["id"]: d["reason"] for d in read_jsonl(run / "dropped.jsonl")}
    assert dropped == {"jsonl-train-0": "all-correct", "jsonl-train-1": "all-wrong", "jsonl-train-4": "all-correct", "jsonl-train-5": "all-wrong",
                       "jsonl-train-6": "refinement-wrong", "jsonl-train-7": "refinement-truncated", "jsonl-train-8": "all-correct",
                       "jsonl-train-9": "all-wrong"}
    assert stats["kept"] == 4 and stats["mixed"] == 6 and stats["dropped"]["refinement-wrong"] == 1
    assert stats["yield_of_questions"] == pytest.approx(4 / 12)
    all_stats = json.loads((run / "stats.json").read_text())
    assert all_stats["rollouts"]["questions_mixed"] == 6 and all_stats["rollouts"]["rollouts"] == 48

    manifest = json.loads((run / "manifest.json").read_text())
    for stage in ("rollouts", "refine"):
        entry = manifest["stages"][stage]
        assert {"inputs", "tokenizer_hash", "package_versions", "seed", "started", "finished", "model"} <= set(entry)
        assert entry["package_versions"]["transformers"]


def test_answer_first_refinements_are_dropped_when_asked(tmp_path, tokenizer):
    """refine.answer_first_chars drops a right refinement that opens with its boxed answer; off (the default), it is
    kept and the stage records its inputs as before the option existed."""
    def answer_first_on_10(user: str, s: int):
        i = int(re.search(r"-----\nQuestion (\d+)", user).group(1))
        return f"The final answer is \\boxed{{{i}}}, since {i} = {i}." if i == 10 else refine_script(user, s)

    outcomes = {}
    for chars in (0, 25):
        config = make_config(tmp_path, f"run-{chars}", **{"refine.answer_first_chars": chars})
        run_rollouts(config, backend=scripted(tokenizer))
        stats = run_refine(config, backend=scripted(tokenizer, answer_first_on_10))
        run = Path(config.run_dir)
        outcomes[chars] = {d["id"]: d["reason"] for d in read_jsonl(run / "dropped.jsonl")}.get("jsonl-train-10", KEPT), stats
        recorded = json.loads((run / "manifest.json").read_text())["stages"]["refine"]["inputs"]["refine"]
        assert recorded.get("answer_first_chars") == (chars or None)
    assert outcomes[0][0] == KEPT and outcomes[0][1]["kept"] == 4 and outcomes[0][1]["dropped"]["refinement-answer-first"] == 0
    assert outcomes[25][0] == "refinement-answer-first" and outcomes[25][1]["kept"] == 3
    assert outcomes[25][1]["dropped"]["refinement-answer-first"] == 1
    # "Careful solution, step by step. \boxed{2}": its box starts at character 32, past the 25 asked.
    assert [s["id"] for s in read_jsonl(tmp_path / "run-25" / "student.jsonl")] == [f"jsonl-train-{i}" for i in (2, 3, 11)]
    with pytest.raises(ConfigError, match=r"refine.answer_first_chars: must be >= 0 \(got -1\)"):
        make_config(tmp_path, "bad", **{"refine.answer_first_chars": -1})


class Crash(RuntimeError):
    pass


def crashing(backend, after_calls: int):
    original = backend.generate

    def generate(prompts, params):
        if len(backend.calls) >= after_calls:
            raise Crash()
        return original(prompts, params)

    backend.generate = generate
    return backend


def test_interrupted_stages_resume_without_loss_or_duplicates(tmp_path, tokenizer):
    reference = make_config(tmp_path, "reference")
    run_both(reference, tokenizer)

    config = make_config(tmp_path)
    with pytest.raises(Crash):
        run_rollouts(config, backend=crashing(scripted(tokenizer), after_calls=2))
    assert len(read_jsonl(Path(config.run_dir) / "rollouts.jsonl")) == 6
    resumed = scripted(tokenizer)
    run_rollouts(config, backend=resumed)
    assert len(resumed.calls) == 2  # only the two unfinished chunks
    with pytest.raises(Crash):
        run_refine(config, backend=crashing(scripted(tokenizer, refine_script), after_calls=1))
    run_refine(config, backend=scripted(tokenizer, refine_script))

    for name in ("rollouts.jsonl", "teacher.jsonl", "student.jsonl", "dropped.jsonl"):
        got = sorted(read_jsonl(Path(config.run_dir) / name), key=lambda r: r.get("index", 0))
        want = sorted(read_jsonl(Path(reference.run_dir) / name), key=lambda r: r.get("index", 0))
        assert got == want, name
    ids = [r["id"] for r in read_jsonl(Path(config.run_dir) / "refinements.jsonl")]
    assert len(ids) == len(set(ids)) == N_QUESTIONS


def test_finished_stage_is_not_redone_and_changed_inputs_are_refused(tmp_path, tokenizer):
    config = make_config(tmp_path)
    run_both(config, tokenizer)
    again = scripted(tokenizer)
    run_rollouts(config, backend=again)
    assert again.calls == []

    changed = make_config(tmp_path, **{"rollouts.k": 6})
    with pytest.raises(RunFolderError, match=r"rollouts\.k: 4 -> 6[\s\S]*--force"):
        run_rollouts(changed, backend=scripted(tokenizer))
    run_rollouts(changed, force=True, backend=scripted(tokenizer, lambda u, s: rollout_script(u, min(s, 3))))
    assert all(len(r["rollouts"]) == 6 for r in read_jsonl(Path(config.run_dir) / "rollouts.jsonl"))
    # refine was made from the old rollouts: it must notice.
    with pytest.raises(RunFolderError, match="rollouts_inputs_fingerprint"):
        run_refine(changed, backend=scripted(tokenizer, refine_script))


def test_refine_requires_finished_rollouts(tmp_path, tokenizer):
    with pytest.raises(RunFolderError, match="needs 'rollouts'"):
        run_refine(make_config(tmp_path), backend=scripted(tokenizer, refine_script))


def test_cli_stages_with_the_real_hf_backend_on_a_tiny_model(tmp_path, tiny_model_dir):
    data = write_questions(tmp_path / "q.jsonl", 5)
    common = ["--run_dir", str(tmp_path / "run"), "--model.name_or_path", str(tiny_model_dir), "--data.source", "jsonl",
              "--data.path", str(data), "--rollouts.sampling.max_new_tokens", "8", "--rollouts.chunk_questions", "2",
              "--backend.batch_size", "3", "--progress", "false"]
    assert main(["rollouts", *common]) == 0
    assert main(["refine", *common]) == 0
    rollouts = read_jsonl(tmp_path / "run" / "rollouts.jsonl")
    assert len(rollouts) == 5 and all(len(r["rollouts"]) == 4 for r in rollouts)
    assert all(x["num_tokens"] <= 8 and x["finish_reason"] in ("stop", "length") for r in rollouts for x in r["rollouts"])
    # A random model never boxes an answer: every question is all-wrong, nothing is kept.
    assert {d["reason"] for d in read_jsonl(tmp_path / "run" / "dropped.jsonl")} == {"all-wrong"}
    assert (tmp_path / "run" / "teacher.jsonl").read_text() == ""
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]["refine"]["model"] == str(tiny_model_dir)


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_stages import make_config, scripted
from tiny import byte_tokenizer
from pathlib import Path
from ssb.rollouts import run_rollouts
backend = scripted(byte_tokenizer())
slow = backend.generate
def generate(prompts, params):
    time.sleep({delay})
    return slow(prompts, params)
backend.generate = generate
run_rollouts(make_config(Path({tmp!r})), backend=backend)
"""


def test_kill_9_mid_stage_then_resume(tmp_path, tokenizer):
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), delay=0.6)
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    journal = tmp_path / "run" / "rollouts.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (journal.exists() and journal.read_text().count("\n") >= 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(read_jsonl(journal))
    assert 3 <= partial < N_QUESTIONS
    run_rollouts(make_config(tmp_path), backend=scripted(tokenizer))
    reference = make_config(tmp_path, "reference")
    run_rollouts(reference, backend=scripted(tokenizer))
    got = sorted(read_jsonl(journal), key=lambda r: r["index"])
    assert got == sorted(read_jsonl(Path(reference.run_dir) / "rollouts.jsonl"), key=lambda r: r["index"])


def test_prompts_longer_than_the_context_are_refused_or_skipped(tmp_path, tokenizer):
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "Question 0: short?", "answer": "0"}) + "\n"
                    + json.dumps({"question": "Question 1: " + "very long " * 100, "answer": "1"}) + "\n")
    base = {"run_dir": str(tmp_path / "run"), "data.source": "jsonl", "data.path": str(data), "progress": False,
            "rollouts.sampling.max_new_tokens": 100}
    backend = scripted(tokenizer)
    backend.context_length = 600  # the long question's prompt alone is over 1000 byte-level tokens
    with pytest.raises(DataError, match=r"q\.jsonl:2: question: prompt of \d+ tokens \+ max_new_tokens 100 exceeds the model's context of 600"):
        run_rollouts(load_config(None, base), backend=backend)
    assert not (tmp_path / "run").exists()
    stats = run_rollouts(load_config(None, {**base, "data.on_bad_record": "skip"}), backend=backend)
    assert stats["questions"] == 1 and stats["skipped_input_records"] == 1


def test_hinted_prompt_too_long_is_dropped_with_its_reason(tmp_path, tokenizer):
    config = make_config(tmp_path)
    run_rollouts(config, backend=scripted(tokenizer))
    backend = scripted(tokenizer, refine_script)
    backend.context_length = 3000  # bare questions fit; hinted prompts (~1500 tokens) + 2048 new tokens do not
    stats = run_refine(config, backend=backend)
    assert stats["kept"] == 0 and stats["dropped"]["hinted-prompt-too-long"] == 6
    assert backend.calls == []
    assert {d["reason"] for d in read_jsonl(Path(config.run_dir) / "dropped.jsonl")} >= {"hinted-prompt-too-long"}


def test_run_folder_of_an_incompatible_version_is_refused(tmp_path, tokenizer):
    config = make_config(tmp_path)
    run = Path(config.run_dir)
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"ssb_version": "0.0.1", "run_folder_version": 0, "stages": {}}))
    with pytest.raises(RunFolderError, match=r"made by ssb 0\.0\.1 with run-folder format 0; this ssb .* reads format 2"):
        run_rollouts(config, backend=scripted(tokenizer))
    assert not (run / "rollouts.jsonl").exists()


def test_random_hint_uses_another_questions_rollouts_seeded_never_its_own(tmp_path, tokenizer):
    config = make_config(tmp_path, **{"refine.hint": "random"})
    run_rollouts(config, backend=scripted(tokenizer))
    run_refine(config, backend=scripted(tokenizer, refine_script))
    journal = [e for e in read_jsonl(Path(config.run_dir) / "refinements.jsonl") if "hinted_prompt" in e]
    assert len(journal) == 6
    for entry in journal:
        i = int(entry["id"].rsplit("-", 1)[1])
        donor = int(entry["hint_from"].rsplit("-", 1)[1])
        assert donor != i and donor % 4 in (2, 3)  # another question with mixed rollouts
        assert entry["hinted_prompt"] in possible_hinted_prompts(i, donor)  # the question's own problem, the donor's rollouts
    again = make_config(tmp_path, "again", **{"refine.hint": "random"})
    run_rollouts(again, backend=scripted(tokenizer))
    run_refine(again, backend=scripted(tokenizer, refine_script))
    assert [e.get("hint_from") for e in read_jsonl(Path(again.run_dir) / "refinements.jsonl")] == \
        [e.get("hint_from") for e in read_jsonl(Path(config.run_dir) / "refinements.jsonl")]


def test_refine_counts_refinements_that_copy_the_shown_wrong_answer(tmp_path, tokenizer):
    def copy_the_wrong_answer(user, s):
        shown_wrong = user.split("incorrect\nby auto-evaluator:\n-----\n")[1].split("\n-----\n")[0]
        return f"Following the second student. {shown_wrong}"

    config = make_config(tmp_path)
    run_rollouts(config, backend=scripted(tokenizer))
    stats = run_refine(config, backend=scripted(tokenizer, copy_the_wrong_answer))
    # Questions 2 mod 4 show a boxed wrong answer, which is copied; questions 3 mod 4 show one without a box.
    assert stats["refinement_is_shown_wrong_answer"] == 3 and stats["dropped"]["refinement-wrong"] == 3
    assert stats["dropped"]["refinement-no-answer"] == 3 and stats["kept"] == 0
