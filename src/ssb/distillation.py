"""Stage 4 (Algorithm 1, lines 38-49): LoRA distillation of the teacher targets into the student view.

The student sees only system + bare question; on every solution token it is trained to match the
teacher distribution, ``T^2 KL(softmax(t/T) || softmax(s/T))`` (``ssb.losses``), optionally mixed
with CE. Prompt tokens are never supervised. Student logits are computed only at the solution
positions and in chunks through the frozen output head (``ssb.losses.fused_head_loss``), so memory does not grow with
batch x sequence x vocabulary.

Runs on accelerate: plain ``ssb distill`` on one device; ``accelerate launch --multi_gpu
--num_processes N -m ssb distill ...`` on GPUs (DeepSpeed/FSDP through accelerate's own config);
``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m ssb distill ...`` on CPUs (gloo).
``distill.batch_size`` is the global number of sequences per optimiser step; each process takes its
share of each step's batch as micro-batches and every loss is divided by the step's *global* count
of sequences (or tokens), so accumulation and data parallelism give the update of one big batch.
Data order is a seeded permutation per epoch; checkpoints hold adapter, optimiser, scheduler and
RNG state, so a resumed run continues the same trajectory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ssb.alignment import AlignedExample, align_examples, answer_token_flags, pack, solution_hidden_states
from ssb.artifacts import JsonlAppender, RunFolderError, read_jsonl, write_jsonl_atomic
from ssb.chat import ChatFormat
from ssb.config import SSBConfig
from ssb.distill_diagnostics import StepDiagnostics
from ssb.losses import cross_entropy, fused_head_loss, reduce_per_token, token_diagnostics
from ssb.models import load_model, load_tokenizer
from ssb.run_folder import RunFolder, invocation_stats, model_provenance, section_inputs
from ssb.teacher_targets import Teacher, open_targets, require_bias_free_head, teacher_view_path

_log = logging.getLogger(__name__)


class SolutionHidden(torch.nn.Module):
    """The trainable forward, as a module so that DDP sees (and syncs) it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return solution_hidden_states(self.model, batch)


def step_batches(num_examples: int, batch_size: int, epochs: int, seed: int) -> list[list[int]]:
    """Example indices of every optimiser step: a seeded permutation per epoch, last partial batch dropped."""
    steps = []
    for epoch in range(epochs):
        order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        steps.extend(order[s : s + batch_size] for s in range(0, num_examples - batch_size + 1, batch_size))
    return steps


def micro_batches(step: list[int], micro_batch_size: int, rank: int, world: int) -> list[list[int]]:
    """This process's micro-batches of one step: micro-batch m goes to process m % world."""
    chunks = [step[i : i + micro_batch_size] for i in range(0, len(step), micro_batch_size)]
    return chunks[rank::world]


