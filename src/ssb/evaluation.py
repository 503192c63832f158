"""Evaluation: the base model and its adapters on benchmarks, with one prompt, backend and grader.

For each (model, benchmark) pair, ``eval/<model>/<benchmark>.samples.jsonl`` gets one line per
question as its chunk finishes (``ssb.chunked_generation``: prompt, every completion with its answer, grade and strict-format
grade, gold, grader version); an interrupted evaluation resumes where it stopped, regenerating only
unfinished chunks with their own seeds. ``<benchmark>.summary.json`` then holds pass@1 with its
standard error and 95% CI, pass@k and maj@k, the strict exact-string pass@1 (to set beside the
paper's strict-format numbers), truncation and no-box rates, completion lengths, timings, and the engine that generated
it (backend, device, CPU: ``evaluation_engine``).

The model under evaluation is the base model itself ("base") or the base with a PEFT adapter on
top; both go through the same generation backend.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from ssb.chat import messages
from ssb.chunked_generation import ChunkedGeneration, Job, drop_overlong
from ssb.config import DataConfig, SSBConfig
from ssb.data import load_problems
from ssb.generation import Completion, GenerationBackend, backend_spec, make_backend
from ssb.grading import GRADER_VERSION, answers_equivalent, grade, strict_match
from ssb.prompts import load_prompts
from ssb.runfolder.artifacts import RunFolderError, read_json_file, read_jsonl, write_json_atomic
from ssb.runfolder.folder import RunFolder, section_inputs
from ssb.stats.metrics import majority_score, mean_with_ci, pass_at_k

_log = logging.getLogger(__name__)

STEP_BY_STEP = "Please reason step by step, and put your final answer within \\boxed{}."


def system_prompt(config: SSBConfig) -> str:
    return load_prompts(config.prompts.system, config.prompts.hinted).system if config.eval.prompt == "tutor" else STEP_BY_STEP


def summarize(records: list[dict], config: SSBConfig) -> dict:
    n = config.eval.n
    ks = sorted(set(config.eval.k or [1, n]))
    same = lambda a, b: answers_equivalent(a, b, config.grading.timeout_s) is True  # noqa: E731
    per_question = [sum(c["correct"] for c in r["completions"]) / n for r in records]
    completions = [c for r in records for c in r["completions"]]
    count = max(len(completions), 1)
    return {
        "n_questions": len(records),
        "samples_per_question": n,
        "pass@1": mean_with_ci(per_question, binary=n == 1),
        "pass@k": {str(k): sum(pass_at_k(n, sum(c["correct"] for c in r["completions"]), k) for r in records) / max(len(records), 1) for k in ks},
        "maj@k": {str(k): sum(majority_score([c["answer"] for c in r["completions"][:k]], [c["correct"] for c in r["completions"][:k]], same)
                              for r in records) / max(len(records), 1) for k in ks},
        "strict_pass@1": mean_with_ci([sum(c["strict_correct"] for c in r["completions"]) / n for r in records], binary=n == 1),
        "truncated_rate": sum(c["finish_reason"] == "length" for c in completions) / count,
        "no_boxed_answer_rate": sum(c["answer"] is None for c in completions) / count,
        "grader_timeouts": sum(c["grader_timed_out"] for c in completions),
        "mean_completion_tokens": sum(c["num_tokens"] for c in completions) / count,
        "generation": {**dataclasses.asdict(config.eval.sampling), "n": n, "prompt": config.eval.prompt, "seed": config.seed},
        "grader": GRADER_VERSION,
    }


def evaluation_engine(config: SSBConfig) -> dict:
    """What generated an evaluation besides the model: the backend as configured and resolved, the device, and the CPU's
    model and kernel flags. Greedy text depends on all three (``ssb.models.cpu_record``), so ``ssb report`` warns where
    compared evaluations differ in them."""
    from ssb.models import cpu_record, resolve_device

    return {"backend": backend_spec(config), "device": resolve_device(config.model).type, "cpu": cpu_record()}


def evaluate_one(config: SSBConfig, folder: RunFolder, model_name: str, model_spec: dict, benchmark: str,
                 open_backend: Callable[[], GenerationBackend], force: bool) -> dict:
    """One (model, benchmark) stage; ``open_backend`` is called only when it has something to generate."""
    samples_path = folder.file(f"eval/{model_name}/{benchmark}.samples.jsonl")
    data = DataConfig(source=benchmark, split=config.eval.split, data_dir=config.data.data_dir, limit=config.eval.limit,
                      on_bad_record=config.data.on_bad_record,
                      # generated problems are drawn with the training data's seed, so the test split is the one disjoint from it
                      shuffle_seed=config.data.shuffle_seed if benchmark == "synthetic" else 0)
    loaded = load_problems(data)
    system = system_prompt(config)
    stage = folder.stage("eval", config, key=f"{model_name}/{benchmark}", model=model_spec, benchmark=section_inputs(data), system_prompt=system)
    if not force and stage.finished():  # before opening the model: an OpenVINO backend exports it first (a minute)
        return stage.stats()
    backend = open_backend()
    drop_overlong(loaded, backend, system, config.eval.sampling.max_new_tokens, config.data.on_bad_record)
    problems = loaded.problems
    if not stage.begin(force):
        return stage.stats()

    def record(index: int, problem, job: Job, samples: list[Completion]) -> dict:
        graded = []
        for sample in samples:
            g = grade(sample.text, problem.gold, config.grading.timeout_s)
            graded.append({"text": sample.text, "finish_reason": sample.finish_reason, "num_tokens": sample.num_tokens, "answer": g.answer,
                           "correct": g.correct, "strict_correct": strict_match(g.answer, problem.gold), "grader_timed_out": g.timed_out})
        return {"index": index, "id": problem.id, "prompt": job.conversation, "gold": problem.gold, "completions": graded, "grader": GRADER_VERSION}

    invocation = ChunkedGeneration(
        journal=samples_path, items=problems, item_id=lambda p: p.id, job=lambda p: Job(messages(system, p.question)), record=record,
        sampling=config.eval.sampling, samples_per_item=config.eval.n, chunk_size=config.eval.chunk_questions,
        seed=config.seed, seed_key=stage.name, progress=config.progress, description=f"{model_name}/{benchmark}",
    ).run(backend)
    records = sorted(read_jsonl(samples_path), key=lambda r: r["index"])
    summary = {"model": model_name, "benchmark": benchmark, **summarize(records, config), "engine": evaluation_engine(config),
               "this_invocation": invocation}
    write_json_atomic(folder.file(f"eval/{model_name}/{benchmark}.summary.json"), summary)
    stage.finish({"model_spec": model_spec}, summary, reads=adapter_files(model_spec["adapter"]))
    return summary


def run_eval(config: SSBConfig, force: bool = False, backend_factory=None) -> dict:
    """Evaluate base and adapters on every benchmark; returns {model: {benchmark: pass@1 mean}}.

    ``backend_factory(model_name, adapter_dir)`` replaces the HF backend (tests use scripted ones).
    """
    folder = RunFolder(config.run_dir)
    adapters = config.eval.named_adapters()
    variants = ([] if config.eval.skip_base else [("base", None)]) + adapters
    if not variants:
        raise ValueError("eval: nothing to evaluate (skip_base with no adapters)")
    results: dict[str, dict] = {}
    base_backend = None

    def open_backend(name: str, adapter_dir: str | None) -> GenerationBackend:
        nonlocal base_backend
        if backend_factory is not None:
            return backend_factory(name, adapter_dir)
        from ssb.models import load_chat_format

        if base_backend is None:  # one tokenizer and one base model for every variant
            base_backend = make_backend(config, load_chat_format(config.model))
        if adapter_dir is None:
            return base_backend
        check_adapter_base(adapter_dir, config)
        return base_backend.with_adapter(adapter_dir)

    for name, adapter_dir in variants:
        spec = {"base": config.model.name_or_path, "revision": config.model.revision, "adapter": adapter_dir,
                "adapter_sha256": adapter_fingerprint(adapter_dir), "backend": backend_spec(config)}
        backend = functools.cache(functools.partial(open_backend, name, adapter_dir))  # opened by the first benchmark to generate
        results[name] = {b: evaluate_one(config, folder, name, spec, b, backend, force)["pass@1"]["mean"] for b in config.eval.benchmarks}
        if adapter_dir is not None and backend_factory is None and backend.cache_info().currsize:
            backend().close()  # hf: the base model's own layers again; openvino: the merged model freed
    return results


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # PEFT's two formats, in the order PEFT loads them


def adapter_files(adapter_dir: str | None) -> list[Path]:
    """What an evaluation of an adapter reads from its folder (its config and weights): recorded with their digests, so that an
    adapter edited after it was evaluated (its lora_alpha, say) is not reported with the old results."""
    if adapter_dir is None:
        return []
    return [Path(adapter_dir) / name for name in ("adapter_config.json", *ADAPTER_WEIGHTS) if (Path(adapter_dir) / name).exists()]


def adapter_fingerprint(adapter_dir: str | None) -> str | None:
    """Hash of an adapter's weights (either PEFT format), so re-trained adapters are re-evaluated rather than skipped;
    None for no adapter, or a folder with neither weights file."""
    if adapter_dir is None:
        return None
    weights = next((Path(adapter_dir) / name for name in ADAPTER_WEIGHTS if (Path(adapter_dir) / name).exists()), None)
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights is not None else None


def check_adapter_base(adapter_dir: str, config: SSBConfig) -> None:
    """Refuse an adapter trained on another base model."""
    from ssb.models import model_location

    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise RunFolderError(f"{adapter_dir}: no adapter_config.json; not a PEFT adapter folder (give the folder ssb saved the adapter in)")
    trained_on = read_json_file(path).get("base_model_name_or_path")
    expected = model_location(config.model)[0]
    if trained_on and trained_on not in (expected, config.model.name_or_path):
        raise ValueError(f"{adapter_dir}: adapter was trained on {trained_on!r}, not on {config.model.name_or_path!r}")
