"""How exact are stored teacher targets? Bytes per token and KL error of each storage choice.

For real hinted teacher views (model-written GSM8K answers), and for each compute dtype the model
may run in (float32, bfloat16): the teacher's own logits (its forward in that dtype, the reference)
against the logits training recomputes from each storage choice:
- ``hidden`` stored in float32 / bfloat16 / float16, recomputed as stored.to(compute) @ W^T;
- ``topk`` (k = 64) with the tail bucket: no recomputation; reported as the teacher mass outside
  the top k (what the bucket merges) and the bucketed KL's shortfall against the full KL of the
  teacher against the untrained student (a lower bound of it, by construction).
KL is T^2 KL(reference || recomputed) per token at T = 2 (the distillation temperature), mean and
max over tokens. ``teacher.dtype: auto`` stores the compute dtype: the row where they match.

    python benchmarks/teacher_storage.py --samples benchmarks/results/engine_accuracy/hf-fp32.samples.jsonl.gz
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from machine import machine_info
from ssb.alignment import pack, solution_hidden_states
from ssb.config import load_config
from ssb.losses import kl_full, kl_topk
from ssb.models import load_chat_format, load_model
from torch_precision import examples_from

T = 2.0
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@torch.no_grad()
def measure(compute: str, examples, chat, config, k: int) -> dict:
    model = load_model(dataclasses.replace(config.model, dtype=compute)).eval()
    weight = model.get_output_embeddings().weight
    rows = {}
    teacher_hidden, student_hidden = [], []
    for e in examples:
        teacher_hidden.append(solution_hidden_states(model, pack([e.teacher_prompt_ids], [e.solution_ids], chat.pad_id)))
        student_hidden.append(solution_hidden_states(model, pack([e.student_prompt_ids], [e.solution_ids], chat.pad_id)))
    hidden, student = torch.cat(teacher_hidden), torch.cat(student_hidden)  # (N, H) in the compute dtype
    reference = hidden @ weight.T  # the teacher's own logits, as its forward computes them
    for storage in ("float32", "bfloat16", "float16"):
        recomputed = hidden.to(getattr(torch, storage)).to(weight.dtype) @ weight.T
        kl = kl_full(recomputed, reference, T)
        rows[f"hidden/{storage}"] = {"bytes_per_token": BYTES[storage] * hidden.shape[1], "kl_mean": kl.mean().item(), "kl_max": kl.max().item(),
                                     "exact": bool(torch.equal(recomputed, reference))}
    student_logits = student @ weight.T
    values, ids = reference.float().topk(k, dim=-1)
    log_normalizer = torch.logsumexp(reference.float() / T, dim=-1)
    bucketed, full = kl_topk(student_logits, values, ids, log_normalizer, T), kl_full(student_logits, reference, T)
    tail = 1 - torch.softmax(reference.float() / T, -1).gather(-1, ids).sum(-1)
    rows[f"topk/{k}"] = {"bytes_per_token": k * 8 + 4, "teacher_tail_mass_mean": tail.mean().item(), "teacher_tail_mass_max": tail.max().item(),
                         "kd_vs_student_full": full.mean().item(), "kd_vs_student_bucketed": bucketed.mean().item()}
    return {"compute_dtype": compute, "tokens": hidden.shape[0], "hidden_size": hidden.shape[1], "choices": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=Path, required=True, help="an ssb eval samples file (jsonl or jsonl.gz)")
    parser.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "teacher_storage.json")
    args = parser.parse_args()
    config = load_config(None, {"model.name_or_path": args.model})
    chat = load_chat_format(config.model)
    examples = examples_from(args.samples, args.examples, chat)
    result = {"command": " ".join(["python", *sys.argv]), "machine": machine_info(), "examples": len(examples), "temperature": T,
              "runs": [measure(dtype, examples, chat, config, args.k) for dtype in ("float32", "bfloat16")]}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for run in result["runs"]:
        for name, row in run["choices"].items():
            print(run["compute_dtype"], name, {k: round(v, 8) if isinstance(v, float) else v for k, v in row.items()})


if __name__ == "__main__":
    main()