def per_token_losses(config: SSBConfig, head, student_hidden: torch.Tensor, teacher: Teacher | None, rows: dict[str, torch.Tensor],
                     targets: torch.Tensor, kd_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N, H) student hidden states + the teacher's rows for them -> (N, 3 + 4) per token: the trained
    objective, KD, CE, then ``ssb.distill_diagnostics.DIAGNOSTICS``.

    Column 0 (kd_weight * KD + ce_weight * CE) carries gradients; the others are reported values.
    ``kd_mask`` (N,) scales each token's KD term (0 drops it; ``distill.kd_exclude_eot``).
    ``teacher`` None (objective sft) trains on CE alone and reports KD as 0.
    """
    weight, names = head.weight, sorted(rows)
    kd_weight, ce_weight = config.distill.kd_weight, config.distill.ce_weight
    kd_mask = torch.ones(len(targets), device=student_hidden.device) if kd_mask is None else kd_mask

    def chunk_loss(student_logits, target_ids, mask, *teacher_chunk):
        ce = cross_entropy(student_logits, target_ids)  # reported even when not trained: it is cheap
        if teacher is None:
            diagnostics = token_diagnostics(student_logits.detach(), None, target_ids)
            return torch.cat([torch.stack([ce, torch.zeros_like(ce), ce], dim=-1), diagnostics], dim=-1)
        scored = teacher.score(student_logits, dict(zip(names, teacher_chunk)), weight, target_ids)  # (c, 5)
        kd = scored[:, 0] * mask
        return torch.cat([torch.stack([kd_weight * kd + ce_weight * ce, kd, ce], dim=-1), scored[:, 1:]], dim=-1)

    return fused_head_loss(student_hidden, weight, chunk_loss, targets, kd_mask.to(student_hidden.device), *(rows[n] for n in names),
                           chunk_size=config.distill.head_chunk_tokens)


def heldout_losses(config: SSBConfig, peft_model, teacher: Teacher | None, examples: list[AlignedExample], pad_id: int) -> dict[str, float]:
    """Mean over held-out examples of each one's mean per-token CE (every objective) and KD (a teacher's
    objectives) under the current adapter, without training: {"heldout_ce": ..., "heldout_kd": ...}."""
    head, device = peft_model.get_output_embeddings(), next(peft_model.parameters()).device
    sums = {"heldout_kd": 0.0, "heldout_ce": 0.0}
    with torch.no_grad():
        for example in examples:
            batch = pack([example.student_prompt_ids], [example.solution_ids], pad_id)
            hidden = solution_hidden_states(peft_model, batch)
            rows = {} if teacher is None else teacher.rows([example], device)
            per_token = per_token_losses(config, head, hidden, teacher, rows, batch.targets.to(device))
            sums["heldout_kd"] += per_token[:, 1].mean().item()
            sums["heldout_ce"] += per_token[:, 2].mean().item()
    return {key: round(total / len(examples), 6) for key, total in sums.items() if teacher is not None or key == "heldout_ce"}


def split_heldout(examples: list[AlignedExample], count: int, seed: int) -> tuple[list[AlignedExample], list[AlignedExample]]:
    """(training, held-out): ``count`` examples drawn with the run's seed, the same for every training seed."""
    if count >= len(examples):
        raise RunFolderError(f"distill.heldout_examples={count} leaves no training example out of {len(examples)}")
    held = set(random.Random(f"{seed}:heldout").sample(range(len(examples)), count))
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def drop_short(examples: list[AlignedExample], min_tokens: int) -> tuple[list[AlignedExample], list[AlignedExample]]:
    """(kept, left out): the examples with at least ``min_tokens`` solution tokens, and the others."""
    return [e for e in examples if len(e.solution_ids) >= min_tokens], [e for e in examples if len(e.solution_ids) < min_tokens]


def split_training(examples: list[AlignedExample], config: SSBConfig) -> tuple[list[AlignedExample], ...]:
    """(trained on, held out, left out as too short): the split distillation makes of refine's examples."""
    training, heldout = split_heldout(examples, config.distill.heldout_examples, config.seed)
    training, short = drop_short(training, config.distill.min_solution_tokens)
    return training, heldout, short


def short_yield(config: SSBConfig) -> str | None:
    """Why distillation would have nothing to train on once the solutions under ``distill.min_solution_tokens``
    are left out, read from refine's views before the teacher runs; None when a micro-batch remains."""
    d = config.distill
    if d.min_solution_tokens == 0:
        return None
    folder = RunFolder(config.run_dir)
    examples = align_examples(folder.file("teacher.jsonl"), folder.file("student.jsonl"), ChatFormat(load_tokenizer(config.model)))
    training, _, short = split_training(examples, config)
    if len(training) >= d.micro_batch_size:
        return None
    return (f"refine kept {len(examples)} solution(s), but {len(short)} of the {len(training) + len(short)} not held out have "
            f"fewer than distill.min_solution_tokens={d.min_solution_tokens} solution tokens, leaving {len(training)}, "
            f"fewer than a micro-batch of {d.micro_batch_size}: too few to train on, so teacher, distill and eval did not run")


def distill_inputs(distill) -> dict:
    """The distill section as the stage's inputs record it (options added later: only when set)."""
    return section_inputs(distill, {"min_solution_tokens": 0})


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(folder: Path, step: int, peft_model, optimizer, scheduler, keep: int = 2) -> Path:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    target = folder / f"step-{step:06d}"
    staging = folder / f".step-{step:06d}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}, staging / "adapter.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "rng": torch.get_rng_state()}, staging / "trainer_state.pt")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    for old in _checkpoints(folder)[:-keep]:
        shutil.rmtree(old)
    return target


def load_checkpoint(path: Path, peft_model, optimizer, scheduler) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = next(peft_model.parameters()).device
    set_peft_model_state_dict(peft_model, {k: v.to(device) for k, v in load_file(path / "adapter.safetensors").items()})
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return state["step"]


def build_peft_model(model, config: SSBConfig):
    from peft import LoraConfig, get_peft_model

    lora = config.distill.lora
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules),
                             bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, peft_config)
    if config.distill.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return peft_model


