"""``ssb onpolicy``: on-policy self-distillation with privileged context, through TRL's SDFT trainer (its SDPO trainer
for ``onpolicy.context: successful-rollout``), under SSB's conditions.

The student samples a completion of the bare question; the teacher, by default the same frozen base
model (``onpolicy.teacher: base``: the PEFT model with its adapter disabled, as SSB's teacher), reads
the same completion after a prompt that adds privileged context (``ssb.arms.privileged_context``: the gold
solution, SSB's hint pair, SSB's refinement, the gold answer) and the instruction to derive rather than
copy (``prompts/onpolicy_teacher.txt``); the student's LoRA is trained to match the teacher's
next-token distributions on the student's own tokens (OPSD, SDFT). Same base model, LoRA shape
(``distill.lora``), chat template, system prompt and data as every other arm. Output:
``onpolicy/adapter`` (PEFT, evaluated as ``onpolicy``), ``onpolicy/metrics.jsonl`` (TRL's log history)
and TRL checkpoints, from the newest complete one of which an interrupted run resumes.

TRL runs the method (``trl.experimental.sdft``: sampling, teacher prompt, divergences, importance-sampling
clip, checkpoints). SDPO (``trl.experimental.sdpo``, context ``successful-rollout``) is the same with the teacher's
context mined from the student's own group: a sibling completion that ssb's grader finds correct
(``ssb.grading.correctness_reward``, GRPO's reward), shown in the same teacher prompt file; a completion without one is
not distilled, and a correct completion is never its own demonstration. What ssb adds is what TRL cannot express
(through TRL's private hooks, all of them in ``ssb.arms.trl``):
- the prompts are tokenized by ssb's one ``ChatFormat`` (``_tokenize_prompts``), so the student's and the
  teacher's prompts are rendered as every other stage renders them (system folding, template override,
  end-of-turn and generation prompt), and are never truncated (TRL cuts long prompts from the left, which
  would cut the question off the teacher's prompt);
- the student samples through ssb's OpenVINO engine serving the trainer's current LoRA where the backend
  is openvino (``_generate``, over ``ssb.arms.engine_rollouts.TrainerSampling``: one weight push per optimiser
  step, one request per question's group, seeds per step so a resumed run redraws the same samples), as
  GRPO's rollouts do; SDFT has no ``rollout_func``;
- generation stops on every stop token of ssb's chat format (the model's generation config gets them);
- each epoch's question order is drawn from (seed, epoch), so a run resumed in a later epoch trains it in the order an
  uninterrupted run does (TRL's sampler carries one generator over the epochs, which a resume rebuilds);
- TRL's CPU-hostile defaults are overridden: bf16 only on a GPU, gradient checkpointing off by default.

The defaults (``onpolicy`` in ``ssb.config``) are TRL's, OPSD's or SSB's; ``OnPolicyConfig`` gives what the pilot on
this task found of them.
"""

from __future__ import annotations

import logging
import time

from ssb.arms.privileged_context import training_rows
from ssb.arms.trl import (
    WallClockBudget,
    last_complete_checkpoint,
    sampler_choice,
    sampler_inputs,
    self_distillation_classes,
    self_distillation_trainer,
    train_and_save,
    trainer_args,
    wall_stats,
)
from ssb.config import SSBConfig
from ssb.grading import correctness_reward
from ssb.lora import peft_lora_config
from ssb.prompts import IDENTITY_TEACHER_TEMPLATE, teacher_template
from ssb.runfolder.artifacts import fingerprint, text_sha256
from ssb.runfolder.folder import RunFolder, invocation_stats, model_provenance

_log = logging.getLogger(__name__)

MODES = {"topk": "topk_logits", "full": "full_logits", "sampled-token": "sampled_token"}  # onpolicy.distillation -> TRL's


def sampler_name(config: SSBConfig) -> str:
    """What samples the student under ``config``: ``engine`` (ssb's OpenVINO engine) or ``trl`` (transformers)."""
    return sampler_choice(config, "onpolicy.sampler", config.onpolicy.sampler)


SDPO = "successful-rollout"  # the context TRL's SDPO trainer builds from the student's own group
SOLUTION_TEMPLATE = "A correct solution:\n{successful_previous_attempt}"  # SDPO's demonstration, worded as hint-pair's


