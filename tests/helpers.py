"""Inputs that several test modules build: question and benchmark files, gzipped JSONL records, and the
configs and folders of runs on the tiny model (a plain run's settings, an iterated run's config, a
scripted phase 1)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from scripted import ScriptedBackend, refine_script, rollout_script
from ssb.chat import ChatFormat
from ssb.config import load_config
from ssb.models import load_tokenizer
from ssb.refinement import run_refine
from ssb.rollouts import run_rollouts

N_QUESTIONS = 12


def write_questions(path: Path, n: int = N_QUESTIONS) -> Path:
    path.write_text("".join(json.dumps({"question": f"Question {i}: what is {i}?", "answer": str(i)}) + "\n" for i in range(n)))
    return path


def write_benchmark(folder: Path, name: str, n: int) -> None:
    folder.mkdir(exist_ok=True)
    rows = [{"question": f"Q{i}: what is {i}?", "answer": f"work\n#### {i}"} for i in range(n)]
    (folder / f"{name}_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_gz(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# A run on the tiny model, end to end (ssb run) and in seconds.
SETTINGS = {"rollouts.chunk_questions": 8, "progress": False, "backend.name": "hf", "distill.epochs": 2, "distill.batch_size": 2,
            "distill.lora.r": 4, "distill.warmup_steps": 0, "distill.lr": 1e-2, "eval.benchmarks": ["gsm8k"],
            "eval.sampling.max_new_tokens": 4, "eval.limit": 3,
            "model.dtype": "float32"}  # evaluated completions are compared with a float32 greedy loop

QUESTIONS, SLICE = 24, 8  # rounds 1, 2 and 3 of a fresh run: questions 0-7, 8-15, 16-23


def rounds_config(folder: Path, tiny_model_dir, run: str, **overrides):
    """An iterated run's config on the tiny model: QUESTIONS questions in the data file, SLICE of them per round."""
    write_benchmark(folder / "bench", "gsm8k", 5)
    data = folder / "questions.jsonl"
    data.write_text("".join(json.dumps({"question": f"Question {i}: what is {i}?", "answer": str(i)}) + "\n" for i in range(QUESTIONS)))
    return load_config(None, {"run_dir": str(folder / run), "data.source": "jsonl", "data.path": str(data), "data.limit": SLICE,
                              "data.data_dir": str(folder / "bench"), "model.name_or_path": str(tiny_model_dir), **SETTINGS, **overrides})


DISTILL = {"distill.epochs": 2, "distill.batch_size": 2, "distill.micro_batch_size": 1, "distill.warmup_steps": 1,
           "distill.lr": 1e-2, "distill.save_every": 2, "distill.head_chunk_tokens": 7, "distill.lora.r": 4, "distill.lora.alpha": 8}


def phase1_folder(tmp_path: Path, model_dir: Path, run: str = "run", **overrides):
    """A run folder whose teacher/student files come from the scripted phase 1 (10 kept examples)."""
    data = write_questions(tmp_path / "questions.jsonl", 24)
    config = load_config(None, {"run_dir": str(tmp_path / run), "data.source": "jsonl", "data.path": str(data),
                                "model.name_or_path": str(model_dir), "rollouts.chunk_questions": 8, "progress": False, "backend.name": "hf",
                                "teacher.batch_size": 3, **DISTILL, **overrides})
    chat = ChatFormat(load_tokenizer(config.model))
    run_rollouts(config, backend=ScriptedBackend(chat, rollout_script))
    run_refine(config, backend=ScriptedBackend(chat, refine_script))
    return config
