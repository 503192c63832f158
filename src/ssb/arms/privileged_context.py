"""The on-policy arm's training rows: each question's student prompt and the privileged context its teacher sees.

``onpolicy.context`` names what the teacher is shown, built from the data and the run folder alone:

- ``gold-solution``: the dataset's worked solution (GSM8K's ``answer``, MATH's ``solution``, a JSONL file's
  ``data.solution_field``) as ``gold_solution_text`` cleans it; every question trains, not only the mixed ones.
- ``hint-pair``: the correct and the wrong rollout SSB's hinted prompt shows (``ssb.selection``, drawn with refine's
  seed per question, so the same pair SSB's refinement saw), from ``rollouts.jsonl``; mixed questions only.
- ``refined``: SSB's kept refinement (``student.jsonl``), as a demonstration; the questions refine kept.
- ``gold-answer``: the final answer alone.
- ``successful-rollout`` (SDPO): nothing from the data; the trainer shows the teacher another completion of the same
  question from the student's own group that the grader finds correct, so each row carries its question's ``gold``
  answer for the grader, never for the teacher.
- ``none``: nothing, with the identity teacher prompt (``ssb.prompts.IDENTITY_TEACHER_TEMPLATE``): the teacher's
  prompt is then the student's, the identity control.

A row is TRL's: ``prompt`` (the system prompt and the bare question, the conversation every other stage renders,
folded for templates without a system role), ``privileged_context`` (text; TRL puts it into the teacher's prompt,
never the student's) and ``id``. A context that needs an upstream stage (``ssb.config.CONTEXT_UPSTREAM``) reads it only once
that stage has finished and its outputs check out.
"""

from __future__ import annotations

import re

from ssb.chat import ChatFormat, fold_system_into_user, messages
from ssb.data import DataError, load_problems, solution_field
from ssb.prompts import load_prompts
from ssb.runfolder.artifacts import RunFolderError, read_jsonl

_ANNOTATION = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations: "48/2 = <<48/2=24>>24"


def gold_solution_text(solution: str) -> str:
    """A worked solution as the teacher reads it: GSM8K's calculator annotations (``<<48/2=24>>``) removed and a final
    ``#### X`` line written ``The final answer is \\boxed{X}.`` (the answer format ssb's prompts ask for); any other text
    as it stands."""
    text = _ANNOTATION.sub("", solution)
    body, marker, answer = text.rpartition("####")
    if marker:
        text = f"{body.rstrip()}\nThe final answer is \\boxed{{{answer.strip()}}}."
    return text.strip()


def reference_text(solution: str) -> str:
    return f"A reference solution:\n{solution}"


def gold_answer_text(gold: str) -> str:
    return f"The final answer is \\boxed{{{gold}}}."


def hint_pair_text(correct: str, wrong: str) -> str:
    return f"A correct solution:\n{correct}\n\nAn incorrect solution (its final answer is wrong):\n{wrong}"


def _row(chat: ChatFormat, system: str, question: str, context: str, record_id: str) -> dict:
    conversation = messages(system, question)
    if not chat.supports_system_role:  # the same folding every other stage applies
        conversation = fold_system_into_user(conversation)
    return {"prompt": conversation, "privileged_context": context, "id": record_id}


def training_rows(config, chat: ChatFormat, folder) -> list[dict]:
    """The rows ``config.onpolicy.context`` trains on, in data order; ``folder`` is the run folder (a ``RunFolder``)."""
    context = config.onpolicy.context
    system = load_prompts(config.prompts.system, config.prompts.hinted).system
    upstream = config.onpolicy.context_upstream()
    if upstream is not None:
        folder.require_finished(upstream, needed_by=f"onpolicy (context {context})")
        folder.verify(upstream)
    if context == "hint-pair":
        return _hint_pair_rows(config, chat, system, folder)
    if context == "refined":
        return _refined_rows(chat, system, folder)
    problems = load_problems(config.data).problems
    if context == "gold-solution":
        name = solution_field(config.data)
        missing = [p for p in problems if p.solution is None or not p.solution.strip()]
        if name is None or missing:
            where = f"{missing[0].source}: {name}" if name is not None else f"data.source {config.data.source}"
            raise DataError(f"{where}: onpolicy.context gold-solution needs a worked solution for every question"
                            + ("" if name is not None else " (this layout has none; source jsonl with data.solution_field names one)"))
        return [_row(chat, system, p.question, reference_text(gold_solution_text(p.solution)), p.id) for p in problems]
    if context == "successful-rollout":  # the context comes from the student's own group, graded against the gold answer
        return [{**_row(chat, system, p.question, "", p.id), "gold": p.gold} for p in problems]
    text = gold_answer_text if context == "gold-answer" else (lambda gold: "")
    return [_row(chat, system, p.question, text(p.gold), p.id) for p in problems]


def _hint_pair_rows(config, chat: ChatFormat, system: str, folder) -> list[dict]:
    from ssb.refinement import selection_for

    path = folder.file("rollouts.jsonl")
    records = sorted(read_jsonl(path), key=lambda r: r["index"])
    rows = []
    for record in records:
        if not 0 < record["num_correct"] < len(record["rollouts"]):
            continue
        pair = selection_for(record, config)  # refine's draw for this question: the pair SSB's hinted prompt shows
        texts = [record["rollouts"][i]["text"] for i in (pair.correct_index, pair.wrong_index)]
        rows.append(_row(chat, system, record["question"], hint_pair_text(*texts), record["id"]))
    if not rows:
        raise RunFolderError(f"{path}: no question has both a correct and a wrong rollout, so onpolicy.context hint-pair has nothing to train on")
    return rows


def _refined_rows(chat: ChatFormat, system: str, folder) -> list[dict]:
    path = folder.file("student.jsonl")
    rows = []
    for number, record in enumerate(read_jsonl(path), start=1):
        turns = {m["role"]: m["content"] for m in record["messages"]}
        if "user" not in turns or "assistant" not in turns:
            raise RunFolderError(f"{path}:{number}: messages: a kept refinement needs a user and an assistant turn")
        rows.append(_row(chat, system, turns["user"], reference_text(turns["assistant"]), record["id"]))
    if not rows:
        raise RunFolderError(f"{path}: refine kept no solution, so onpolicy.context refined has nothing to train on")
    return rows
