"""Stage 1 (Algorithm 1, lines 6-12): K sampled solutions per question, each graded.

Questions go through ``ssb.chunked_generation`` in chunks of ``rollouts.chunk_questions``, one
journal line per question in ``rollouts.jsonl``; an interrupted run resumes with the same seeds and
ends up with the output of an uninterrupted one.
"""

from __future__ import annotations

import logging

from ssb.chat import messages
from ssb.chunked_generation import ChunkedGeneration, Job, drop_overlong
from ssb.config import SSBConfig
from ssb.data import Problem, load_problems
from ssb.generation import Completion, LazyBackend
from ssb.grading import grade
from ssb.prompts import load_prompts
from ssb.runfolder.artifacts import read_jsonl
from ssb.runfolder.folder import RunFolder, model_provenance

_log = logging.getLogger(__name__)


def _record(index: int, problem: Problem, completions: list[Completion], timeout_s: float) -> dict:
    # drop_overlong removed every question whose prompt cannot fit, so completions are never None here.
    rollouts = []
    for c in completions:
        g = grade(c.text, problem.gold, timeout_s)
        rollouts.append({"text": c.text, "answer": g.answer, "correct": g.correct, "grader_timed_out": g.timed_out,
                         "finish_reason": c.finish_reason, "num_tokens": c.num_tokens})
    return {"index": index, "id": problem.id, "question": problem.question, "gold": problem.gold,
            "source": problem.source, "num_correct": sum(r["correct"] for r in rollouts), "rollouts": rollouts}


def rollout_stats(records: list[dict], skipped_records: int) -> dict:
    k = [len(r["rollouts"]) for r in records]
    flat = [x for r in records for x in r["rollouts"]]
    return {
        "questions": len(records),
        "skipped_input_records": skipped_records,
        "rollouts": len(flat),
        "correct_rollouts": sum(x["correct"] for x in flat),
        "rollout_accuracy": sum(x["correct"] for x in flat) / len(flat) if flat else 0.0,
        "questions_all_correct": sum(r["num_correct"] == n for r, n in zip(records, k)),
        "questions_all_wrong": sum(r["num_correct"] == 0 for r in records),
        "questions_mixed": sum(0 < r["num_correct"] < n for r, n in zip(records, k)),
        "truncated_rollouts": sum(x["finish_reason"] == "length" for x in flat),
        "rollouts_without_boxed_answer": sum(x["answer"] is None for x in flat),
        "grader_timeouts": sum(x["grader_timed_out"] for x in flat),
        "generated_tokens": sum(x["num_tokens"] for x in flat),
        "mean_tokens_per_rollout": sum(x["num_tokens"] for x in flat) / len(flat) if flat else 0.0,
    }


def run_rollouts(config: SSBConfig, force: bool = False, backend=None) -> dict:
    """Run (or resume) the rollouts stage; returns its stats. ``backend`` replaces the model's backend."""
    folder = RunFolder(config.run_dir)
    prompts = load_prompts(config.prompts.system, config.prompts.hinted)
    loaded = load_problems(config.data)  # bad input fails here, before any stage output is written
    backend = backend or LazyBackend(config)
    drop_overlong(loaded, backend, prompts.system, config.rollouts.sampling.max_new_tokens, config.data.on_bad_record)
    stage = folder.stage("rollouts", config)
    if not stage.begin(force):
        _log.info("rollouts: already complete in %s", folder.path)
        return stage.stats()

    journal_path = folder.file("rollouts.jsonl")
    invocation = ChunkedGeneration(
        journal=journal_path, items=loaded.problems, item_id=lambda p: p.id, job=lambda p: Job(messages(prompts.system, p.question)),
        record=lambda index, problem, job, completions: _record(index, problem, completions, config.grading.timeout_s),
        sampling=config.rollouts.sampling, samples_per_item=config.rollouts.k, chunk_size=config.rollouts.chunk_questions,
        seed=config.seed, seed_key="rollouts", progress=config.progress, description="rollouts",
    ).run(backend)

    records = sorted(read_jsonl(journal_path), key=lambda r: r["index"])
    stats = rollout_stats(records, len(loaded.skipped))
    stats["this_invocation"] = invocation
    stage.finish({**model_provenance(config, backend.chat.tokenizer), "skipped_input_records": loaded.skipped}, stats)
    return stats

