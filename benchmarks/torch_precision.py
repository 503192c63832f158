"""float32 vs bfloat16 on the torch paths: teacher targets and one distillation step, in one run.

Four real solutions (model-written GSM8K answers, from an ``ssb eval`` samples file) make one
optimiser step of the paper's batch 4. For each precision, with the same seeded LoRA init:
- teacher: the frozen model's final hidden states over the hinted teacher views (tokens/s);
- distill: one step as ``ssb distill`` takes it (LoRA r=32 on all projections, micro-batch 1,
  gradient checkpointing, T=2 KD through the chunked head, AdamW), reporting tokens/s and the loss.
bfloat16 means frozen base weights in bf16 (what ``model.dtype: bfloat16`` loads); LoRA weights and
optimiser state stay float32 (PEFT keeps adapters in float32). The loss of the bf16 step is
compared with the float32 step on the same batch, and the teacher logits with float32's (KL).

    python benchmarks/torch_precision.py --samples benchmarks/results/engine_accuracy/hf-fp32.samples.jsonl.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import torch

from machine import machine_info
from ssb.alignment import AlignedExample, pack, solution_hidden_states, solution_token_ids
from ssb.chat import messages
from ssb.config import load_config
from ssb.lora import build_peft_model
from ssb.losses import kl_full, reduce_per_token
from ssb.models import load_chat_format, load_model
from ssb.objectives import objective_for
from ssb.prompts import load_prompts
from ssb.teacher_targets import Teacher
from ssb.training_loop import per_token_terms


def examples_from(samples: Path, count: int, chat) -> list[AlignedExample]:
    opener = gzip.open if samples.suffix == ".gz" else open
    with opener(samples, "rt") as f:
        records = [json.loads(line) for line in f]
    answered = [r for r in records if r["completions"][0]["finish_reason"] == "stop"]
    prompts = load_prompts()
    out = []
    for i, record in enumerate(answered[:count]):
        solution = record["completions"][0]["text"]
        wrong = answered[(i + 1) % len(answered)]["completions"][0]["text"]  # another question's answer as the "wrong" hint
        question = record["prompt"][1]["content"]
        teacher = messages(prompts.system, prompts.render_hinted(question, solution, wrong))
        out.append(AlignedExample(record["id"], chat.prompt_ids(teacher), chat.prompt_ids(messages(prompts.system, question)),
                                  solution_token_ids(chat, solution)))
    return out


def measure(dtype: str, examples, chat, config) -> dict:
    import dataclasses

    model_config = dataclasses.replace(config.model, dtype=dtype)
    model = load_model(model_config)
    tokens = sum(len(e.solution_ids) for e in examples)
    start = time.monotonic()
    with torch.no_grad():
        teacher = [solution_hidden_states(model, pack([e.teacher_prompt_ids], [e.solution_ids], chat.pad_id)) for e in examples]
    teacher_s = time.monotonic() - start
    head = model.get_output_embeddings()
    with torch.no_grad():
        teacher_logits = [h @ head.weight.T for h in teacher]  # in the model's dtype, as distillation recomputes them
    torch.manual_seed(0)
    peft_model = build_peft_model(model, config)
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    objective = objective_for(config)  # kd
    objective.attach(peft_model, chat)
    start = time.monotonic()
    total = 0.0
    for e, hidden in zip(examples, teacher):
        batch = pack([e.student_prompt_ids], [e.solution_ids], chat.pad_id)
        student = solution_hidden_states(peft_model, batch)
        per_token = per_token_terms(objective, peft_model.get_output_embeddings(), student, Teacher.rows_of_hidden_states(hidden.clone()),
                                    batch.targets, config.distill.head_chunk_tokens)
        loss = reduce_per_token(per_token[:, 0], batch.sequence_index, 1, "sequence", len(examples))
        loss.backward()
        total += loss.item()
    optimizer.step()
    step_s = time.monotonic() - start
    return {"dtype": dtype, "solution_tokens": tokens, "teacher_s": round(teacher_s, 2), "teacher_tokens_per_s": round(tokens / teacher_s, 1),
            "distill_step_s": round(step_s, 2), "distill_tokens_per_s": round(tokens / step_s, 1), "loss": total,
            "lora_dtypes": sorted({str(p.dtype) for p in trainable}), "teacher_logits": teacher_logits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--samples", required=True, help="an ssb eval samples.jsonl(.gz) whose completions serve as solutions")
    parser.add_argument("--examples", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/torch_precision.json")
    args = parser.parse_args()
    config = load_config(None, {"model.name_or_path": args.model, "distill.gradient_checkpointing": True})
    chat = load_chat_format(config.model)
    examples = examples_from(Path(args.samples), args.examples, chat)
    runs = {dtype: measure(dtype, examples, chat, config) for dtype in ("float32", "bfloat16")}
    fp32, bf16 = runs["float32"], runs["bfloat16"]
    kl = torch.cat([kl_full(b, a, 1.0) for a, b in zip(fp32.pop("teacher_logits"), bf16.pop("teacher_logits"))])
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(), "model": args.model,
        "examples": len(examples), "runs": runs,
        "bf16_vs_fp32": {"teacher_speedup": round(bf16["teacher_tokens_per_s"] / fp32["teacher_tokens_per_s"], 2),
                         "distill_speedup": round(bf16["distill_tokens_per_s"] / fp32["distill_tokens_per_s"], 2),
                         "step_loss_relative_difference": abs(bf16["loss"] - fp32["loss"]) / abs(fp32["loss"]),
                         "teacher_next_token_kl_mean": kl.mean().item(), "teacher_next_token_kl_max": kl.max().item()},
    }
    print(json.dumps(report, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
