"""``ssb grpo``: the paper's RL control, GRPO through TRL's ``GRPOTrainer``, under SSB's conditions.

Same base model, same LoRA shape (``distill.lora``), same question source (``data``), same chat
template and system prompt, and a reward computed by ``ssb.grading`` (``correctness_reward``): 1 for a correct
last boxed answer, 0 otherwise, plus an optional format term (``grpo.format_reward``, off by default) for
writing a boxed answer at all. Completions are sampled by ssb's CPU engine serving the trainer's
current LoRA (``grpo.sampler`` engine, through TRL's ``rollout_func``: ``ssb.arms.engine_rollouts.TrainerSampling``), or by TRL's
own generation: transformers, or its vLLM mode where installed (``grpo.use_vllm``). Output: ``grpo/adapter`` (PEFT, evaluable with ``ssb eval``),
``grpo/metrics.jsonl`` (TRL's log history) and TRL checkpoints, from the newest complete one of
which an interrupted run resumes.
"""

from __future__ import annotations

import functools
import logging
import time

from ssb.arms.trl import (
    GenerationBudget,
    WallClockBudget,
    correct_with_engine_logprobs,
    epoch_seeded,
    generated_tokens,
    last_complete_checkpoint,
    sampler_choice,
    sampler_inputs,
    train_and_save,
    trainer_args,
    wall_stats,
)
from ssb.chat import ChatFormat, fold_system_into_user, messages
from ssb.config import SSBConfig
from ssb.data import load_problems
from ssb.grading import correctness_reward, extract_boxed_answer
from ssb.lora import peft_lora_config
from ssb.prompts import load_prompts
from ssb.runfolder.folder import RunFolder, invocation_stats, model_provenance

_log = logging.getLogger(__name__)


