"""Stage 4 (Algorithm 1, lines 38-49): LoRA training of the student view, with the objective ``distill.objective`` names.

The student sees only system + bare question; prompt tokens are never supervised. What it is trained
to match is the objective's (``ssb.objectives``: ``kd``, SSB's distillation of the teacher targets;
``sft``, cross-entropy on the same solutions); the loop itself is ``ssb.training_loop``. This module
is the stage around it: the upstream check, the examples and their split (held out, too short), the
model and its LoRA (``ssb.lora``), the run folder's record and the saved adapter.

Runs on accelerate: plain ``ssb distill`` on one device; ``accelerate launch --multi_gpu
--num_processes N -m ssb distill ...`` on GPUs (DeepSpeed/FSDP through accelerate's own config);
``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m ssb distill ...`` on CPUs (gloo).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from pathlib import Path

import torch

from ssb.alignment import AlignedExample, align_examples
from ssb.chat import ChatFormat
from ssb.config import SSBConfig
from ssb.lora import build_peft_model, save_adapter
from ssb.models import load_model, load_tokenizer
from ssb.objectives import objective_for
from ssb.runfolder.artifacts import RunFolderError, writing
from ssb.runfolder.file_modes import follow_umask
from ssb.runfolder.folder import RunFolder, invocation_stats, model_provenance
from ssb.teacher_targets import require_bias_free_head
from ssb.training_loop import train

_log = logging.getLogger(__name__)


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


def run_distill(config: SSBConfig, force: bool = False) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list

    accelerator = Accelerator(log_with=None if config.distill.log_with == "none" else config.distill.log_with,
                              project_dir=str(Path(config.run_dir) / "distill"))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        # e.g. `accelerate launch --multi_gpu` on a machine without GPUs: independent copies that would
        # all write the same run folder.
        raise RunFolderError(f"{launched} processes were launched but accelerate set up {accelerator.num_processes}; "
                             "on CPUs launch with: ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N -m ssb distill ...")
    folder = RunFolder(config.run_dir)
    objective = objective_for(config)
    stage = folder.stage("distill", config, processes=accelerator.num_processes)  # its objective's upstream stage must have finished
    # Everything that can refuse the inputs runs before the stage is marked as started.
    tokenizer = load_tokenizer(config.model)
    chat = ChatFormat(tokenizer)
    examples = align_examples(objective.teacher_view(folder), folder.file("student.jsonl"), chat)
    examples, heldout, short = split_training(examples, config)
    if not examples:
        raise RunFolderError(f"{folder.path}: every one of the {len(short)} training examples has fewer than "
                             f"distill.min_solution_tokens={config.distill.min_solution_tokens} solution tokens")
    model = load_model(dataclasses.replace(config.model, device=str(accelerator.device)))
    require_bias_free_head(model, config.model.name_or_path)
    objective.open(folder, model, tokenizer)

    fresh = [stage.begin(force) if accelerator.is_main_process else None]
    broadcast_object_list(fresh)
    if not fresh[0]:
        return stage.stats()
    out = folder.file("distill")
    train_seed = config.seed if config.distill.seed is None else config.distill.seed
    torch.manual_seed(train_seed)
    peft_model = build_peft_model(model, config)
    objective.attach(peft_model, chat)
    started = time.monotonic()
    trained = train(accelerator, objective, peft_model, examples, heldout, chat, config, out, train_seed)

    stats = {}
    if accelerator.is_main_process:
        save_adapter(peft_model, out / "adapter")
        if config.distill.merge:
            with writing(out / "merged"):
                peft_model.merge_and_unload().save_pretrained(out / "merged")
                tokenizer.save_pretrained(out / "merged")
                follow_umask(out / "merged")
        history = trained.metrics
        stats = {"steps": trained.steps, "examples": len(examples), "heldout_examples": len(heldout), "short_examples_left_out": len(short),
                 "batch_size": trained.batch_size,
                 "mean_solution_tokens": round(sum(len(e.solution_ids) for e in examples) / len(examples), 1),
                 "first_loss": history[0]["loss"], "last_loss": history[-1]["loss"],
                 "this_invocation": invocation_stats(time.monotonic() - started),
                 "trainable_parameters": trained.trainable_parameters}
        stage.finish({**model_provenance(config, tokenizer), "adapter": str(out / "adapter")}, stats)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return stats
