"""On-policy steps of the evidence config, the student sampled by ssb's engine and by TRL's transformers generation, in one run.

Each arm runs ``ssb onpolicy`` (``run_onpolicy``) with ``src/ssb/configs/evidence.yaml``, ``arm: onpolicy`` and the
gold-solution context for ``--steps`` optimiser steps in a fresh run folder, in a process of its own (so its peak RSS
is its own). TRL's SDFT trainer is timed in place, per optimiser step (``on_step_begin`` to ``on_step_end``):
- sampling: the trainer's ``_generate`` (ssb's engine with its once-a-step LoRA push, or TRL's ``generate``), with the
  completion tokens it returned (the stop token included);
- teacher and student passes: ``_forward_logits`` without and with autograd (the teacher runs under ``no_grad``, the
  student with the graph backward needs), with the tokens each scored (prompt and completion, padding excluded);
- loss: the rest of ``compute_loss`` (the divergence over the two passes' logits);
- rollout_logps: the sampler's log-probabilities (``_compute_rollout_logps``), a no-grad student pass TRL makes only when
  an optimiser step trains on older samples (``onpolicy.num_iterations`` > 1; none under the evidence settings);
- rest: everything else of the step, chiefly backward, clipping and the optimiser (and the batch's assembly).
The first step also builds the engine (or warms transformers), so the steady numbers are those of the later steps.
The goal (issue 30): sampling at most half of a step's wall-clock on a CPU with bf16 units; on an AVX2-only CPU the
result states what it is.

    python benchmarks/onpolicy_step.py [--steps 3] [--arms engine,trl] [--model DIR] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

from machine import machine_info
from workers import run_worker

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ARMS = {"engine": {"onpolicy.sampler": "engine"}, "trl": {"onpolicy.sampler": "trl"}}  # name -> overrides on top of the common ones
PHASES = ("sampling", "teacher", "student", "loss", "rollout_logps")
COUNTED = ("sampling", "teacher", "student", "rollout_logps")  # the phases that count tokens


def train_worker(arm: str, overrides: dict) -> dict:
    import torch
    import trl.experimental.sdft as sdft
    from transformers import TrainerCallback

    from ssb.arms.onpolicy import run_onpolicy
    from ssb.config import load_config
    from ssb.generation import backend_spec

    plain, steps, state = sdft.SDFTTrainer, [], {"trainer": None, "in_rollout_logps": False}

    def add(phase: str, seconds: float, tokens: int | None = None) -> None:
        if steps:  # outside a step (none here) nothing is counted
            steps[-1][f"{phase}_s"] += seconds
            if tokens is not None:
                steps[-1][f"{phase}_tokens"] += tokens

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, trainer_state, control, **kwargs):
            steps.append({"start": time.monotonic(), **{f"{p}_s": 0.0 for p in PHASES}, **{f"{p}_tokens": 0 for p in COUNTED}})

        def on_step_end(self, args, trainer_state, control, **kwargs):
            steps[-1]["step_s"] = time.monotonic() - steps[-1].pop("start")

    class Timed(plain):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            state["trainer"] = self
            self.add_callback(StepClock())
            generate = self._generate  # ssb's subclass overrides _generate (its engine path never calls TRL's): time its own

            def timed_generate(prompt_ids):
                start = time.monotonic()
                prompts, completions = generate(prompt_ids)
                add("sampling", time.monotonic() - start, sum(len(ids) for ids in completions))
                return prompts, completions

            self._generate = timed_generate

        def _compute_rollout_logps(self, *args, **kwargs):  # a no-grad student pass when num_iterations > 1: not the teacher's
            state["in_rollout_logps"] = True
            try:
                return super()._compute_rollout_logps(*args, **kwargs)
            finally:
                state["in_rollout_logps"] = False

        def _forward_logits(self, model, input_ids, attention_mask, logits_to_keep):
            phase = "rollout_logps" if state["in_rollout_logps"] else "student" if torch.is_grad_enabled() else "teacher"
            start = time.monotonic()
            logits = super()._forward_logits(model, input_ids, attention_mask, logits_to_keep)
            add(phase, time.monotonic() - start, int(attention_mask.sum()))
            return logits

        def compute_loss(self, model, inputs, *args, **kwargs):
            before = {p: steps[-1][f"{p}_s"] for p in ("teacher", "student")} if steps else {}
            start = time.monotonic()
            loss = super().compute_loss(model, inputs, *args, **kwargs)
            passes = sum(steps[-1][f"{p}_s"] - before[p] for p in before) if steps else 0.0
            add("loss", time.monotonic() - start - passes)
            return loss

    sdft.SDFTTrainer = Timed
    with tempfile.TemporaryDirectory(prefix="onpolicy-bench-") as run_dir:
        config = load_config("evidence", {**overrides, "run_dir": run_dir, **ARMS[arm]})
        start = time.monotonic()
        stats = run_onpolicy(config)
        wall = time.monotonic() - start
        history = [json.loads(line) for line in (Path(run_dir) / "onpolicy" / "metrics.jsonl").read_text().splitlines()]
    per_step = [{k: round(v, 3) if k.endswith("_s") else v for k, v in
                 {**s, "rest_s": s["step_s"] - sum(s[f"{p}_s"] for p in PHASES)}.items()} for s in steps]
    result = {"arm": arm, "overrides": ARMS[arm], "sampler": stats["sampler"], "steps": stats["steps"], "wall_s": round(wall, 1),
              "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
              "torch_dtype": str(next(state["trainer"].model.parameters()).dtype), "generation_backend": backend_spec(config), "per_step": per_step,
              "all_steps": summary(per_step), "steady": summary(per_step[1:]) if len(per_step) > 1 else None}
    for key in ("sampler/push_s", "sampler/tokens_per_s", "self_distillation/distillation_loss"):
        values = [e[key] for e in history if key in e]
        if values:
            result[key] = [round(v, 4) for v in values]
    return result


def summary(steps: list[dict]) -> dict:
    """Seconds and tokens of each phase over ``steps``, its tokens/s, and sampling's share of the steps' wall-clock."""
    total = sum(s["step_s"] for s in steps)
    out = {"steps": len(steps), "step_s_mean": round(total / len(steps), 2),
           "sampling_share": round(sum(s["sampling_s"] for s in steps) / total, 3)}
    for phase in (*PHASES, "rest"):
        seconds = sum(s[f"{phase}_s"] for s in steps)
        out[f"{phase}_share"] = round(seconds / total, 3)
        tokens = sum(s.get(f"{phase}_tokens", 0) for s in steps)
        if tokens:
            out[f"{phase}_tokens"] = tokens
            out[f"{phase}_tokens_per_s"] = round(tokens / seconds, 1)
    return out


def setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set wants KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="Optimiser steps per arm.")
    parser.add_argument("--arms", default="engine,trl")
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--model", help="A model folder in place of the evidence config's packaged model (a tiny one to check the script).")
    parser.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                        help="Another config override (dotted, YAML value), e.g. onpolicy.max_completion_length=8.")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "onpolicy_step.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(train_worker(args.worker, json.loads(args.overrides))))
        return
    overrides = {"arm": "onpolicy", "onpolicy.context": "gold-solution", "data.data_dir": args.data_dir, "onpolicy.max_steps": args.steps,
                 "onpolicy.save_every": 10_000, "progress": False, **({"model.name_or_path": args.model} if args.model else {}),
                 **dict(args.set)}
    command = "python benchmarks/onpolicy_step.py " + " ".join(sys.argv[1:])
    results = [run_worker(__file__, arm, "--overrides", json.dumps(overrides)) for arm in args.arms.split(",")]
    from ssb.models import cpu_bf16_unit

    unit = cpu_bf16_unit()
    shares = {r["arm"]: (r["steady"] or r["all_steps"])["sampling_share"] for r in results}
    goal = {"cpu_bf16_unit": unit, "sampling_share_steady": shares,
            "goal": "sampling <= 0.5 of a step on a CPU with bf16 units" if unit else "none on a CPU without bf16 units: the share as measured",
            "met": {arm: share <= 0.5 for arm, share in shares.items()} if unit else None}
    out = {"command": command, "machine": machine_info(), "config": "evidence", "overrides": overrides, "steps": args.steps,
           "arms": results, "goal": goal}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(goal, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
