"""Stage 2 (Algorithm 1, lines 13-28): selection, hinted refinement, verification.

For every question with at least one correct and one wrong rollout, a (correct, wrong) pair is
selected (``ssb.selection``), shown to the same model in the paper's hinted prompt, and the model
writes one solution. It is kept only when it ends on its own (not truncated) and its last boxed
answer is correct (and, with ``refine.answer_first_chars``, when it does not open with a boxed
answer; with ``refine.prompt_terms``, when it does not use the hinted prompt's own words: the checks
of ``ssb.training_data``). Each question's outcome goes to the ``refinements.jsonl`` journal as soon
as its chunk finishes (``ssb.chunked_generation``); when all are done the views are written from the
journal, atomically: ``teacher.jsonl`` (system, hinted prompt, solution), ``student.jsonl`` (system,
bare question, the same solution) and ``dropped.jsonl`` (id and reason for every question not kept).
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter

from ssb.chat import messages
from ssb.chunked_generation import ChunkedGeneration, Job
from ssb.config import RefineConfig, SSBConfig
from ssb.generation import Completion, LazyBackend
from ssb.grading import answers_equivalent, grade
from ssb.hints import hint_donor, hinted_prompt
from ssb.prompts import load_prompts
from ssb.runfolder.artifacts import JsonlAppender, read_jsonl, write_jsonl_atomic
from ssb.runfolder.folder import RunFolder, model_provenance
from ssb.selection import select_pair
from ssb.training_data import answers_first, uses_terms

_log = logging.getLogger(__name__)

KEPT = "kept"
DROP_REASONS = ("all-correct", "all-wrong", "hinted-prompt-too-long", "refinement-truncated", "refinement-no-answer", "refinement-wrong",
                "refinement-answer-first", "refinement-prompt-terms")


def selection_for(record: dict, config: SSBConfig):
    rollouts = record["rollouts"]
    rng = random.Random(f"{config.seed}:select:{record['id']}")
    same = lambda a, b: answers_equivalent(a, b, config.grading.timeout_s) is True  # noqa: E731 (timeout = different)
    return select_pair([r["answer"] for r in rollouts], [r["correct"] for r in rollouts], rng, same,
                       config.refine.prefer_answered_wrong)


def _unrefinable(record: dict) -> dict:
    reason = "all-correct" if record["num_correct"] == len(record["rollouts"]) else "all-wrong"
    return {"index": record["index"], "id": record["id"], "outcome": reason}


def _outcome(completion: Completion, answer: str | None, correct: bool, refine: RefineConfig) -> str:
    if completion.finish_reason == "length":
        return "refinement-truncated"
    if answer is None:
        return "refinement-no-answer"
    if not correct:
        return "refinement-wrong"
    if answers_first(completion.text, refine.answer_first_chars):
        return "refinement-answer-first"
    return "refinement-prompt-terms" if uses_terms(completion.text, refine.prompt_terms) else KEPT


def _refinement_record(record: dict, job: Job, completions: list[Completion] | None, config: SSBConfig) -> dict:
    """A mixed question's journal line: its selection and hinted prompt, and the graded refinement."""
    if completions is None:
        return {"index": record["index"], "id": record["id"], "outcome": "hinted-prompt-too-long", **job.detail}
    (completion,) = completions
    g = grade(completion.text, record["gold"], config.grading.timeout_s)
    outcome = _outcome(completion, g.answer, g.correct, config.refine)
    return {"index": record["index"], "id": record["id"], "outcome": outcome, **job.detail,
            "refinement": {"text": completion.text, "answer": g.answer, "correct": g.correct, "grader_timed_out": g.timed_out,
                           "finish_reason": completion.finish_reason, "num_tokens": completion.num_tokens}}


def _views(journal: list[dict], records_by_id: dict[str, dict], system: str):
    teacher, student, dropped = [], [], []
    for entry in journal:
        record = records_by_id[entry["id"]]
        if entry["outcome"] != KEPT:
            dropped.append({"id": entry["id"], "reason": entry["outcome"],
                            **({"refinement_answer": entry["refinement"]["answer"]} if "refinement" in entry else {})})
            continue
        solution = entry["refinement"]["text"]
        common = {"id": entry["id"], "gold": record["gold"]}
        teacher.append({**common, "messages": messages(system, entry["hinted_prompt"], solution)})
        student.append({**common, "messages": messages(system, record["question"], solution)})
    return teacher, student, dropped


