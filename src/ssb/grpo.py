"""``ssb grpo``: the paper's RL control, GRPO through TRL's ``GRPOTrainer``, under SSB's conditions.

Same base model, same LoRA shape (``distill.lora``), same question source (``data``), same chat
template and system prompt, and a reward computed by ``ssb.grading``: 1 for a correct last boxed
answer, 0 otherwise, plus an optional format term (``grpo.format_reward``, off by default) for
writing a boxed answer at all. Completions are sampled by ssb's CPU engine serving the trainer's
current LoRA (``grpo.sampler`` engine, through TRL's ``rollout_func``: ``ssb.grpo_rollouts``), or by TRL's
own generation: transformers, or its vLLM mode where installed (``grpo.use_vllm``). Output: ``grpo/adapter`` (PEFT, evaluable with ``ssb eval``),
``grpo/metrics.jsonl`` (TRL's log history) and TRL checkpoints, from the newest complete one of
which an interrupted run resumes.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import time
from pathlib import Path

from transformers import TrainerCallback

from ssb.artifacts import write_json_atomic, write_jsonl_atomic
from ssb.chat import ChatFormat, fold_system_into_user, messages
from ssb.config import SSBConfig
from ssb.data import load_problems
from ssb.grading import extract_boxed_answer, grade
from ssb.lora import peft_lora_config
from ssb.prompts import load_prompts
from ssb.run_folder import RunFolder, invocation_stats, model_provenance

_log = logging.getLogger(__name__)


def correctness_reward(completions: list, gold: list[str], timeout_s: float = 5.0, **kwargs) -> list[float]:
    """TRL reward function: 1.0 when a completion's last boxed answer equals its gold, else 0.0.

    ``completions`` are TRL's conversational completions (``[{"role": "assistant", "content": ...}]``)
    or plain strings; ``gold`` is the dataset column of the same name, one per completion.
    """
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [1.0 if grade(text, answer, timeout_s).correct else 0.0 for text, answer in zip(texts, gold)]


def format_reward(completions: list, **kwargs) -> list[float]:
    """TRL reward function: 1.0 when a completion contains a (closed) boxed answer."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [1.0 if extract_boxed_answer(text) is not None else 0.0 for text in texts]


class WallClockBudget(TrainerCallback):
    """TRL callback: stop training once the wall-clock spent, over every invocation, reaches the budget.

    A resumed run continues the count from the checkpoint it resumes from: every checkpoint saves
    the time spent up to its step (``BUDGET_FILE`` inside it). Steps taken after the last checkpoint
    are redone on resume, so the time they took is not counted; only the time up to the checkpoint
    is, plus the new invocation's. Without a checkpoint a run starts at 0. ``grpo/wall_s.json`` shows
    the time spent after each step (for progress; not read back).
    """

    BUDGET_FILE = "ssb_wall_s.json"

    def __init__(self, budget_s: float, ledger: Path, resume_from: str | None = None):
        self.budget_s, self.ledger = budget_s, ledger
        saved = Path(resume_from) / self.BUDGET_FILE if resume_from else None
        self.spent_before = json.loads(saved.read_text())["wall_s"] if saved is not None and saved.exists() else 0.0
        if saved is not None and not saved.exists():
            _log.warning("%s records no wall-clock spent; the budget counts from 0 again", resume_from)
        self.started = time.monotonic()

    def spent(self) -> float:
        return self.spent_before + time.monotonic() - self.started

    def on_step_end(self, args, state, control, **kwargs):
        write_json_atomic(self.ledger, {"wall_s": round(self.spent(), 2), "step": state.global_step})
        if self.spent() >= self.budget_s:
            _log.info("wall-clock budget of %.0f s reached after step %d", self.budget_s, state.global_step)
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"  # the folder the trainer has just written
        if checkpoint.is_dir():
            write_json_atomic(checkpoint / self.BUDGET_FILE, {"wall_s": round(self.spent(), 2), "step": state.global_step})
        return control


def generated_tokens(log_history: list[dict], completions_per_step: int) -> int:
    """Completion tokens generated over the logged steps: TRL logs each step's mean completion length."""
    return round(sum(e.get("completions/mean_length", 0.0) for e in log_history if "step" in e) * completions_per_step)


class GenerationBudget(TrainerCallback):
    """TRL callback: stop training once the completions generated reach ``max_tokens``. The count is the trainer's
    own log history, which a checkpoint carries, so a resumed run continues it."""

    def __init__(self, max_tokens: int, completions_per_step: int):
        self.max_tokens, self.completions_per_step = max_tokens, completions_per_step
        self.reached = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        spent = generated_tokens(state.log_history, self.completions_per_step)
        if spent >= self.max_tokens and not control.should_training_stop:
            _log.info("grpo: generation budget of %d tokens reached after step %d (%d generated)", self.max_tokens, state.global_step, spent)
            self.reached = True
            control.should_training_stop = True
        return control