def format_reward(completions: list, **kwargs) -> list[float]:
    """TRL reward function: 1.0 when a completion contains a (closed) boxed answer."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [1.0 if extract_boxed_answer(text) is not None else 0.0 for text in texts]


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
    g = config.grpo
    if g.sampler == "engine" and g.use_vllm:
        raise ValueError("grpo.sampler: engine and grpo.use_vllm exclude each other (vLLM is TRL's own sampler)")
    sampler = sampler_choice(config, "grpo.sampler", g.sampler, trl_forced=g.use_vllm)
    if sampler == "trl":
        if g.policy_lag:
            raise ValueError("grpo.policy_lag: only the engine sampler samples from older weights; TRL's generation uses the current ones")
        sampler = "trl-vllm" if g.use_vllm else "trl"
    check_importance_sampling(config, sampler)
    return sampler


def check_importance_sampling(config: SSBConfig, sampler: str) -> None:
    """Refuse an importance-sampling setting that would correct wrongly, or that nothing would apply."""
    g = config.grpo
    mode = g.importance_sampling
    chosen = mode not in ("auto", "off")  # one of TRL's modes, named
    if chosen and sampler == "trl":
        raise ValueError("grpo.importance_sampling: TRL's transformers generation samples the current weights exactly; there is "
                         "nothing to correct (it corrects the engine sampler or vLLM)")
    if chosen and sampler == "engine":
        if g.temperature != 1 or g.top_k != 0 or g.top_p != 1:
            raise ValueError(f"grpo.importance_sampling: the engine reports the temperature-1 log-probabilities of its tokens, the "
                             f"distribution it samples only with grpo.temperature 1, grpo.top_k 0 and grpo.top_p 1 (got {g.temperature}, "
                             f"{g.top_k}, {g.top_p})")
        if config.distill.lora.dropout > 0:
            raise ValueError(f"grpo.importance_sampling: with distill.lora.dropout {config.distill.lora.dropout} the trainer's "
                             "log-probabilities of the samples carry dropout's noise and the engine's do not, so the ratio would be "
                             "biased; set the dropout to 0")
    corrected = chosen or (mode == "auto" and sampler == "trl-vllm")
    if not corrected and g.importance_sampling_clip != type(g).importance_sampling_clip:  # the field's default
        raise ValueError(f"grpo.importance_sampling_clip: set to {g.importance_sampling_clip}, but no correction runs "
                         f"(grpo.importance_sampling {mode} with the {sampler} sampler)")
    if sampler == "engine" and g.policy_lag and not corrected:  # allowed (a lag's effect is worth measuring), but said
        _log.warning("grpo.policy_lag %d with no importance-sampling correction (grpo.importance_sampling %s): the loss treats "
                     "completions of the weights %d steps back as the current policy's", g.policy_lag, mode, g.policy_lag)


def importance_sampling_args(g) -> dict:
    """TRL's importance-sampling arguments for ``grpo.importance_sampling`` (``auto``: TRL's own mode with vLLM)."""
    if g.importance_sampling == "auto":
        return {"vllm_importance_sampling_clip_max": g.importance_sampling_clip} if g.use_vllm else {"vllm_importance_sampling_correction": False}
    if g.importance_sampling == "off":
        return {"vllm_importance_sampling_correction": False}
    return {"vllm_importance_sampling_correction": True, "vllm_importance_sampling_mode": g.importance_sampling,
            "vllm_importance_sampling_clip_max": g.importance_sampling_clip}


def run_grpo(config: SSBConfig, force: bool = False, reward_funcs: list | None = None) -> dict:
    """Train a LoRA adapter with GRPO; ``reward_funcs`` replaces the grader-based rewards (tests)."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from ssb.models import load_model, load_tokenizer

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
    if reward_funcs is None:
        timeout = config.grading.timeout_s
        reward_funcs = [lambda completions, gold, **kw: correctness_reward(completions, gold, timeout)]
        reward_funcs[0].__name__ = "correct"
        if g.format_reward > 0:
            reward_funcs.append(format_reward)
    weights = [1.0] + ([g.format_reward] if len(reward_funcs) > 1 else [])
    args = trainer_args(GRPOConfig, config, g, str(out / "checkpoints"), config.seed, steps_per_generation=g.steps_per_generation,
                        beta=g.beta, reward_weights=weights, use_vllm=g.use_vllm, **importance_sampling_args(g))
    peft_config = peft_lora_config(config)  # the one LoRA set-up of every arm
    torch.manual_seed(config.seed)
    lagged_weights_damage = None
    if sampler == "engine":
        from ssb.arms.engine_rollouts import sampler_checkpoint_damage

        lagged_weights_damage = functools.partial(sampler_checkpoint_damage, lag=g.policy_lag)
    checkpoint = last_complete_checkpoint(out / "checkpoints", lagged_weights_damage)
    clock = WallClockBudget(g.max_wall_s, out / "wall_s.json", resume_from=checkpoint)
    per_step = g.batch_size * g.gradient_accumulation_steps
    tokens = None if g.max_generated_tokens is None else GenerationBudget(g.max_generated_tokens, per_step)
    callbacks = [c for c in (clock, tokens) if c is not None]
    sampling = None
    if sampler == "engine":
        sampling, lagged_weights = engine_sampling(config, chat, peft_config, checkpoint)
        callbacks.append(lagged_weights)
    trainer = epoch_seeded(GRPOTrainer)(model=load_model(config.model), reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks, rollout_func=sampling)
    if sampler == "engine" and args.vllm_importance_sampling_correction:
        correct_with_engine_logprobs(trainer)
    start = time.monotonic()
    history = train_and_save(trainer, checkpoint, sampling, out)
    stats = {"steps": trainer.state.global_step, "questions": len(dataset), "this_invocation": invocation_stats(time.monotonic() - start),
             "generated_completions": trainer.state.global_step * per_step,
             "generated_tokens": generated_tokens(history, per_step),
             "sampler": sampler,
             "last_reward": next((e["reward"] for e in reversed(history) if "reward" in e), None),
             **wall_stats(clock),
             "stopped_by_generation_budget": tokens is not None and generated_tokens(history, per_step) >= g.max_generated_tokens}
    stage.finish({**model_provenance(config, tokenizer), "adapter": str(out / "adapter")}, stats)
    return stats


def engine_sampling(config: SSBConfig, chat: ChatFormat, peft_config, checkpoint: str | None):
    """The engine's ``rollout_func`` for the trainer, with the lagged weights a checkpoint saved pushed back, and the
    callback that pushes each step's weights where the sampler lags and saves them into later checkpoints."""
    from ssb.arms.engine_rollouts import LaggedWeights, restore, trainer_sampling

    sampling = trainer_sampling(config, config.grpo, chat, peft_config, config.seed, "grpo", config.grpo.policy_lag)
    restored = restore(sampling.sampler, checkpoint)
    if restored:
        _log.info("grpo: the sampler resumes with the weights of steps %s from %s", restored, checkpoint)
    return sampling, LaggedWeights(sampling.sampler)
