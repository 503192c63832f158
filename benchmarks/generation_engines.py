"""Generation throughput of each backend on the same prompts, in one run (speeds compare only as ratios).

Each engine is built as the stages build it (``make_backend`` from a config) and given the same
GSM8K train prompts, sampling settings and seed. Useful tokens are the generated tokens of every
row up to and including its stop token; a static batch also spends steps on rows that have already
stopped, which count as time, not as tokens. Building an engine (model load, and for openvino the
one-time export, cached afterwards) is timed separately.

    python benchmarks/generation_engines.py [--questions 48] [--k 1] [--engines hf:float32,hf:bfloat16,openvino:int8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from machine import machine_info
from ssb.chat import messages
from ssb.config import DataConfig, load_config
from ssb.data import load_problems
from ssb.generation import SamplingParams, make_backend
from ssb.models import load_chat_format
from ssb.prompts import load_prompts

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def engine_overrides(spec: str) -> dict:
    """``hf:float32`` / ``hf:bfloat16`` / ``openvino:int8[:f32]`` -> config overrides."""
    name, _, rest = spec.partition(":")
    if name == "hf":
        return {"backend.name": "hf", "model.dtype": rest or "float32"}
    weights, _, precision = rest.partition(":")
    return {"backend.name": name, "backend.openvino.weight_format": weights or "int8", "backend.openvino.inference_precision": precision or "auto"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--k", type=int, default=1, help="samples per question")
    parser.add_argument("--max-new-tokens", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--engines", default="hf:float32,hf:bfloat16,openvino:int8")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--out", default="benchmarks/results/generation_engines.json")
    args = parser.parse_args()

    problems = load_problems(DataConfig(source="gsm8k", split="train", data_dir=args.data_dir, limit=args.questions)).problems
    system = load_prompts().system
    prompts = [messages(system, p.question) for p in problems]
    params = SamplingParams(n=args.k, temperature=0.8, top_k=50, max_new_tokens=args.max_new_tokens, seed=0)
    results = {}
    for spec in args.engines.split(","):
        config = load_config(None, {"model.name_or_path": args.model, "backend.batch_size": args.batch_size, "progress": False,
                                    **engine_overrides(spec)})
        start = time.monotonic()
        backend = make_backend(config, load_chat_format(config.model))
        build_s = time.monotonic() - start
        start = time.monotonic()
        out = backend.generate(prompts, params)
        seconds = time.monotonic() - start
        rows = [c for row in out for c in row]
        tokens = sum(c.num_tokens for c in rows)
        results[spec] = {"build_s": round(build_s, 1), "seconds": round(seconds, 1), "useful_tokens": tokens,
                         "useful_tokens_per_s": round(tokens / seconds, 1), "rows": len(rows),
                         "stopped": sum(c.finish_reason == "stop" for c in rows), "mean_tokens": round(tokens / len(rows), 1)}
        print(f"{spec:>20}: {tokens} useful tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s (built in {build_s:.1f}s)", flush=True)
        del backend
    reference = results[args.engines.split(",")[0]]["useful_tokens_per_s"]
    for spec in results:
        results[spec]["speedup_vs_first"] = round(results[spec]["useful_tokens_per_s"] / reference, 2)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(), "model": args.model,
              "questions": args.questions, "k": args.k, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
              "sampling": {"temperature": 0.8, "top_k": 50, "seed": 0}, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