# What the trainer writes into a checkpoint folder that resuming reads, trainer_state.json last
# (transformers' Trainer._save_checkpoint): a kill during a save leaves a folder without it, and a kill
# while older checkpoints are rotated away (a plain rmtree) one with some of the rest missing.
CHECKPOINT_FILES = ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json")


def checkpoint_is_complete(checkpoint: Path) -> bool:
    """Whether a TRL checkpoint folder holds everything a resume reads: each of ``CHECKPOINT_FILES``
    (not empty), an RNG state, and a trainer state that parses."""
    if not all((checkpoint / name).is_file() and (checkpoint / name).stat().st_size > 0 for name in CHECKPOINT_FILES):
        return False
    if not any(checkpoint.glob("rng_state*.pth")):
        return False
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest complete ``checkpoint-N`` in ``checkpoints`` (None when there is none), logging each newer one skipped."""
    found = sorted((p for p in checkpoints.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()),
                   key=lambda p: int(p.name.split("-", 1)[1]), reverse=True)
    for checkpoint in found:
        if checkpoint_is_complete(checkpoint):
            return str(checkpoint)
        _log.warning("skipping %s: incomplete (interrupted while being saved or removed); resuming from an older one", checkpoint)
    return None


def build_dataset(config: SSBConfig, chat: ChatFormat):
    """Conversational prompts (the SSB system prompt + bare question) with their gold answers."""
    from datasets import Dataset

    system = load_prompts(config.prompts.system, config.prompts.hinted).system
    rows = []
    for problem in load_problems(config.data).problems:
        conversation = messages(system, problem.question)
        if not chat.supports_system_role:  # the same folding every other stage applies
            conversation = fold_system_into_user(conversation)
        rows.append({"prompt": conversation, "gold": problem.gold, "id": problem.id})
    return Dataset.from_list(rows)


def sampler_name(config: SSBConfig) -> str:
    """What samples GRPO's completions under ``config``: ``engine`` (ssb's OpenVINO engine), ``trl-vllm`` or ``trl``
    (transformers); ``grpo.sampler: auto`` resolved."""
    from ssb.generation import backend_name

    g = config.grpo
    if g.sampler == "engine" and g.use_vllm:
        raise ValueError("grpo.sampler: engine and grpo.use_vllm exclude each other (vLLM is TRL's own sampler)")
    if g.sampler == "trl" or g.use_vllm or (g.sampler == "auto" and backend_name(config) != "openvino"):
        if g.policy_lag:
            raise ValueError("grpo.policy_lag: only the engine sampler samples from older weights; TRL's generation uses the current ones")
        return "trl-vllm" if g.use_vllm else "trl"
    if importlib.util.find_spec("openvino_genai") is None:
        raise ValueError("grpo.sampler: engine needs openvino-genai (pip install -c constraints-cpu.txt -e '.[openvino]')")
    return "engine"


def sampler_inputs(config: SSBConfig, sampler: str) -> dict:
    """What the completions' numerics depend on: the sampler, and for the engine its resolved settings
    (``backend_spec``: the precision that runs, not ``auto``) and sequences in flight."""
    from ssb.generation import backend_spec

    return {"name": sampler, **({**backend_spec(config), "batch_size": config.backend.batch_size} if sampler == "engine" else {})}


def run_grpo(config: SSBConfig, force: bool = False, reward_funcs: list | None = None) -> dict:
    """Train a LoRA adapter with GRPO; ``reward_funcs`` replaces the grader-based rewards (tests)."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from ssb.models import load_model, load_tokenizer, resolve_device
    from ssb.trl_order import epoch_seeded

    folder = RunFolder(config.run_dir)
    g = config.grpo
    tokenizer = load_tokenizer(config.model)
    chat = ChatFormat(tokenizer)
    dataset = build_dataset(config, chat)  # bad input fails before the run folder is touched
    sampler = sampler_name(config)
    stage = folder.stage("grpo", config, sampler=sampler_inputs(config, sampler))
    if not stage.begin(force):
        return stage.stats()
    out = folder.file("grpo")
    on_gpu = resolve_device(config.model).type == "cuda"
    if reward_funcs is None:
        timeout = config.grading.timeout_s
        reward_funcs = [lambda completions, gold, **kw: correctness_reward(completions, gold, timeout)]
        reward_funcs[0].__name__ = "correct"
        if g.format_reward > 0:
            reward_funcs.append(format_reward)
    weights = [1.0] + ([g.format_reward] if len(reward_funcs) > 1 else [])
    args = GRPOConfig(
        output_dir=str(out / "checkpoints"), seed=config.seed, use_cpu=not on_gpu, bf16=on_gpu and config.model.dtype in ("auto", "bfloat16"),
        learning_rate=g.lr, num_train_epochs=g.epochs, max_steps=g.max_steps if g.max_steps is not None else -1,
        per_device_train_batch_size=g.batch_size, gradient_accumulation_steps=g.gradient_accumulation_steps,
        num_generations=g.num_generations, steps_per_generation=g.steps_per_generation, max_completion_length=g.max_completion_length,
        temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, beta=g.beta, reward_weights=weights,
        max_grad_norm=g.max_grad_norm, warmup_steps=g.warmup_steps, logging_steps=1, save_steps=g.save_every,
        save_total_limit=2, report_to=[], use_vllm=g.use_vllm, gradient_checkpointing=g.gradient_checkpointing,
        disable_tqdm=not config.progress,
    )
    peft_config = peft_lora_config(config)  # the one LoRA set-up of every arm
    torch.manual_seed(config.seed)
    checkpoint = last_complete_checkpoint(out / "checkpoints")
    budget = None if g.max_wall_s is None else WallClockBudget(g.max_wall_s, out / "wall_s.json", resume_from=checkpoint)
    per_step = g.batch_size * g.gradient_accumulation_steps
    tokens = None if g.max_generated_tokens is None else GenerationBudget(g.max_generated_tokens, per_step)
    callbacks = [c for c in (budget, tokens) if c is not None]
    rollouts = None
    if sampler == "engine":
        rollouts, checkpoints = engine_rollouts(config, chat, peft_config, checkpoint)
        callbacks.append(checkpoints)
    trainer = epoch_seeded(GRPOTrainer)(model=load_model(config.model), reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks or None, rollout_func=rollouts)
    start = time.monotonic()
    history = train_and_save(trainer, checkpoint, rollouts, out)
    stats = {"steps": trainer.state.global_step, "questions": len(dataset), "this_invocation": invocation_stats(time.monotonic() - start),
             "generated_completions": trainer.state.global_step * per_step,
             "generated_tokens": generated_tokens(history, per_step),
             "sampler": sampler,
             "last_reward": next((e["reward"] for e in reversed(history) if "reward" in e), None),
             "stopped_by_wall_clock_budget": budget is not None and budget.spent() >= g.max_wall_s,
             "stopped_by_generation_budget": tokens is not None and generated_tokens(history, per_step) >= g.max_generated_tokens}
    stage.finish({**model_provenance(config, tokenizer), "adapter": str(out / "adapter")}, stats)
    return stats


