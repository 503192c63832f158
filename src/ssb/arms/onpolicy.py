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
context mined from the student's own group: a sibling completion that ssb's grader finds correct (GRPO's
``correctness_reward``),
shown in the same teacher prompt file; a completion without one is not distilled, and a correct completion is never its
own demonstration. What ssb adds is what TRL cannot express:
- the prompts are tokenized by ssb's one ``ChatFormat`` (``_tokenize_prompts``), so the student's and the
  teacher's prompts are rendered as every other stage renders them (system folding, template override,
  end-of-turn and generation prompt), and are never truncated (TRL cuts long prompts from the left, which
  would cut the question off the teacher's prompt);
- the student samples through ssb's OpenVINO engine serving the trainer's current LoRA where the backend
  is openvino (``_generate``, over ``ssb.arms.engine_rollouts.EngineRollouts``: one weight push per optimiser
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

import importlib.util
import logging
import os
import time

from ssb.arms.privileged_context import training_rows
from ssb.config import SSBConfig
from ssb.lora import peft_lora_config
from ssb.prompts import IDENTITY_TEACHER_TEMPLATE, teacher_template
from ssb.runfolder.artifacts import fingerprint, text_sha256
from ssb.runfolder.folder import RunFolder, invocation_stats, model_provenance

_log = logging.getLogger(__name__)

MODES = {"topk": "topk_logits", "full": "full_logits", "sampled-token": "sampled_token"}  # onpolicy.distillation -> TRL's


def sampler_name(config: SSBConfig) -> str:
    """What samples the student under ``config``: ``engine`` (ssb's OpenVINO engine) or ``trl`` (transformers)."""
    from ssb.generation import backend_name

    choice = config.onpolicy.sampler
    if choice == "trl" or (choice == "auto" and backend_name(config) != "openvino"):
        return "trl"
    if importlib.util.find_spec("openvino_genai") is None:
        raise ValueError("onpolicy.sampler: engine needs openvino-genai (pip install -c constraints-cpu.txt -e '.[openvino]')")
    return "engine"


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


def ssb_trainer(base: type, chat, rollouts=None, golds: dict | None = None) -> type:
    """``base`` (TRL's ``SDFTTrainer`` or ``SDPOTrainer``) with prompts tokenized by ssb's chat format, an epoch's order drawn from its
    number and, given ``rollouts`` (an ``EngineRollouts``), the student's completions sampled by ssb's engine. Given
    ``golds`` (``prompt_golds``), each step also logs ``student/correct``, the share of its completions whose last boxed
    answer is the question's: what GRPO's reward would be, watched here and never trained on."""

    from ssb.arms.epoch_order import epoch_seeded

    class SSBSelfDistillationTrainer(epoch_seeded(base)):
        def _tokenize_prompts(self, prompts: list) -> list[list[int]]:
            return [chat.prompt_ids(conversation) for conversation in prompts]

        def _tokenize_prompts_untruncated(self, prompts: list) -> list[list[int]]:  # SDPO's teacher prompts
            return self._tokenize_prompts(prompts)

        def _generate(self, prompt_ids: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
            if rollouts is None:
                prompts, completions = super()._generate(prompt_ids)
            else:
                rows = rollouts.sample(prompt_ids, self)  # TRL repeats each prompt num_generations times in a row
                prompts, completions = [ids for ids, _ in rows], [sample.token_ids for _, sample in rows]
            if golds:
                share = student_correct(chat, golds, prompts, completions)
                if share is not None:
                    self._metrics["train"]["student/correct"].append(share)
            return prompts, completions

    return SSBSelfDistillationTrainer


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


def trainer_args(config: SSBConfig, output_dir: str, template: str, on_gpu: bool):
    """``config.onpolicy`` as TRL's ``SDFTConfig``, or its ``SDPOConfig`` for context successful-rollout."""
    o = config.onpolicy
    common = dict(
        output_dir=output_dir, seed=training_seed(config), use_cpu=not on_gpu, bf16=on_gpu and config.model.dtype in ("auto", "bfloat16"),
        gradient_checkpointing=o.gradient_checkpointing, learning_rate=o.lr, num_train_epochs=o.epochs,
        max_steps=o.max_steps if o.max_steps is not None else -1, per_device_train_batch_size=o.batch_size,
        gradient_accumulation_steps=o.gradient_accumulation_steps, num_generations=o.num_generations, num_iterations=o.num_iterations,
        max_prompt_length=None, max_completion_length=o.max_completion_length, temperature=o.temperature, top_k=o.top_k, top_p=o.top_p,
        distillation_alpha=o.alpha, distillation_mode=MODES[o.distillation], distillation_add_tail=o.tail, distillation_is_clip=o.is_clip,
        teacher_model_kind=o.teacher, teacher_update_rate=o.ema_rate, max_grad_norm=o.max_grad_norm, warmup_steps=o.warmup_steps,
        logging_steps=1, save_steps=o.save_every, save_total_limit=2, report_to=[], use_vllm=False, disable_tqdm=not config.progress,
    )
    if o.context != SDPO:
        from trl.experimental.sdft import SDFTConfig

        return SDFTConfig(**common, distillation_topk=o.top_k_tokens, teacher_prompt_template=template)
    from trl.experimental.sdpo import SDPOConfig

    # Pure self-distillation (no policy-gradient term), a correct sibling as the only context, never a completion as its
    # own demonstration; the teacher's prompt is never cut (ssb renders it whole, as every other prompt).
    return SDPOConfig(**common, distillation_topk=o.top_k_tokens if o.distillation == "topk" else None, distillation_weight=1.0,
                      use_successful_as_teacher=True, success_reward_threshold=1.0, dont_reprompt_on_self_success=True,
                      include_environment_feedback=False, reprompt_template=template, solution_template=SOLUTION_TEMPLATE,
                      max_reprompt_len=2**31 - 1)


def run_onpolicy(config: SSBConfig, force: bool = False) -> dict:
    """Train a LoRA adapter by on-policy self-distillation with ``config.onpolicy.context`` as the teacher's context."""
    import torch

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental: ssb pins TRL's version
    import trl.experimental.sdft as sdft
    import trl.experimental.sdpo as sdpo

    from ssb.arms.grpo import correctness_reward
    from ssb.arms.trl import WallClockBudget, last_complete_checkpoint, sampler_inputs, train_and_save, wall_stats
    from ssb.models import load_chat_format, load_model, resolve_device

    o = config.onpolicy
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
    on_gpu = resolve_device(config.model).type == "cuda"
    args = trainer_args(config, str(out / "checkpoints"), template, on_gpu)
    peft_config = peft_lora_config(config)  # the one LoRA set-up of every arm
    torch.manual_seed(training_seed(config))
    checkpoint = last_complete_checkpoint(out / "checkpoints")
    if checkpoint is not None and o.teacher == "ema":
        _log.warning("onpolicy: TRL does not checkpoint the ema teacher; resuming from %s, it restarts from the base model", checkpoint)
    clock = WallClockBudget(o.max_wall_s, out / "wall_s.json", resume_from=checkpoint)
    rollouts = engine_rollouts(config, chat, peft_config) if sampler == "engine" else None
    model = load_model(config.model)
    model.generation_config.eos_token_id = list(chat.stop_ids)  # TRL's generation stops (and masks) on these
    def success(completions: list, gold: list[str], **kwargs) -> list[float]:  # SDPO's reward: GRPO's, a correct sibling scoring 1
        return correctness_reward(completions, gold, config.grading.timeout_s)

    sdpo_only = {"reward_funcs": [success]} if o.context == SDPO else {}
    trainer = ssb_trainer(sdpo.SDPOTrainer if o.context == SDPO else sdft.SDFTTrainer, chat, rollouts, prompt_golds(config, chat, rows))(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=chat.tokenizer, peft_config=peft_config,
        callbacks=[clock], **sdpo_only)
    start = time.monotonic()
    history = train_and_save(trainer, checkpoint, rollouts, out)
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


def engine_rollouts(config: SSBConfig, chat, peft_config):
    """ssb's engine sampling the trainer's current LoRA (no lag: each optimiser step samples its own weights)."""
    from ssb.arms.engine_rollouts import EngineRollouts
    from ssb.generation import SamplingParams
    from ssb.generation.policy_sampler import PolicySampler, lora_scaling

    o = config.onpolicy
    sampler = PolicySampler.from_config(config, chat, lora_scaling(peft_config), lag=0)
    params = SamplingParams(n=o.num_generations, temperature=o.temperature, top_p=o.top_p, top_k=o.top_k,
                            max_new_tokens=o.max_completion_length)
    return EngineRollouts(sampler, chat, params, training_seed(config), seed_key="onpolicy")