def teacher_prompt(config: SSBConfig) -> str:
    """The teacher's prompt as TRL fills it: the identity for context none; else the teacher prompt file, as SDFT's
    ``teacher_prompt_template`` or, for SDPO, as its ``reprompt_template`` (the demonstration where the file says
    ``{privileged_context}``; SDPO's environment feedback is off, so ``{feedback}`` is always empty)."""
    if config.onpolicy.context == "none":
        return IDENTITY_TEACHER_TEMPLATE
    template = teacher_template(config.prompts.onpolicy_teacher)
    return template.replace("{privileged_context}", "{solution}{feedback}") if config.onpolicy.context == SDPO else template


def ssb_trainer(base: type, chat, sampling=None, golds: dict | None = None) -> type:
    """``base`` (TRL's ``SDFTTrainer`` or ``SDPOTrainer``) with prompts tokenized by ssb's chat format, an epoch's order drawn from its
    number and, given ``sampling`` (a ``TrainerSampling``), the student's completions sampled by ssb's engine. Given
    ``golds`` (``prompt_golds``), each step also logs ``student/correct``, the share of its completions whose last boxed
    answer is the question's: what GRPO's reward would be, watched here and never trained on."""

    def sample(prompt_ids: list[list[int]], trainer) -> tuple[list[list[int]], list[list[int]]]:
        rows = sampling.sample(prompt_ids, trainer)  # TRL repeats each prompt num_generations times in a row
        return [ids for ids, _ in rows], [drawn.token_ids for _, drawn in rows]

    def watch(prompts: list[list[int]], completions: list[list[int]]) -> dict[str, float]:
        share = student_correct(chat, golds, prompts, completions)
        return {} if share is None else {"student/correct": share}

    return self_distillation_trainer(base, chat.prompt_ids, sample if sampling is not None else None, watch if golds else None)


def prompt_golds(config: SSBConfig, chat, rows: list[dict]) -> dict[tuple[int, ...], str]:
    """Each training row's student prompt ids (as ``_tokenize_prompts`` renders them) -> its question's gold answer."""
    from ssb.data import load_problems

    gold = {p.id: p.gold for p in load_problems(config.data).problems}
    return {tuple(chat.prompt_ids(row["prompt"])): gold[row["id"]] for row in rows if row["id"] in gold}


def student_correct(chat, golds: dict[tuple[int, ...], str], prompts: list[list[int]], completions: list[list[int]]) -> float | None:
    """The share of ``completions`` whose last boxed answer is the gold answer of their prompt (``ssb.grading``, as
    every evaluation grades); None when no prompt has a known gold."""
    from ssb.grading import is_correct

    graded = [is_correct(chat.tokenizer.decode(completion, skip_special_tokens=True), golds[tuple(prompt)])
              for prompt, completion in zip(prompts, completions) if tuple(prompt) in golds]
    return sum(graded) / len(graded) if graded else None


def training_seed(config: SSBConfig) -> int:
    """``onpolicy.seed``, or the run's seed when unset."""
    return config.onpolicy.seed if config.onpolicy.seed is not None else config.seed


def distillation_args(config: SSBConfig, config_class: type, output_dir: str, template: str):
    """``config.onpolicy`` as TRL's ``SDFTConfig``, or its ``SDPOConfig`` for context successful-rollout (``config_class``)."""
    o = config.onpolicy
    own = dict(num_iterations=o.num_iterations, max_prompt_length=None, distillation_alpha=o.alpha, distillation_mode=MODES[o.distillation],
               distillation_add_tail=o.tail, distillation_is_clip=o.is_clip, teacher_model_kind=o.teacher, teacher_update_rate=o.ema_rate,
               use_vllm=False)
    if o.context != SDPO:
        return trainer_args(config_class, config, o, output_dir, training_seed(config), **own, distillation_topk=o.top_k_tokens,
                            teacher_prompt_template=template)
    # Pure self-distillation (no policy-gradient term), a correct sibling as the only context, never a completion as its
    # own demonstration; the teacher's prompt is never cut (ssb renders it whole, as every other prompt).
    return trainer_args(config_class, config, o, output_dir, training_seed(config), **own,
                        distillation_topk=o.top_k_tokens if o.distillation == "topk" else None, distillation_weight=1.0,
                        use_successful_as_teacher=True, success_reward_threshold=1.0, dont_reprompt_on_self_success=True,
                        include_environment_feedback=False, reprompt_template=template, solution_template=SOLUTION_TEMPLATE,
                        max_reprompt_len=2**31 - 1)


