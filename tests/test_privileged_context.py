"""The on-policy arm's privileged contexts, built from the data and the run folder, and its teacher prompt template."""

import json

import pytest

from helpers import phase1_folder, write_questions
from ssb.arms.privileged_context import gold_solution_text, training_rows
from ssb.chat import ChatFormat
from ssb.config import ConfigError, load_config
from ssb.data import DataError
from ssb.models import load_tokenizer
from ssb.prompts import load_prompts, teacher_template
from ssb.runfolder.artifacts import RunFolderError, read_jsonl
from ssb.runfolder.folder import RunFolder

GSM8K_ANSWER = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")


def test_gold_solution_text_drops_the_calculator_annotations_and_boxes_the_final_answer():
    assert gold_solution_text(GSM8K_ANSWER) == ("Natalia sold 48/2 = 24 clips in May.\n"
                                                "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
                                                "The final answer is \\boxed{72}.")
    math = "We have $x^2 = 4$, so $x = \\boxed{2}$ (the <b> tag is text)."
    assert gold_solution_text(math) == math  # a MATH solution has neither annotations nor a #### line


def gsm8k_file(tmp_path, n=3):
    path = tmp_path / "gsm8k_train.jsonl"
    rows = [{"question": f"Question {i}: Natalia sold clips?", "answer": GSM8K_ANSWER.replace("72", str(70 + i))} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_for(config, tiny_model_dir):
    return training_rows(config, ChatFormat(load_tokenizer(config.model)), RunFolder(config.run_dir))


def test_gold_solution_and_gold_answer_come_from_the_data_and_only_the_teacher_sees_them(tmp_path, tiny_model_dir):
    settings = {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "data.source": "gsm8k",
                "data.path": str(gsm8k_file(tmp_path))}
    system = load_prompts().system
    solution = rows_for(load_config(None, {**settings, "onpolicy.context": "gold-solution"}), tiny_model_dir)
    answer = rows_for(load_config(None, {**settings, "onpolicy.context": "gold-answer"}), tiny_model_dir)
    none = rows_for(load_config(None, {**settings, "onpolicy.context": "none"}), tiny_model_dir)
    for rows in (solution, answer, none):  # every question trains, with the bare question as the student's prompt
        assert [r["prompt"] for r in rows] == [[{"role": "system", "content": system},
                                                {"role": "user", "content": f"Question {i}: Natalia sold clips?"}] for i in range(3)]
    assert solution[1]["privileged_context"] == ("A reference solution:\nNatalia sold 48/2 = 24 clips in May.\n"
                                                 "Natalia sold 48+24 = 71 clips altogether in April and May.\nThe final answer is \\boxed{71}.")
    assert [r["privileged_context"] for r in answer] == [f"The final answer is \\boxed{{{70 + i}}}." for i in range(3)]
    assert [r["privileged_context"] for r in none] == ["", "", ""]
    assert all(r["privileged_context"] not in json.dumps(r["prompt"]) for r in solution + answer)
    math = tmp_path / "math500_test.jsonl"  # MATH's worked solution is its own field
    math.write_text(json.dumps({"problem": "Solve $x^2 = 4$, x > 0.", "answer": "2", "unique_id": "a", "solution": "So $x = \\boxed{2}$."}) + "\n")
    (row,) = rows_for(load_config(None, {**settings, "data.source": "math500", "data.path": str(math), "onpolicy.context": "gold-solution"}),
                      tiny_model_dir)
    assert row["privileged_context"] == "A reference solution:\nSo $x = \\boxed{2}$." and row["id"] == "math500-a"


def test_gold_solution_needs_a_worked_solution_and_says_where_it_is_missing(tmp_path, tiny_model_dir):
    data = write_questions(tmp_path / "q.jsonl", 3)  # question and answer only
    settings = {"run_dir": str(tmp_path / "run"), "model.name_or_path": str(tiny_model_dir), "data.source": "jsonl", "data.path": str(data),
                "onpolicy.context": "gold-solution"}
    with pytest.raises(DataError, match=r"q\.jsonl:1: solution: onpolicy.context gold-solution needs a worked solution"):
        rows_for(load_config(None, {**settings, "data.solution_field": "solution"}), tiny_model_dir)
    with pytest.raises(DataError, match="data.source jsonl: .* data.solution_field names one"):
        rows_for(load_config(None, settings), tiny_model_dir)


def test_hint_pair_and_refined_come_from_the_run_folder_and_need_their_stage(tmp_path, tiny_model_dir):
    with pytest.raises(RunFolderError, match="needs 'rollouts' to have finished"):
        rows_for(load_config(None, {"run_dir": str(tmp_path / "empty"), "model.name_or_path": str(tiny_model_dir),
                                    "onpolicy.context": "hint-pair"}), tiny_model_dir)
    config = phase1_folder(tmp_path, tiny_model_dir)
    pairs = rows_for(load_config(None, {"run_dir": config.run_dir, "model.name_or_path": str(tiny_model_dir),
                                        "onpolicy.context": "hint-pair"}), tiny_model_dir)
    # The pair refine showed each mixed question (its journal's selection), read independently of the selection code.
    journal = {e["id"]: e for e in read_jsonl(tmp_path / "run" / "refinements.jsonl") if "selection" in e}
    rollouts = {r["id"]: r for r in read_jsonl(tmp_path / "run" / "rollouts.jsonl")}
    assert [r["id"] for r in pairs] == sorted(journal, key=lambda i: rollouts[i]["index"])
    for row in pairs:
        texts = [rollouts[row["id"]]["rollouts"][journal[row["id"]]["selection"][k]]["text"] for k in ("correct_index", "wrong_index")]
        assert row["privileged_context"] == f"A correct solution:\n{texts[0]}\n\nAn incorrect solution (its final answer is wrong):\n{texts[1]}"
        assert row["prompt"][-1] == {"role": "user", "content": rollouts[row["id"]]["question"]}
    refined = rows_for(load_config(None, {"run_dir": config.run_dir, "model.name_or_path": str(tiny_model_dir),
                                          "onpolicy.context": "refined"}), tiny_model_dir)
    kept = read_jsonl(tmp_path / "run" / "student.jsonl")
    assert [(r["id"], r["prompt"], r["privileged_context"]) for r in refined] == [
        (k["id"], k["messages"][:2], "A reference solution:\n" + k["messages"][2]["content"]) for k in kept]
    assert all(k["messages"][2]["content"] not in json.dumps(r["prompt"]) for r, k in zip(refined, kept))


def test_the_teacher_template_keeps_literal_braces_and_needs_each_placeholder_once(tmp_path):
    text = teacher_template().format(prompt="Q {x}", privileged_context="C")
    assert text.startswith("Q {x}\n\n") and "\nC\n" in text and "\\boxed{}" in text  # literal braces written as they stand
    bad = tmp_path / "t.txt"
    for content, missing in (("{prompt} only", "privileged_context"), ("{prompt}{prompt}{privileged_context}", "prompt")):
        bad.write_text(content)
        with pytest.raises(ValueError, match=rf"t\.txt: .* must hold \{{{missing}\}} exactly once"):
            teacher_template(str(bad))


def test_onpolicy_config_refuses_what_trl_cannot_run():
    with pytest.raises(ConfigError, match="onpolicy.alpha: distillation sampled-token is reverse KL only"):
        load_config(None, {"onpolicy.distillation": "sampled-token"})
    with pytest.raises(ConfigError, match="onpolicy.num_generations: must divide batch_size x gradient_accumulation_steps = 6"):
        load_config(None, {"onpolicy.batch_size": 3, "onpolicy.gradient_accumulation_steps": 2, "onpolicy.num_generations": 4})
    with pytest.raises(ConfigError, match="onpolicy.alpha: must be in \\[0, 1\\]"):
        load_config(None, {"onpolicy.alpha": 1.5})
    with pytest.raises(ConfigError, match="rounds > 1 iterates SSB's stages"):
        load_config(None, {"arm": "onpolicy", "rounds": 2, "data.limit": 4})
    assert load_config(None, {"onpolicy.distillation": "sampled-token", "onpolicy.alpha": 1}).onpolicy.alpha == 1.0
