"""The one training loop of the distill stage, whatever the objective (``ssb.objectives``).

Accelerate runs it on one device or several processes; ``distill.batch_size`` is the global number
of sequences per optimiser step: each process takes its share of each step's batch as micro-batches
and every loss is divided by the step's *global* count of sequences (or tokens), so accumulation and
data parallelism give the update of one big batch. Data order is a seeded permutation per epoch.
Checkpoints hold adapter, optimiser, scheduler and RNG state, so a resumed run continues the same
trajectory; a non-finite loss stops training and names the last good checkpoint. Held-out losses
are reported at the first and last step and every ``distill.heldout_every`` steps.

Student logits are computed only at the solution positions, in chunks through the frozen output
head (``ssb.losses.fused_head_loss``), so memory does not grow with batch x sequence x vocabulary;
the objective maps each chunk of logits (and its rows of teacher data) to its named per-token terms.
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ssb.alignment import AlignedExample, answer_token_flags, pack, solution_hidden_states
from ssb.distill_diagnostics import StepDiagnostics
from ssb.losses import fused_head_loss, reduce_per_token
from ssb.runfolder.artifacts import JsonlAppender, RunFolderError, read_jsonl, write_jsonl_atomic, writing
from ssb.runfolder.file_modes import follow_umask

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


def per_token_terms(objective, head, student_hidden: torch.Tensor, rows: dict[str, torch.Tensor], targets: torch.Tensor,
                    chunk_tokens: int, training: bool = True) -> torch.Tensor:
    """(N, H) student hidden states + the objective's rows for them -> (N, len(objective.terms)) per-token terms.

    Column 0 (the term "loss") carries gradients; the others are reported values.
    """
    names = sorted(rows)

    def chunk_terms(student_logits, target_ids, *row_chunks):
        return objective.chunk_terms(student_logits, dict(zip(names, row_chunks)), head.weight, target_ids, training)

    return fused_head_loss(student_hidden, head.weight, chunk_terms, targets, *(rows[n] for n in names), chunk_size=chunk_tokens)


def heldout_losses(objective, peft_model, examples: list[AlignedExample], pad_id: int, chunk_tokens: int) -> dict[str, float]:
    """Mean over held-out examples of each one's mean per-token value of each of ``objective.heldout_terms``,
    under the current adapter, without training: {"heldout_<term>": ...}."""
    head, device = peft_model.get_output_embeddings(), next(peft_model.parameters()).device
    columns = [objective.terms.index(term) for term in objective.heldout_terms]
    sums = [0.0] * len(columns)
    with torch.no_grad():
        for example in examples:
            batch = pack([example.student_prompt_ids], [example.solution_ids], pad_id)
            hidden = solution_hidden_states(peft_model, batch)
            per_token = per_token_terms(objective, head, hidden, objective.rows([example], device), batch.targets.to(device), chunk_tokens,
                                        training=False)
            for i, column in enumerate(columns):
                sums[i] += per_token[:, column].mean().item()
    return {f"heldout_{term}": round(total / len(examples), 6) for term, total in zip(objective.heldout_terms, sums)}


def checkpoints_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(folder: Path, step: int, peft_model, optimizer, scheduler, keep: int = 2) -> Path:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    target = folder / f"step-{step:06d}"
    staging = folder / f".step-{step:06d}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with writing(staging / "adapter.safetensors"):
        save_file({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}, staging / "adapter.safetensors")
        follow_umask(staging / "adapter.safetensors")
    # Into a Python file, so that a failed write (a full disk) surfaces as the OSError under torch's RuntimeError.
    with writing(staging / "trainer_state.pt"), open(staging / "trainer_state.pt", "wb") as f:
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step, "rng": torch.get_rng_state()}, f)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    for old in checkpoints_in(folder)[:-keep]:
        shutil.rmtree(old)
    return target


def checkpoint_damage(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from (a file missing, torn, changed, or one that would unpickle
    code), or None."""
    from ssb.checkpoints import safetensors_damage, torch_state_damage

    return safetensors_damage(path / "adapter.safetensors") or torch_state_damage(path / "trainer_state.pt")