# Drop reasons of filters added later: counted in the stats only where their filter is on (or dropped one), so that
# the stats of a run without them are those it had before they existed.
LATER_DROP_REASONS = {"refinement-prompt-terms": lambda refine: bool(refine.prompt_terms)}


def refine_stats(journal: list[dict], refine=None) -> dict:
    """Refine's counts from its journal; ``refine`` (the config section) says which later filters were on."""
    outcomes = Counter(e["outcome"] for e in journal)
    reasons = [r for r in DROP_REASONS if r not in LATER_DROP_REASONS or outcomes[r] or (refine is not None and LATER_DROP_REASONS[r](refine))]
    mixed = sum(1 for e in journal if e["outcome"] not in ("all-correct", "all-wrong"))
    refined = [e["refinement"] for e in journal if "refinement" in e]
    return {
        "questions": len(journal),
        "mixed": mixed,
        "kept": outcomes[KEPT],
        "dropped": {reason: outcomes[reason] for reason in reasons},
        "yield_of_questions": outcomes[KEPT] / len(journal) if journal else 0.0,
        "yield_of_mixed": outcomes[KEPT] / mixed if mixed else 0.0,
        "wrong_from_majority_answer": sum(1 for e in journal if e.get("selection", {}).get("wrong_group_size", 0) > 1),
        # A refiner that copies the hint instead of solving: its answer is, verbatim, the wrong one it was shown.
        "refinement_is_shown_wrong_answer": sum(1 for e in journal if "refinement" in e and e["refinement"]["answer"] is not None
                                                and e["refinement"]["answer"] == e["selection"]["wrong_answer"]),
        "grader_timeouts": sum(r["grader_timed_out"] for r in refined),
        "generated_tokens": sum(r["num_tokens"] for r in refined),
    }


def run_refine(config: SSBConfig, force: bool = False, backend=None) -> dict:
    """Run (or resume) selection + refinement; returns its stats. ``backend`` replaces the model's backend."""
    folder = RunFolder(config.run_dir)
    stage = folder.stage("refine", config)  # needs finished rollouts
    prompts = load_prompts(config.prompts.system, config.prompts.hinted)
    if not stage.begin(force):
        _log.info("refine: already complete in %s", folder.path)
        return stage.stats()

    records = sorted(read_jsonl(folder.file("rollouts.jsonl")), key=lambda r: r["index"])
    journal_path = folder.file("refinements.jsonl")
    mixed = [r for r in records if 0 < r["num_correct"] < len(r["rollouts"])]
    mixed_ids = {r["id"] for r in mixed}
    done = {e["id"] for e in read_jsonl(journal_path)}
    with JsonlAppender(journal_path) as journal:
        for record in records:
            if record["id"] not in mixed_ids and record["id"] not in done:
                journal.append(_unrefinable(record))

    def job(record: dict) -> Job:
        donor = hint_donor(record, mixed, config.refine.hint, config.seed)
        selection = selection_for(donor, config)
        prompt = hinted_prompt(prompts, record["question"], donor, selection.correct_index, selection.wrong_index)
        return Job(messages(prompts.system, prompt), {"selection": dataclasses.asdict(selection), "hint_from": donor["id"], "hinted_prompt": prompt})

    backend = backend or LazyBackend(config)
    invocation = ChunkedGeneration(
        journal=journal_path, items=mixed, item_id=lambda r: r["id"], job=job,
        record=lambda index, record, job, completions: _refinement_record(record, job, completions, config),
        sampling=config.refine.sampling, samples_per_item=1, chunk_size=config.refine.chunk_questions,
        seed=config.seed, seed_key="refine", progress=config.progress, description="refine",
    ).run(backend)

    entries = sorted(read_jsonl(journal_path), key=lambda e: e["index"])
    teacher, student, dropped = _views(entries, {r["id"]: r for r in records}, prompts.system)
    write_jsonl_atomic(folder.file("teacher.jsonl"), teacher)
    write_jsonl_atomic(folder.file("student.jsonl"), student)
    write_jsonl_atomic(folder.file("dropped.jsonl"), dropped)
    stats = refine_stats(entries, config.refine)
    stats["this_invocation"] = invocation
    stage.finish(model_provenance(config, backend.chat.tokenizer), stats)
    return stats