def run_distill(config: SSBConfig, force: bool = False) -> dict:
    from accelerate import Accelerator
    from transformers import get_scheduler

    accelerator = Accelerator(log_with=None if config.distill.log_with == "none" else config.distill.log_with,
                              project_dir=str(Path(config.run_dir) / "distill"))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        # e.g. `accelerate launch --multi_gpu` on a machine without GPUs: independent copies that would
        # all write the same run folder.
        raise RunFolderError(f"{launched} processes were launched but accelerate set up {accelerator.num_processes}; "
                             "on CPUs launch with: ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m ssb distill ...")
    folder = RunFolder(config.run_dir)
    sft = config.distill.objective == "sft"
    upstream = folder.require_finished("refine" if sft else "teacher", needed_by="distill")
    # Everything that can refuse the inputs runs before the stage is marked as started.
    tokenizer = load_tokenizer(config.model)
    chat = ChatFormat(tokenizer)
    teacher_view = folder.file("teacher.jsonl") if sft else teacher_view_path(folder, config)  # online reads its prompts
    examples = align_examples(teacher_view, folder.file("student.jsonl"), chat)
    examples, heldout, short = split_training(examples, config)
    if not examples:
        raise RunFolderError(f"{folder.path}: every one of the {len(short)} training examples has fewer than "
                             f"distill.min_solution_tokens={config.distill.min_solution_tokens} solution tokens")
    model = load_model(dataclasses.replace(config.model, device=str(accelerator.device)))
    require_bias_free_head(model, config.model.name_or_path)
    stored_targets = None if sft else open_targets(config, folder.file("teacher"), model, tokenizer)

    inputs = {"upstream_inputs_fingerprint": upstream["inputs_fingerprint"], "seed": config.seed,
              "model": dataclasses.asdict(config.model), "distill": distill_inputs(config.distill),
              "teacher_format": None if sft else config.teacher.format, "processes": accelerator.num_processes}
    from accelerate.utils import broadcast_object_list

    fresh = [folder.begin_stage("distill", inputs, force) if accelerator.is_main_process else None]
    broadcast_object_list(fresh)
    if not fresh[0]:
        return folder.stats()["distill"]
    out = folder.file("distill")
    train_seed = config.seed if config.distill.seed is None else config.distill.seed
    torch.manual_seed(train_seed)
    peft_model = build_peft_model(model, config)
    peft_model.train()
    head = peft_model.get_output_embeddings()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    teacher = None if sft else Teacher(config, stored_targets, peft_model, chat.pad_id)
    answer_flags = {e.id: answer_token_flags(chat, e.solution_ids) for e in examples}

    d = config.distill
    world, rank = accelerator.num_processes, accelerator.process_index
    if d.batch_size % (d.micro_batch_size * world):
        raise RunFolderError(f"distill.batch_size={d.batch_size} must be a multiple of micro_batch_size x processes = {d.micro_batch_size * world}")
    per_step = d.micro_batch_size * world
    batch_size = min(d.batch_size, len(examples) - len(examples) % per_step)
    if batch_size == 0:
        raise RunFolderError(f"{folder.path}: {len(examples)} examples make no batch of micro_batch_size x processes = {per_step}")
    if batch_size < d.batch_size:
        _log.warning("only %d examples: the batch is reduced from %d to %d sequences", len(examples), d.batch_size, batch_size)
    steps = step_batches(len(examples), batch_size, d.epochs, train_seed)
    if d.max_steps is not None:
        steps = steps[: d.max_steps]
    optimizer = torch.optim.AdamW(trainable, lr=d.lr, weight_decay=d.weight_decay)
    scheduler = get_scheduler("constant_with_warmup" if d.scheduler == "constant" else d.scheduler, optimizer,
                              num_warmup_steps=d.warmup_steps, num_training_steps=len(steps))
    wrapper, optimizer = accelerator.prepare(SolutionHidden(peft_model), optimizer)

    checkpoints = out / "checkpoints"
    done = 0
    if _checkpoints(checkpoints):
        done = load_checkpoint(_checkpoints(checkpoints)[-1], peft_model, optimizer, scheduler)
        _log.info("resuming distillation after step %d", done)
    metrics_path = out / "metrics.jsonl"
    if accelerator.is_main_process:
        # Steps after the checkpoint are redone: their metrics lines would otherwise appear twice.
        write_jsonl_atomic(metrics_path, [m for m in read_jsonl(metrics_path) if m["step"] <= done])
        if d.log_with != "none":
            accelerator.init_trackers("ssb-distill", config={"distill": dataclasses.asdict(d)})
    metrics = JsonlAppender(metrics_path) if accelerator.is_main_process else None

    started = time.monotonic()
    bar = tqdm(total=len(steps), initial=done, desc="distill", disable=not (config.progress and accelerator.is_main_process))
    for step in range(done + 1, len(steps) + 1):
        step_start = time.monotonic()
        global_examples = [examples[i] for i in steps[step - 1]]
        denominator = len(global_examples) if d.normalization == "sequence" else sum(len(e.solution_ids) for e in global_examples)
        parts = micro_batches(steps[step - 1], d.micro_batch_size, rank, world)
        sums = torch.zeros(3, device=accelerator.device)  # loss, kd, ce of this process's share
        diagnostics = StepDiagnostics(accelerator.device)
        local_tokens = 0
        for m, indices in enumerate(parts):
            group: list[AlignedExample] = [examples[i] for i in indices]
            batch = pack([e.student_prompt_ids for e in group], [e.solution_ids for e in group], chat.pad_id)
            rows = {} if teacher is None else teacher.rows(group, accelerator.device)
            sync = m == len(parts) - 1
            with nullcontext() if sync else accelerator.no_sync(wrapper):
                hidden = wrapper(batch)
                targets = batch.targets.to(accelerator.device)
                eot = targets == chat.end_of_turn_id
                per_token = per_token_losses(config, head, hidden, teacher, rows, targets, (~eot).float() if d.kd_exclude_eot else None)
                index = batch.sequence_index.to(accelerator.device)
                loss, kd, ce = (reduce_per_token(per_token[:, j], index, len(group), d.normalization, denominator) for j in range(3))
                # DDP averages gradients over processes; the loss is already a share of the global mean.
                accelerator.backward(loss * world)
            sums += torch.stack([loss.detach(), kd.detach(), ce.detach()])
            answer = torch.tensor([flag for e in group for flag in answer_flags[e.id]], device=accelerator.device)
            diagnostics.add(per_token, eot, answer)
            local_tokens += len(batch.targets)
        totals = accelerator.reduce(sums, reduction="sum")
        if not torch.isfinite(totals[0]):
            last = _checkpoints(checkpoints)
            raise FloatingPointError(f"non-finite loss at step {step}; stopping. Last good checkpoint: {last[-1] if last else 'none'}")
        grad_norm = accelerator.clip_grad_norm_(trainable, d.max_grad_norm) if d.max_grad_norm > 0 else _grad_norm(trainable)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = int(accelerator.reduce(torch.tensor(local_tokens, device=accelerator.device), reduction="sum"))
        elapsed = time.monotonic() - step_start
        record = {"step": step, "epoch": (step - 1) // (len(examples) // batch_size) + 1, "loss": totals[0].item(), "kl": totals[1].item(),
                  "ce": totals[2].item(), "grad_norm": float(grad_norm), "lr": lr, "sequences": len(global_examples), "solution_tokens": tokens,
                  "tokens_per_s": round(tokens / elapsed, 2), "step_s": round(elapsed, 3),
                  **StepDiagnostics.metrics(accelerator.reduce(diagnostics.sums, reduction="sum"))}
        if heldout and accelerator.is_main_process and (step == 1 or step % d.heldout_every == 0 or step == len(steps)):
            record.update(heldout_losses(config, peft_model, teacher, heldout, chat.pad_id))
        if metrics is not None:
            metrics.append(record)
            if d.log_with != "none":
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
        if step % d.save_every == 0 or step == len(steps):
            if accelerator.is_main_process:
                save_checkpoint(checkpoints, step, peft_model, optimizer, scheduler)
            accelerator.wait_for_everyone()
    bar.close()

    stats = {}
    if accelerator.is_main_process:
        metrics.close()
        peft_model.save_pretrained(out / "adapter")
        if d.merge:
            peft_model.merge_and_unload().save_pretrained(out / "merged")
            tokenizer.save_pretrained(out / "merged")
        history = read_jsonl(metrics_path)
        stats = {"steps": len(steps), "examples": len(examples), "heldout_examples": len(heldout), "short_examples_left_out": len(short),
                 "batch_size": batch_size,
                 "mean_solution_tokens": round(sum(len(e.solution_ids) for e in examples) / len(examples), 1),
                 "first_loss": history[0]["loss"], "last_loss": history[-1]["loss"],
                 "this_invocation": invocation_stats(time.monotonic() - started),
                 "trainable_parameters": sum(p.numel() for p in trainable)}
        folder.finish_stage("distill", inputs, {**model_provenance(config, tokenizer), "adapter": str(out / "adapter")}, stats)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return stats


def _grad_norm(parameters) -> torch.Tensor:
    grads = [p.grad.detach().norm() for p in parameters if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.tensor(0.0)

