"""The in-loop sampler's runtime LoRA against the evaluation engine's merged export, on the packaged model.

Evaluation serves an adapter by merging it into the base weights and exporting the result (int8: the merged weights
quantised); the in-loop sampler (``ssb.generation.policy_sampler``, GRPO's and the on-policy arm's) applies the
adapter's matrices at run time on the base model's export (int8 base weights, the LoRA product in floating point). The
two are not the same arithmetic, so this measures how close they come on one trained adapter: greedy completions of the
same GSM8K test questions, per question whether they are token-identical, where they first part, whether the final
answers agree and are right. The base model's completions beside them show that the adapter is applied at all: the
runtime-LoRA completions must follow the merged export's, not the base's. Both engines run at the config's own
inference precision (``auto``; the studies' evaluations pin bf16). With ``--exact-tokens N``, the first N greedy tokens
of the exact model (transformers, float32, the PEFT adapter injected) are the reference both int8 routes are held to:
which of them stays closer to the policy that trains.

    python benchmarks/runtime_lora.py --adapter runs/onpolicy-onpolicy-gold/onpolicy/adapter [--questions 32]
        [--max-new-tokens 256] [--exact-tokens 64] [--out benchmarks/results/runtime_lora.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from machine import machine_info

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where two token sequences differ (None when they are equal)."""
    return None if a == b else next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def agreement(name: str, ids: list[list[int]], reference: list[list[int]], answers: list, reference_answers: list) -> dict:
    """How many completions equal the reference token for token; how many end on the same boxed answer, a pair where
    neither has one (cut off) counting as the same; and the median index (from 0: the number of equal leading tokens)
    of the first difference among those that differ."""
    parts = [first_difference(a, b) for a, b in zip(ids, reference)]
    parted = sorted(p for p in parts if p is not None)
    return {"pair": name, "identical": sum(p is None for p in parts), "of": len(parts),
            "same_answer": sum(a == b for a, b in zip(answers, reference_answers)),
            "median_first_difference": parted[len(parted) // 2] if parted else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", required=True, help="a PEFT adapter folder trained on the packaged model")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--exact-tokens", type=int, default=0, help="also greedy-decode this many tokens with the exact model")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from peft import LoraConfig
    from safetensors.torch import load_file

    from ssb.chat import messages
    from ssb.config import DataConfig, load_config
    from ssb.configs import shipped_configs
    from ssb.data import load_problems
    from ssb.evaluation import system_prompt
    from ssb.generation import SamplingParams, make_backend
    from ssb.generation.openvino import OpenVINOBackend, precision_choice
    from ssb.generation.policy_sampler import PolicySampler, lora_scaling
    from ssb.grading import extract_boxed_answer, grade
    from ssb.models import load_chat_format

    config = load_config(str(shipped_configs()["evidence"]), {"backend.name": "openvino", "progress": False,
                                                               "backend.batch_size": args.questions, "data.data_dir": str(DATA)})
    chat = load_chat_format(config.model)
    problems = load_problems(DataConfig(source="gsm8k", split="test", data_dir=str(DATA), limit=args.questions, shuffle_seed=0)).problems
    system = system_prompt(config)
    conversations = [messages(system, p.question) for p in problems]
    greedy = SamplingParams(n=1, temperature=0, max_new_tokens=args.max_new_tokens)
    precision = precision_choice(config.backend.openvino.inference_precision)[0]
    ids, seconds = {}, {}

    for name, adapter in (("base", None), ("merged", args.adapter)):
        backend = OpenVINOBackend.from_config(config, chat, adapter)  # the evaluation engine (a cached export per adapter)
        start = time.monotonic()
        ids[name] = [row[0].token_ids for row in backend.generate(conversations, greedy)]
        seconds[name] = time.monotonic() - start
        backend.close()

    lora = {key: tensor.float().contiguous() for key, tensor in load_file(str(Path(args.adapter) / "adapter_model.safetensors")).items()}
    sampler = PolicySampler.from_config(config, chat, lora_scaling(LoraConfig.from_pretrained(args.adapter)), lag=0)
    sampler.push(0, lora)
    start = time.monotonic()
    rows, _ = sampler.generate([chat.prompt_ids(c) for c in conversations], greedy, 0)
    seconds["runtime"] = time.monotonic() - start
    sampler.close()
    stops = set(chat.stop_ids)
    ids["runtime"] = [s.token_ids[:-1] if s.token_ids and s.token_ids[-1] in stops else s.token_ids for s, in rows]

    exact = []
    if args.exact_tokens:
        hf = make_backend(load_config(str(shipped_configs()["evidence"]), {"backend.name": "hf", "model.dtype": "float32", "progress": False,
                                                                           "backend.batch_size": args.questions}), chat).with_adapter(args.adapter)
        start = time.monotonic()
        reference = [row[0].token_ids for row in hf.generate(conversations, SamplingParams(n=1, temperature=0, max_new_tokens=args.exact_tokens))]
        seconds["exact"] = time.monotonic() - start
        hf.close()
        n = args.exact_tokens
        unanswered = [None] * len(reference)
        exact = [agreement(f"{name} vs exact, first {n} tokens", [t[:n] for t in ids[name]], reference, unanswered, unanswered)
                 for name in ("runtime", "merged", "base")]
        for row in exact:
            del row["same_answer"]  # answers need whole completions

    texts = {name: [chat.tokenizer.decode(t, skip_special_tokens=True) for t in rows] for name, rows in ids.items()}
    answers = {name: [extract_boxed_answer(t) for t in rows] for name, rows in texts.items()}
    correct = {name: sum(grade(t, p.gold).correct for t, p in zip(rows, problems)) for name, rows in texts.items()}
    result = {
        "command": "python " + " ".join(sys.argv), "machine": machine_info(), "adapter": args.adapter,
        "questions": len(problems), "max_new_tokens": args.max_new_tokens, "inference_precision": precision,
        "weight_format": config.backend.openvino.weight_format, "correct": correct, "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "agreement": [agreement("runtime vs merged", ids["runtime"], ids["merged"], answers["runtime"], answers["merged"]),
                      agreement("base vs merged", ids["base"], ids["merged"], answers["base"], answers["merged"]),
                      agreement("runtime vs base", ids["runtime"], ids["base"], answers["runtime"], answers["base"]), *exact],
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