def run_onpolicy(config: SSBConfig, force: bool = False) -> dict:
    """Train a LoRA adapter by on-policy self-distillation with ``config.onpolicy.context`` as the teacher's context."""
    import torch

    from ssb.models import load_chat_format, load_model

    o = config.onpolicy
    trainer_class, config_class = self_distillation_classes("sdpo" if o.context == SDPO else "sdft")
    folder = RunFolder(config.run_dir)
    chat = load_chat_format(config.model)
    rows = training_rows(config, chat, folder)  # bad input (or a missing upstream stage) fails before the stage starts
    template = teacher_prompt(config)
    sampler = sampler_name(config)
    stage = folder.stage("onpolicy", config, training_rows_sha256=fingerprint(rows), teacher_prompt_sha256=text_sha256(template),
                         sampler=sampler_inputs(config, sampler))
    if not stage.begin(force):
        return stage.stats()
    from datasets import Dataset

    out = folder.file("onpolicy")
    args = distillation_args(config, config_class, str(out / "checkpoints"), template)
    peft_config = peft_lora_config(config)  # the one LoRA set-up of every arm
    torch.manual_seed(training_seed(config))
    checkpoint = last_complete_checkpoint(out / "checkpoints")
    if checkpoint is not None and o.teacher == "ema":
        _log.warning("onpolicy: TRL does not checkpoint the ema teacher; resuming from %s, it restarts from the base model", checkpoint)
    clock = WallClockBudget(o.max_wall_s, out / "wall_s.json", resume_from=checkpoint)
    sampling = engine_sampling(config, chat, peft_config) if sampler == "engine" else None
    model = load_model(config.model)
    model.generation_config.eos_token_id = list(chat.stop_ids)  # TRL's generation stops (and masks) on these
    def success(completions: list, gold: list[str], **kwargs) -> list[float]:  # SDPO's reward: GRPO's, a correct sibling scoring 1
        return correctness_reward(completions, gold, config.grading.timeout_s)

    sdpo_only = {"reward_funcs": [success]} if o.context == SDPO else {}
    trainer = ssb_trainer(trainer_class, chat, sampling, prompt_golds(config, chat, rows))(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=chat.tokenizer, peft_config=peft_config,
        callbacks=[clock], **sdpo_only)
    start = time.monotonic()
    history = train_and_save(trainer, checkpoint, sampling, out)
    stage.finish({**model_provenance(config, chat.tokenizer), "adapter": str(out / "adapter")},
                 {**onpolicy_stats(history, trainer.state.global_step, len(rows), config, sampler, time.monotonic() - start),
                  **wall_stats(clock)})
    return folder.stats()["onpolicy"]


def onpolicy_stats(history: list[dict], steps: int, questions: int, config: SSBConfig, sampler: str, wall_s: float) -> dict:
    """The stage's stats from TRL's log history (one entry per optimiser step): its compute (generated completions and
    tokens, optimiser steps, wall-clock) for ``ssb report``, and its first and last distillation loss."""
    o = config.onpolicy
    per_generation = o.batch_size * o.gradient_accumulation_steps  # completions per generated batch
    # TRL logs a step's mean completion length when it generated (every num_iterations steps), over the batch.
    generated = [e["completions/mean_length"] for e in history if "completions/mean_length" in e]
    losses = [e["self_distillation/distillation_loss"] for e in history if "self_distillation/distillation_loss" in e]
    return {"steps": steps, "questions": questions, "context": o.context, "sampler": sampler,
            "this_invocation": invocation_stats(wall_s),
            "generated_completions": len(generated) * per_generation,
            "generated_tokens": round(sum(generated) * per_generation),
            "first_distillation_loss": losses[0] if losses else None, "last_distillation_loss": losses[-1] if losses else None}


def engine_sampling(config: SSBConfig, chat, peft_config):
    """ssb's engine sampling the trainer's current LoRA (no lag: each optimiser step samples its own weights)."""
    from ssb.arms.engine_rollouts import trainer_sampling

    return trainer_sampling(config, config.onpolicy, chat, peft_config, training_seed(config), "onpolicy")