def train_and_save(trainer, checkpoint: str | None, rollouts, out: Path) -> list[dict]:
    """Train a TRL trainer (resuming from ``checkpoint``), release the engine sampler, save ``out/adapter`` and
    ``out/metrics.jsonl`` (the log history, one entry per step); returns that history. GRPO's and the on-policy arm's."""
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if rollouts is not None:
            rollouts.sampler.close()
    trainer.save_model(str(out / "adapter"))
    history = [entry for entry in trainer.state.log_history if "step" in entry]
    write_jsonl_atomic(out / "metrics.jsonl", history)
    return history


def engine_rollouts(config: SSBConfig, chat: ChatFormat, peft_config, checkpoint: str | None):
    """The engine's ``rollout_func`` for the trainer, with the lagged weights a checkpoint saved pushed back, and the
    callback that saves them into later checkpoints."""
    import os

    from ssb.generation import SamplingParams
    from ssb.generation.policy_sampler import PolicySampler, lora_scaling
    from ssb.grpo_rollouts import EngineRollouts, SamplerCheckpoints, restore

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL; ssb pins TRL's version
    g = config.grpo
    sampler = PolicySampler.from_config(config, chat, lora_scaling(peft_config), g.policy_lag)
    restored = restore(sampler, checkpoint)
    if restored:
        _log.info("grpo: the sampler resumes with the weights of steps %s from %s", restored, checkpoint)
    params = SamplingParams(n=g.num_generations, temperature=g.temperature, top_p=g.top_p, top_k=g.top_k,
                            max_new_tokens=g.max_completion_length)
    return EngineRollouts(sampler, chat, params, config.seed), SamplerCheckpoints(sampler)
