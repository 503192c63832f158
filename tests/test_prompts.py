from pathlib import Path

import pytest

from ssb.prompts import load_prompts

PAPER_SYSTEM = (
    "**Role:** You are an expert math tutor. When you are given a problem to solve, you provide detailed "
    "step-by-step reasoning in your solution. Your response is clear, precise, and unambiguous. You do not skip "
    "any step. You put your final answer within \\boxed{...} at the end of your response."
)


def test_system_prompt_is_the_papers():
    assert load_prompts().system == PAPER_SYSTEM


def test_hinted_prompt_renders_the_papers_text():
    text = load_prompts().render_hinted("What is {x}?", "CORRECT \\boxed{2}", "WRONG \\boxed{3}")
    assert text.startswith(
        "We have two sample responses from students for a math problem for you\nto observe. One of the responses is correct"
    )
    assert ("The following is the problem:\n-----\nWhat is {x}?\n-----\n"
            "This is the correct response from a student:\n-----\nCORRECT \\boxed{2}\n-----\n") in text
    assert "labelled as incorrect\nby auto-evaluator:\n-----\nWRONG \\boxed{3}\n-----\nWrite a coherent, step-by-step derivation" in text
    assert "There should not be a\nslightest mention or hint" in text
    assert text.endswith(
        "Conclude the entire response with the final answer, enclosed in \\boxed{},\nat the very end. Make sure your "
        "enclosed final answer exactly matches\nthe enclosed final answer in the given correct response of the student."
    )


def test_texts_with_placeholder_lookalikes_are_not_substituted_twice():
    text = load_prompts().render_hinted("{rejected_generation}", "a", "b")
    assert "-----\n{rejected_generation}\n-----" in text


def test_user_templates_replace_the_papers(tmp_path: Path):
    (tmp_path / "sys.txt").write_text("Be brief.")
    (tmp_path / "hint.txt").write_text("Q={question} C={chosen_correct_generation} W={rejected_generation}")
    prompts = load_prompts(str(tmp_path / "sys.txt"), str(tmp_path / "hint.txt"))
    assert prompts.system == "Be brief."
    assert prompts.render_hinted("q", "c", "w") == "Q=q C=c W=w"


def test_template_without_placeholders_is_refused(tmp_path: Path):
    (tmp_path / "hint.txt").write_text("Q={question}")
    with pytest.raises(ValueError, match="chosen_correct_generation"):
        load_prompts(None, str(tmp_path / "hint.txt"))
