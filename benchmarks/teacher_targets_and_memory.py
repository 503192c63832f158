"""Teacher-target storage, top-k accuracy, and distillation-step memory on a real model.

Examples: the correct rollouts of a finished phase-1 run folder (real model-written solutions),
each with the hinted prompt built from it and one wrong rollout of its question (or itself).

1. Bytes per solution token of each stored format, from the shards ``ssb`` writes, against the
   authors' format: full-vocabulary fp32 logits in ``np.savez_compressed``.
2. KL error of ``topk`` targets (with and without the tail bucket) against the full-vocabulary KL,
   in nats per token (without the T^2 factor), the student being the same model on the bare question.
3. Peak memory and tokens/s of one distillation step (forward + backward, LoRA r=32) with ``ssb``'s
   chunked loss on hidden-state targets, against a dense collator in the authors' style: full
   (B, S, V) student logits and a padded fp32 (B, S, V) teacher tensor. Each variant runs in its own
   process; memory is the growth of resident memory over the process's state before the step, with
   glibc told to return freed large blocks (otherwise resident memory measures its cache).

    python benchmarks/teacher_targets_and_memory.py --run-dir runs/demo [--examples 24] [--batch 4] [--dtype float32]

``--run-dir`` is any run folder with a rollouts.jsonl: ``ssb demo``'s, or the evidence study's committed phase-1
rollouts gunzipped into a folder of their own (``studies/evidence/results/phase1/rollouts.jsonl.gz``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from machine import machine_info
from ssb.alignment import AlignedExample, pack, solution_hidden_states, solution_token_ids
from ssb.chat import ChatFormat, messages
from ssb.config import load_config
from ssb.losses import kl_full, kl_topk
from ssb.models import load_model, load_tokenizer
from ssb.prompts import load_prompts
from ssb.runfolder.artifacts import read_jsonl
from ssb.teacher_targets import storage_dtype, targets_for, write_shard


def build_examples(run_dir: Path, chat: ChatFormat, count: int) -> list[AlignedExample]:
    prompts = load_prompts()
    out = []
    for record in read_jsonl(run_dir / "rollouts.jsonl"):
        rollouts = record["rollouts"]
        wrong = next((r for r in rollouts if not r["correct"]), None)
        for r in rollouts:
            if r["correct"] and r["finish_reason"] == "stop" and len(out) < count:
                hinted = prompts.render_hinted(record["question"], r["text"], (wrong or r)["text"])
                out.append(AlignedExample(f"{record['id']}-{len(out)}", chat.prompt_ids(messages(prompts.system, hinted)),
                                          chat.prompt_ids(messages(prompts.system, record["question"])), solution_token_ids(chat, r["text"])))
    return out


class PeakRSS:
    """Samples resident memory every 2 ms in a thread; ``peak - start`` is the growth during the block."""

    def __enter__(self):
        self.process, self.start, self.peak, self.running = psutil.Process(), psutil.Process().memory_info().rss, 0, True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def step_variant(variant: str, model_name: str, dtype: str, run_dir: str, count: int, batch: int, gradient_checkpointing: bool) -> dict:
    """One distillation step in this process; returns peak growth of RSS and tokens/s."""
    from ssb.lora import build_peft_model
    from ssb.losses import reduce_per_token
    from ssb.objectives import objective_for
    from ssb.teacher_targets import Teacher
    from ssb.training_loop import per_token_terms

    config = load_config(None, {"model.name_or_path": model_name, "model.dtype": dtype, "distill.gradient_checkpointing": gradient_checkpointing})
    tokenizer = load_tokenizer(config.model)
    chat = ChatFormat(tokenizer)
    group = build_examples(Path(run_dir), chat, count)[:batch]
    model = load_model(config.model)
    with torch.no_grad():
        teacher_hidden = solution_hidden_states(model, pack([e.teacher_prompt_ids for e in group], [e.solution_ids for e in group], chat.pad_id))
    peft_model = build_peft_model(model, config)
    peft_model.train()
    objective = objective_for(config)  # kd
    objective.attach(peft_model, chat)
    head = peft_model.get_output_embeddings()
    student = pack([e.student_prompt_ids for e in group], [e.solution_ids for e in group], chat.pad_id)
    tokens = len(student.targets)
    if variant == "dense":
        # The authors' collator: the teacher logits of every position, padded into one fp32 (B, S, V) tensor.
        with torch.no_grad():
            teacher_logits = head(teacher_hidden).float()
        B, S = student.input_ids.shape
        V = teacher_logits.shape[-1]
    with PeakRSS() as memory:
        start = time.monotonic()
        if variant == "dense":
            dense_teacher = torch.zeros(B, S, V)
            dense_teacher.view(-1, V)[student.positions] = teacher_logits
            mask = torch.zeros(B * S, dtype=torch.bool)
            mask[student.positions] = True
            logits = peft_model(input_ids=student.input_ids, attention_mask=student.attention_mask).logits.float()  # (B, S, V)
            T = config.distill.temperature
            kl = torch.nn.functional.kl_div(torch.log_softmax(logits / T, -1), torch.log_softmax(dense_teacher / T, -1),
                                            log_target=True, reduction="none").sum(-1).view(-1)
            loss = T**2 * kl[mask].mean()
        else:
            hidden = solution_hidden_states(peft_model, student)
            per_token = per_token_terms(objective, head, hidden, Teacher.rows_of_hidden_states(teacher_hidden), student.targets,
                                        config.distill.head_chunk_tokens)
            loss = reduce_per_token(per_token[:, 0], student.sequence_index, len(group), "token", tokens)
        loss.backward()
        seconds = time.monotonic() - start
    return {"variant": variant, "gradient_checkpointing": gradient_checkpointing, "loss": loss.item(), "tokens": tokens, "batch": len(group),
            "max_seq": int(student.input_ids.shape[1]),
            "peak_rss_growth_gib": round((memory.peak - memory.start) / 2**30, 3), "seconds": round(seconds, 1),
            "tokens_per_s": round(tokens / seconds, 1)}


def storage_and_topk(model_name: str, dtype: str, run_dir: Path, count: int) -> dict:
    config = load_config(None, {"model.name_or_path": model_name, "model.dtype": dtype})
    chat = ChatFormat(load_tokenizer(config.model))
    examples = build_examples(run_dir, chat, count)
    model = load_model(config.model)
    head = model.get_output_embeddings()
    tokens = sum(len(e.solution_ids) for e in examples)
    sizes, errors = {}, {}
    T = config.distill.temperature
    per_format: dict[str, list] = {"hidden": [], **{f"topk{k}": [] for k in (16, 64, 256)}}
    full_kl, npz_bytes, npz_tokens = [], 0, 0
    formats = {"hidden": load_config(None, {"teacher.format": "hidden"}),
               **{f"topk{k}": load_config(None, {"teacher.format": "topk", "teacher.k": k}) for k in (16, 64, 256)}}
    with torch.no_grad():
        for e in examples:
            t_hidden = solution_hidden_states(model, pack([e.teacher_prompt_ids], [e.solution_ids], chat.pad_id))
            s_logits = head(solution_hidden_states(model, pack([e.student_prompt_ids], [e.solution_ids], chat.pad_id))).float()
            t_logits = head(t_hidden).float()
            full_kl.append(kl_full(s_logits, t_logits, T) / T**2)
            # As ssb's teacher stage stores them (ssb.teacher_targets.compute_targets): float32 hidden states in, each
            # format's tensors in its storage dtype out.
            stored = {name: targets_for(t_hidden.float(), head, cfg, storage_dtype(cfg, model)) for name, cfg in formats.items()}
            per_format["hidden"].append((e, stored["hidden"]))
            for k in (16, 64, 256):
                targets = stored[f"topk{k}"]
                per_format[f"topk{k}"].append((e, targets))
                for tail in (True, False):
                    approx = kl_topk(s_logits, targets["topk_logits"], targets["topk_ids"], targets["log_normalizer"], T, tail) / T**2
                    errors.setdefault(f"topk{k}{'+tail' if tail else ''}", []).append((approx - full_kl[-1]).abs())
            if npz_tokens < 600:  # the authors' format, on a sample (it is slow and large)
                buffer = io.BytesIO()
                np.savez_compressed(buffer, logits=t_logits.numpy())
                npz_bytes += buffer.getbuffer().nbytes
                npz_tokens += len(e.solution_ids)
    with tempfile.TemporaryDirectory() as folder:
        for name, pieces in per_format.items():
            shard = Path(folder) / name
            shard.mkdir()
            write_shard(shard, 0, pieces)
            sizes[name] = sum(p.stat().st_size for p in shard.iterdir()) / tokens
    V = head.weight.shape[0]
    sizes["full_fp32_raw"] = V * 4
    sizes["authors_npz_fp32"] = npz_bytes / npz_tokens
    full = torch.cat(full_kl)
    return {"examples": len(examples), "solution_tokens": tokens, "vocab": V,
            "bytes_per_token": {k: round(v, 1) for k, v in sizes.items()},
            "ratio_to_authors_npz": {k: round(v / sizes["authors_npz_fp32"], 6) for k, v in sizes.items()},
            "mean_full_kl_nats_per_token": round(full.mean().item(), 4),
            "topk_abs_kl_error_nats_per_token": {k: float(f"{torch.cat(v).mean().item():.3g}") for k, v in errors.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="packaged:qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="model.dtype of every part (auto: bfloat16 on a CPU with bf16 units, else float32)")
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--examples", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--parts", default="storage,step", help="storage (bytes, top-k error) and/or step (memory, speed)")
    parser.add_argument("--step-variant", choices=["dense", "ssb"], help=argparse.SUPPRESS)  # internal: one step per process
    parser.add_argument("--gradient-checkpointing", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--return-freed-memory", type=int, default=1,
                        help="1: run each step with MALLOC_MMAP_THRESHOLD_=65536 so resident memory follows live tensors")
    parser.add_argument("--out", default="benchmarks/results/teacher_targets_and_memory.json")
    args = parser.parse_args()
    if args.step_variant:
        print(json.dumps(step_variant(args.step_variant, args.model, args.dtype, args.run_dir, args.examples, args.batch,
                                      bool(args.gradient_checkpointing))))
        return
    report = {"command": " ".join(["python", *sys.argv]), "machine": machine_info(),
              "malloc_mmap_threshold_65536": bool(args.return_freed_memory)}
    if "storage" in args.parts:
        report["storage_and_topk"] = storage_and_topk(args.model, args.dtype, Path(args.run_dir), args.examples)
        print(json.dumps(report["storage_and_topk"], indent=2), flush=True)
    if "step" in args.parts:
        report["distill_step"] = {}
        for checkpointing in (0, 1):
            steps = {}
            for variant in ("ssb", "dense"):
                # glibc keeps freed large blocks for reuse, so resident memory would track the allocator's
                # cache rather than live tensors; a low mmap threshold returns them to the system.
                env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"} if args.return_freed_memory else None
                result = subprocess.run([sys.executable, __file__, "--step-variant", variant, "--model", args.model, "--dtype", args.dtype,
                                         "--run-dir", args.run_dir,
                                         "--examples", str(args.examples), "--batch", str(args.batch),
                                         "--gradient-checkpointing", str(checkpointing)],
                                        capture_output=True, text=True, env=env)
                steps[variant] = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else {"error": result.stderr[-2000:]}
                print(variant, json.dumps(steps[variant]), flush=True)
            if "error" not in steps["ssb"] and "error" not in steps["dense"]:
                steps["memory_ratio_ssb_over_dense"] = round(steps["ssb"]["peak_rss_growth_gib"] / steps["dense"]["peak_rss_growth_gib"], 3)
                steps["speed_ratio_ssb_over_dense"] = round(steps["ssb"]["tokens_per_s"] / steps["dense"]["tokens_per_s"], 2)
            report["distill_step"]["with_gradient_checkpointing" if checkpointing else "without_gradient_checkpointing"] = steps
            print({k: v for k, v in steps.items() if k.endswith("dense")}, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
