"""GRPO steps of the evidence config with TRL's transformers generation and with ssb's in-loop engine, in one run.

Each arm runs ``ssb grpo`` (``run_grpo``) with ``src/ssb/configs/evidence.yaml`` for ``--steps`` optimiser
steps in a fresh run folder, in a process of its own (so its peak RSS is its own). The trainer's
``_generate`` (TRL's generation, or ssb's ``rollout_func`` with its weight push) is timed and its
completion tokens counted, which gives per arm: the step wall-clock, the share of it spent sampling
and syncing weights, the sampling's useful tokens/s (every generated token, the stop token included)
and peak RSS. The first step also builds the engine (or warms transformers), so the steady numbers
are those of the later steps. The engine arm also scores its last batch with the trainer's weights:
the mean gap between the engine's log-probabilities of the sampled tokens and the trainer's own
(temperature 1), the distribution mismatch that ``grpo.importance_sampling`` corrects where the engine
samples at temperature 1 (the evidence config samples at 0.8 with top-k 50, where it goes uncorrected).

``standalone`` arms run ssb's evaluation engine (``make_backend``, OpenVINO, prefix caching on) on the
same questions with the same sampling and the same number of sequences in flight, for the in-loop
sampler's goal: within 2x of the standalone engine's useful tokens/s.

    python benchmarks/grpo_sampling.py [--steps 3] [--arms trl,engine,engine-spg2,engine-mb1,engine-t1,engine-t1-is,standalone-4,standalone-8]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_info
from workers import run_worker

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ARMS = {  # name -> config overrides on top of the evidence config
    "trl": {"grpo.sampler": "trl"},
    "engine": {"grpo.sampler": "engine"},  # as the evidence arm: one question's 4 completions per micro-step
    "engine-spg2": {"grpo.sampler": "engine", "grpo.steps_per_generation": 2},  # both micro-steps' 8 completions at once
    # the same 8 at once, trained one completion per micro-step: no micro-step is padded to its longest completion
    "engine-mb1": {"grpo.sampler": "engine", "grpo.batch_size": 1, "grpo.gradient_accumulation_steps": 8, "grpo.steps_per_generation": 8},
}
# The importance-sampling correction's cost: engine-mb1 at the sampling it needs (temperature 1, no top-k), without and
# with it (one more forward pass of the trainer per generation, for the old log-probabilities).
ARMS["engine-t1"] = {**ARMS["engine-mb1"], "grpo.temperature": 1.0, "grpo.top_k": 0}
ARMS["engine-t1-is"] = {**ARMS["engine-t1"], "grpo.importance_sampling": "token_truncate"}


def overrides(run_dir: str, steps: int, data_dir: str, extra: dict) -> dict:
    return {"run_dir": run_dir, "data.data_dir": data_dir, "grpo.max_steps": steps, "grpo.save_every": 10_000, "progress": False, **extra}


def train_worker(arm: str, steps: int, data_dir: str) -> dict:
    import trl

    from ssb.arms.grpo import run_grpo
    from ssb.config import load_config

    plain, timing = trl.GRPOTrainer, {"generate_s": 0.0, "tokens": 0, "calls": 0, "last": None, "trainer": None}

    class Timed(plain):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            timing["trainer"] = self

        def _generate(self, prompts):
            start = time.monotonic()
            out = super()._generate(prompts)
            timing["generate_s"] += time.monotonic() - start
            timing["tokens"] += sum(len(ids) for ids in out[1])
            timing["calls"] += 1
            timing["last"] = (out[0], out[1], out[4])
            return out

    trl.GRPOTrainer = Timed
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as run_dir:
        config = load_config("evidence", overrides(run_dir, steps, data_dir, ARMS[arm]))
        start = time.monotonic()
        stats = run_grpo(config)
        wall = time.monotonic() - start
        history = [json.loads(line) for line in (Path(run_dir) / "grpo" / "metrics.jsonl").read_text().splitlines()]
    step_times = [e["step_time"] for e in history if "step_time" in e]
    result = {"arm": arm, "overrides": ARMS[arm], "steps": stats["steps"], "sampler": stats["sampler"], "wall_s": round(wall, 1),
              "train_runtime_s": next((e["train_runtime"] for e in history if "train_runtime" in e), None),
              "step_time_s": [round(t, 1) for t in step_times], "sampling_s": round(timing["generate_s"], 1),
              "generated_tokens": timing["tokens"], "generation_calls": timing["calls"],
              "sampling_share_of_train": round(timing["generate_s"] / sum(step_times), 3) if step_times else None,
              "sampling_tokens_per_s": round(timing["tokens"] / timing["generate_s"], 1),
              "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
              "torch_dtype": str(next(timing["trainer"].model.parameters()).dtype)}
    if result["train_runtime_s"] is not None and timing["tokens"]:  # the trainer's own time per token, sampling taken out
        result["training_s_per_1k_tokens"] = round(1000 * (result["train_runtime_s"] - timing["generate_s"]) / timing["tokens"], 1)
    if stats["sampler"] == "engine" and timing["last"] is not None:
        result["engine_vs_trainer_logprob_gap"] = logprob_gap(timing["trainer"], *timing["last"])
    for key in ("sampler/push_s", "sampler/tokens_per_s", "sampling/importance_sampling_ratio/mean", "sampling/importance_sampling_ratio/min",
                "sampling/sampling_logp_difference/mean"):
        values = [e[key] for e in history if key in e]
        if values:
            result[key] = [round(v, 3) for v in values]
    return result


def logprob_gap(trainer, prompt_ids, completion_ids, logprobs) -> dict:
    """Mean of (engine - trainer) and of |engine - trainer| log-probability over the last batch's sampled tokens."""
    import torch

    diffs = []
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    with torch.no_grad():
        for prompt, completion, engine in zip(prompt_ids, completion_ids, logprobs):
            ids = torch.tensor([list(prompt) + list(completion)])
            logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
            own = torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None])[:, 0]
            diffs.append(torch.tensor(engine) - own)
    d = torch.cat(diffs)
    return {"tokens": d.numel(), "mean": round(d.mean().item(), 4), "mean_abs": round(d.abs().mean().item(), 4),
            "p99_abs": round(d.abs().quantile(0.99).item(), 4)}