def load_checkpoint(path: Path, peft_model, optimizer, scheduler) -> int:
    """Load a checkpoint ``checkpoint_damage`` passed into model, optimiser and scheduler; returns its step."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = next(peft_model.parameters()).device
    weights = load_file(path / "adapter.safetensors")
    redo = f"remove {path} to resume from an earlier checkpoint or from the start"
    try:
        set_peft_model_state_dict(peft_model, {k: v.to(device) for k, v in weights.items()})
        # Tensors and plain values only: a checkpoint in a shared or downloaded run folder must not run code.
        state = torch.load(path / "trainer_state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
    except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as exc:  # the files load, but are not this training's
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise RunFolderError(f"{path}: the checkpoint does not fit this training ({detail}); {redo}") from None
    # torch takes per-parameter optimiser state of any shape, and fails (or trains on garbage) only at the next step.
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise RunFolderError(f"{path / 'trainer_state.pt'}: the optimiser state {name!r} has shape {list(value.shape)}, not the "
                                         f"{list(param.shape)} of its parameter: saved by another training; {redo}")
    return step


@dataclass
class Trained:
    steps: int
    batch_size: int
    trainable_parameters: int
    metrics: list[dict]


def _grad_norm(parameters) -> torch.Tensor:
    grads = [p.grad.detach().norm() for p in parameters if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.tensor(0.0)


def plan_steps(num_examples: int, d, world: int, train_seed: int, folder: Path) -> tuple[int, list[list[int]]]:
    """(sequences per step, example indices of every step) for ``distill`` section ``d`` on ``world`` processes: the batch
    is cut down to what the examples fill (whole micro-batches of every process) and the steps to ``max_steps``."""
    per_step = d.micro_batch_size * world
    if d.batch_size % per_step:
        raise RunFolderError(f"distill.batch_size={d.batch_size} must be a multiple of micro_batch_size x processes = {per_step}")
    batch_size = min(d.batch_size, num_examples - num_examples % per_step)
    if batch_size == 0:
        raise RunFolderError(f"{folder}: {num_examples} examples make no batch of micro_batch_size x processes = {per_step}")
    if batch_size < d.batch_size:
        _log.warning("only %d examples: the batch is reduced from %d to %d sequences", num_examples, d.batch_size, batch_size)
    steps = step_batches(num_examples, batch_size, d.epochs, train_seed)
    return batch_size, steps if d.max_steps is None else steps[: d.max_steps]


def resume(accelerator, checkpoints: Path, metrics_path: Path, peft_model, optimizer, scheduler) -> int:
    """The optimiser steps already done: the newest intact checkpoint's, loaded into model, optimiser and scheduler (0 without
    one; a damaged newer one is skipped, logged); the metrics of the steps after it, which are redone, are dropped so that
    they do not appear twice."""
    from ssb.checkpoints import newest_intact

    done = 0
    checkpoint = newest_intact(checkpoints_in(checkpoints)[::-1], checkpoint_damage)
    if checkpoint is not None:
        done = load_checkpoint(checkpoint, peft_model, optimizer, scheduler)
        _log.info("resuming distillation after step %d (%s)", done, checkpoint)
    if accelerator.is_main_process:
        write_jsonl_atomic(metrics_path, [m for m in read_jsonl(metrics_path) if m["step"] <= done])
    return done


def train(accelerator, objective, peft_model, examples: list[AlignedExample], heldout: list[AlignedExample], chat, config,
          out: Path, train_seed: int) -> Trained:
    """Train ``peft_model``'s adapters on ``examples`` with ``objective``, resuming from ``out/checkpoints``;
    metrics go to ``out/metrics.jsonl`` (one line per optimiser step, written by the main process)."""
    from transformers import get_scheduler

    d = config.distill
    peft_model.train()
    head = peft_model.get_output_embeddings()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    answer_flags = {e.id: answer_token_flags(chat, e.solution_ids) for e in examples}
    world, rank = accelerator.num_processes, accelerator.process_index
    batch_size, steps = plan_steps(len(examples), d, world, train_seed, out.parent)
    optimizer = torch.optim.AdamW(trainable, lr=d.lr, weight_decay=d.weight_decay)
    scheduler = get_scheduler("constant_with_warmup" if d.scheduler == "constant" else d.scheduler, optimizer,
                              num_warmup_steps=d.warmup_steps, num_training_steps=len(steps))
    wrapper, optimizer = accelerator.prepare(SolutionHidden(peft_model), optimizer)

    checkpoints, metrics_path = out / "checkpoints", out / "metrics.jsonl"
    done = resume(accelerator, checkpoints, metrics_path, peft_model, optimizer, scheduler)
    if accelerator.is_main_process and d.log_with != "none":
        import dataclasses

        accelerator.init_trackers("ssb-distill", config={"distill": dataclasses.asdict(d)})
    metrics = JsonlAppender(metrics_path) if accelerator.is_main_process else None
    logged = list(objective.logged.items())  # (metric, term), "loss" first: the one backpropagated
    columns = [objective.terms.index(term) for _, term in logged]

    bar = tqdm(total=len(steps), initial=done, desc="distill", disable=not (config.progress and accelerator.is_main_process))
    for step in range(done + 1, len(steps) + 1):
        step_start = time.monotonic()
        global_examples = [examples[i] for i in steps[step - 1]]
        denominator = len(global_examples) if d.normalization == "sequence" else sum(len(e.solution_ids) for e in global_examples)
        parts = micro_batches(steps[step - 1], d.micro_batch_size, rank, world)
        sums = torch.zeros(len(logged), device=accelerator.device)  # each logged term over this process's share
        diagnostics = StepDiagnostics(accelerator.device)
        local_tokens = 0
        for m, indices in enumerate(parts):
            group: list[AlignedExample] = [examples[i] for i in indices]
            batch = pack([e.student_prompt_ids for e in group], [e.solution_ids for e in group], chat.pad_id)
            rows = objective.rows(group, accelerator.device)
            sync = m == len(parts) - 1
            with nullcontext() if sync else accelerator.no_sync(wrapper):
                hidden = wrapper(batch)
                targets = batch.targets.to(accelerator.device)
                per_token = per_token_terms(objective, head, hidden, rows, targets, d.head_chunk_tokens)
                index = batch.sequence_index.to(accelerator.device)
                reduced = [reduce_per_token(per_token[:, c], index, len(group), d.normalization, denominator) for c in columns]
                # DDP averages gradients over processes; the loss is already a share of the global mean.
                accelerator.backward(reduced[0] * world)
            sums += torch.stack([value.detach() for value in reduced])
            answer = torch.tensor([flag for e in group for flag in answer_flags[e.id]], device=accelerator.device)
            diagnostics.add(per_token, objective.terms, targets == chat.end_of_turn_id, answer)
            local_tokens += len(batch.targets)
        totals = accelerator.reduce(sums, reduction="sum")
        if not torch.isfinite(totals[0]):
            last = checkpoints_in(checkpoints)
            raise FloatingPointError(f"non-finite loss at step {step}; stopping. Last good checkpoint: {last[-1] if last else 'none'}")
        grad_norm = accelerator.clip_grad_norm_(trainable, d.max_grad_norm) if d.max_grad_norm > 0 else _grad_norm(trainable)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens = int(accelerator.reduce(torch.tensor(local_tokens, device=accelerator.device), reduction="sum"))
        elapsed = time.monotonic() - step_start
        record = {"step": step, "epoch": (step - 1) // (len(examples) // batch_size) + 1,
                  **{metric: totals[i].item() for i, (metric, _) in enumerate(logged)},
                  "grad_norm": float(grad_norm), "lr": lr, "sequences": len(global_examples), "solution_tokens": tokens,
                  "tokens_per_s": round(tokens / elapsed, 2), "step_s": round(elapsed, 3),
                  **StepDiagnostics.metrics(accelerator.reduce(diagnostics.sums, reduction="sum"))}
        if heldout and accelerator.is_main_process and (step == 1 or step % d.heldout_every == 0 or step == len(steps)):
            record.update(heldout_losses(objective, peft_model, heldout, chat.pad_id, d.head_chunk_tokens))
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
    if metrics is not None:
        metrics.close()
    return Trained(steps=len(steps), batch_size=batch_size, trainable_parameters=sum(p.numel() for p in trainable),
                   metrics=read_jsonl(metrics_path) if accelerator.is_main_process else [])
