"""Rollout generation throughput: the batched HF backend vs one question, one sample at a time.

The one-at-a-time loop is how the paper's scripts generate rollouts. Both runs use the same real
model, the same questions, the same sampling settings and seed; throughput counts only generated
tokens (each row up to and including its end-of-turn token).

    python benchmarks/rollout_throughput.py [--questions 8] [--k 4] [--max-new-tokens 160]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ssb.chat import ChatFormat, messages
from ssb.config import DataConfig, ModelConfig
from ssb.data import load_problems
from ssb.generation import SamplingParams
from ssb.generation.hf import HFBackend
from ssb.models import load_model, load_tokenizer
from ssb.prompts import load_prompts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def timed(backend: HFBackend, prompts, params: SamplingParams, one_at_a_time: bool) -> tuple[int, float]:
    start = time.monotonic()
    if one_at_a_time:
        tokens = 0
        for p in prompts:
            for s in range(params.n):
                single = SamplingParams(**{**params.__dict__, "n": 1, "seed": params.seed + s})
                tokens += sum(c.num_tokens for c in backend.generate([p], single)[0])
    else:
        tokens = sum(c.num_tokens for row in backend.generate(prompts, params) for c in row)
    return tokens, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--out", default="benchmarks/results/rollout_throughput.json")
    args = parser.parse_args()

    model_config = ModelConfig(name_or_path=args.model)
    chat = ChatFormat(load_tokenizer(model_config))
    model = load_model(model_config)
    system = load_prompts().system
    problems = load_problems(DataConfig(source="gsm8k", split="train", data_dir=args.data_dir, limit=args.questions)).problems
    prompts = [messages(system, p.question) for p in problems]
    params = SamplingParams(n=args.k, temperature=0.8, top_k=50, max_new_tokens=args.max_new_tokens, seed=0)

    results = {}
    for name, backend, one in [("batched", HFBackend(model, chat, args.batch_size, progress=False), False),
                               ("one_at_a_time", HFBackend(model, chat, 1, progress=False), True)]:
        tokens, seconds = timed(backend, prompts, params, one)
        results[name] = {"generated_tokens": tokens, "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds, 2)}
        print(f"{name:>14}: {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.2f} tok/s", flush=True)
    ratio = results["batched"]["tokens_per_s"] / results["one_at_a_time"]["tokens_per_s"]
    print(f"speed-up: {ratio:.2f}x")
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "model": args.model, "questions": args.questions,
              "k": args.k, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "results": results, "speedup": round(ratio, 2)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