def standalone_worker(in_flight: int, steps: int, data_dir: str) -> dict:
    """ssb's evaluation engine on GRPO's first questions, ``in_flight // 4`` questions x 4 samples per call."""
    from ssb.chat import messages
    from ssb.config import load_config
    from ssb.data import load_problems
    from ssb.generation import SamplingParams, make_backend
    from ssb.models import load_chat_format
    from ssb.prompts import load_prompts

    config = load_config("evidence", overrides(tempfile.mkdtemp(prefix="grpo-bench-"), steps, data_dir, {}))
    g = config.grpo
    per_call = in_flight // g.num_generations
    calls = steps * g.batch_size * g.gradient_accumulation_steps // in_flight
    system = load_prompts(config.prompts.system, config.prompts.hinted).system
    problems = load_problems(config.data).problems[: per_call * calls]
    backend = make_backend(config, load_chat_format(config.model))
    backend.generate([messages(system, problems[0].question)], SamplingParams(n=1, max_new_tokens=4))  # compile outside the timing
    tokens, seconds = 0, 0.0
    for call in range(calls):
        prompts = [messages(system, p.question) for p in problems[call * per_call : (call + 1) * per_call]]
        params = SamplingParams(n=g.num_generations, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
                                max_new_tokens=g.max_completion_length, seed=call)
        start = time.monotonic()
        out = backend.generate(prompts, params)
        seconds += time.monotonic() - start
        tokens += sum(c.num_tokens for row in out for c in row)
    return {"arm": f"standalone-{in_flight}", "sequences_in_flight": in_flight, "calls": calls, "generated_tokens": tokens,
            "sampling_s": round(seconds, 1), "sampling_tokens_per_s": round(tokens / seconds, 1),
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--arms", default="trl,engine,engine-spg2,standalone-4,standalone-8")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "grpo_sampling.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker.startswith("standalone-"):
            result = standalone_worker(int(args.worker.split("-", 1)[1]), args.steps, args.data_dir)
        else:
            result = train_worker(args.worker, args.steps, args.data_dir)
        print("RESULT " + json.dumps(result))
        return
    command = "python benchmarks/grpo_sampling.py " + " ".join(sys.argv[1:])
    results = [run_worker(__file__, arm, "--steps", str(args.steps), "--data-dir", args.data_dir) for arm in args.arms.split(",")]
    by_arm = {r["arm"]: r for r in results}
    ratios = {}
    if "trl" in by_arm:
        trl = by_arm["trl"]
        for name, r in by_arm.items():
            if name != "trl" and "step_time_s" in r and len(r["step_time_s"]) > 1 and len(trl["step_time_s"]) > 1:
                steady = lambda arm: sum(arm["step_time_s"][1:]) / len(arm["step_time_s"][1:])  # noqa: E731
                ratios[f"{name}: steps per wall-clock vs trl (steady)"] = round(steady(trl) / steady(r), 2)
                ratios[f"{name}: sampling tokens/s vs trl"] = round(r["sampling_tokens_per_s"] / trl["sampling_tokens_per_s"], 2)
    for name, in_flight in (("engine", 4), ("engine-spg2", 8)):
        if name in by_arm and f"standalone-{in_flight}" in by_arm:
            ratios[f"{name}: standalone engine tokens/s / in-loop"] = round(
                by_arm[f"standalone-{in_flight}"]["sampling_tokens_per_s"] / by_arm[name]["sampling_tokens_per_s"], 2)
    out = {"command": command, "machine": machine_info(), "config": "evidence", "steps": args.steps, "arms": results, "ratios": ratios}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
