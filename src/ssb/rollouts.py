"""Stage 1 (Algorithm 1, lines 6-12): K sampled solutions per question, each graded.

Questions are processed in fixed chunks of ``rollouts.chunk_questions``; each chunk is generated in
one backend call seeded from (seed, chunk index), and its questions are journalled to
``rollouts.jsonl`` as soon as the chunk finishes, one line per question. After an interruption the
same command regenerates only chunks with unfinished questions, with the same seed, so the output
equals that of an uninterrupted run, and appends only the questions still missing.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from tqdm.auto import tqdm

from ssb.artifacts import JsonlAppender, read_jsonl, text_sha256
from ssb.chat import messages
from ssb.config import SSBConfig
from ssb.data import DataError, LoadedProblems, Problem, load_problems
from ssb.generation import Completion, LazyBackend, SamplingParams, derive_seed, overflow
from ssb.grading import grade
from ssb.prompts import load_prompts
from ssb.run_folder import RunFolder, model_provenance

_log = logging.getLogger(__name__)


def stage_inputs(config: SSBConfig, system_prompt: str) -> dict:
    return {
        "seed": config.seed,
        "model": dataclasses.asdict(config.model),
        "data": dataclasses.asdict(config.data),
        "system_prompt_sha256": text_sha256(system_prompt),
        "rollouts": dataclasses.asdict(config.rollouts),
        "grading": dataclasses.asdict(config.grading),
    }


def drop_overlong(loaded: LoadedProblems, backend, system: str, max_new_tokens: int, on_bad_record: str) -> None:
    """Remove (or refuse) questions whose prompt and generation budget exceed the model's context."""
    keep = []
    for problem in loaded.problems:
        why = overflow(backend.chat, messages(system, problem.question), max_new_tokens, backend.context_length)
        if why is None:
            keep.append(problem)
            continue
        message = f"{problem.source}: question: {why}"
        if on_bad_record == "error":
            raise DataError(message)
        _log.warning("skipping record: %s", message)
        loaded.skipped.append(message)
    loaded.problems = keep


def _record(index: int, problem: Problem, completions: list[Completion], timeout_s: float) -> dict:
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
    loaded = load_problems(config.data)  # bad input fails here, before the run folder is touched
    backend = backend or LazyBackend(config)
    drop_overlong(loaded, backend, prompts.system, config.rollouts.sampling.max_new_tokens, config.data.on_bad_record)
    inputs = stage_inputs(config, prompts.system)
    if not folder.begin_stage("rollouts", inputs, force):
        _log.info("rollouts: already complete in %s", folder.path)
        return folder.stats()["rollouts"]

    journal_path = folder.file("rollouts.jsonl")
    done = {r["id"] for r in read_jsonl(journal_path)}
    size = config.rollouts.chunk_questions
    chunks = [(c, loaded.problems[s : s + size]) for c, s in enumerate(range(0, len(loaded.problems), size))]
    pending = [(c, chunk) for c, chunk in chunks if any(p.id not in done for p in chunk)]
    _log.info("rollouts: %d questions, %d done, %d chunks to generate", len(loaded.problems), len(done), len(pending))

    start, new_tokens = time.monotonic(), 0
    with JsonlAppender(journal_path) as journal:
        for c, chunk in tqdm(pending, desc="rollouts", unit="chunk", disable=not config.progress):
            params = SamplingParams.from_config(config.rollouts.sampling, n=config.rollouts.k, seed=derive_seed(config.seed, "rollouts", c))
            completions = backend.generate([messages(prompts.system, p.question) for p in chunk], params)
            for offset, (problem, samples) in enumerate(zip(chunk, completions)):
                if problem.id not in done:
                    journal.append(_record(c * size + offset, problem, samples, config.grading.timeout_s))
                    new_tokens += sum(s.num_tokens for s in samples)
    elapsed = time.monotonic() - start

    records = sorted(read_jsonl(journal_path), key=lambda r: r["index"])
    stats = rollout_stats(records, len(loaded.skipped))
    stats["this_invocation"] = {"wall_s": round(elapsed, 2), "generated_tokens": new_tokens,
                                "tokens_per_s": round(new_tokens / elapsed, 2) if elapsed > 0 else None}
    folder.finish_stage("rollouts", inputs, {**model_provenance(config, backend.chat.tokenizer), "skipped_input_records": loaded.skipped}, stats)
    return stats

