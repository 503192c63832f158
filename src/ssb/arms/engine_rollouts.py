"""A TRL trainer's completions sampled by ssb's CPU engine (``TrainerSampling``): GRPO's ``rollout_func``, and the
on-policy arm's student generation (``ssb.arms.onpolicy``).

TRL's ``GRPOTrainer`` calls ``rollout_func(prompts, trainer)`` where it would otherwise generate with
transformers (on a CPU, a static batch at a time); the on-policy arm's trainer calls ``sample`` over prompts
it has tokenized. Each prompt is rendered with ssb's one ``ChatFormat`` (the template and stop tokens of
every other stage), the trainer's LoRA is pushed to the ``PolicySampler`` once per optimiser step
(``LaggedWeights`` pushes every step's where the sampler lags), and each group's ``num_generations``
completions are sampled as one engine request. The trainer's prompts arrive repeated ``num_generations``
times in a row; a block of equal prompts is one request with that many samples.

The completions come from the weights of ``grpo.policy_lag`` optimiser steps back (0: the current
ones; the on-policy arm never lags); the lag is recorded per step (``sampler/lag`` in the arm's
``metrics.jsonl``). The rollouts carry the engine's log-probabilities, of the temperature-1 distribution:
where the engine samples that distribution (temperature 1, no top-k or top-p), ``grpo.importance_sampling``
has TRL's own importance-sampling code correct both the lag and the int8 engine's numerics against the
trainer's (``ssb.arms.trl.correct_with_engine_logprobs``); otherwise they go uncorrected, and
``benchmarks/grpo_sampling.py`` measures the engine-trainer gap.

Seeds: the call ``c`` of optimiser step ``s`` samples with ``derive_seed(seed, seed_key, s, c)`` (``grpo`` or
``onpolicy``), so a run resumed from a checkpoint redraws the completions an uninterrupted one drew, for the same weights.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from ssb.arms.trl import record_metrics, use_experimental_api
from ssb.chat import ChatFormat
from ssb.generation.base import SamplingParams, derive_seed
from ssb.generation.policy_sampler import PolicySampler, Sample, lora_state
from ssb.runfolder.file_modes import follow_umask

SAMPLER_FOLDER = "ssb_sampler"  # inside a TRL checkpoint: the lagged weights a resume samples from


class TrainerSampling:
    """A TRL trainer's completions from ``sampler`` with the trainer's own weights: called, GRPO's ``rollout_func``;
    ``sample``, the same over prompts already tokenized (the on-policy arm's generation). ``seed_key`` keeps the two
    arms' draws apart."""

    def __init__(self, sampler: PolicySampler, chat: ChatFormat, params: SamplingParams, seed: int, seed_key: str = "grpo"):
        self.sampler, self.chat, self.params, self.seed, self.seed_key = sampler, chat, params, seed, seed_key
        self._step, self._calls = None, 0

    def __call__(self, prompts: list, trainer) -> dict:
        rows = self.sample([self.chat.prompt_ids(conversation) for conversation in prompts], trainer)
        return {"prompt_ids": [ids for ids, _ in rows], "completion_ids": [sample.token_ids for _, sample in rows],
                "logprobs": [sample.logprobs for _, sample in rows]}

    def sample(self, prompt_ids: list[list[int]], trainer) -> list[tuple[list[int], Sample]]:
        """(prompt ids, sample) per prompt, in order: a block of ``trainer.num_generations`` equal prompts in a row is
        one engine request with that many samples. The trainer's LoRA is pushed on the first call of each optimiser step."""
        step = trainer.state.global_step
        if step != self._step:
            self._step, self._calls = step, 0
        if step not in self.sampler.states:
            self.sampler.push(step, lora_state(trainer.accelerator.unwrap_model(trainer.model)))
        record_metrics(trainer, {"sampler/push_s": self.sampler.pushes_s})
        self.sampler.pushes_s.clear()
        blocks = _blocks(prompt_ids, trainer.num_generations)
        params = SamplingParams(n=trainer.num_generations if blocks else 1, temperature=self.params.temperature, top_p=self.params.top_p,
                                top_k=self.params.top_k, max_new_tokens=self.params.max_new_tokens,
                                seed=derive_seed(self.seed, self.seed_key, step, self._calls))
        self._calls += 1
        unique = prompt_ids[:: trainer.num_generations] if blocks else prompt_ids
        start = time.monotonic()
        samples, sampled = self.sampler.generate(unique, params, step)
        seconds = time.monotonic() - start
        rows = [(ids, sample) for ids, group in zip(unique, samples) for sample in group]
        tokens = sum(len(sample.token_ids) for _, sample in rows)
        # The mean negative log-probability of the sampled tokens: sampling at temperature 1 without top-k / top-p, an
        # unbiased estimate of the policy's per-token entropy over the states it visits (else a cross-entropy).
        logprobs = [lp for _, sample in rows for lp in sample.logprobs]
        record_metrics(trainer, {"sampler/lag": [step - sampled], "sampler/generate_s": [seconds],
                                 "sampler/tokens_per_s": [tokens / seconds if seconds > 0 else 0.0],
                                 **({"sampler/token_nll": [-sum(logprobs) / len(logprobs)]} if logprobs else {})})
        return rows


def trainer_sampling(config, section, chat: ChatFormat, peft_config, seed: int, seed_key: str, lag: int = 0) -> TrainerSampling:
    """ssb's engine sampling a trainer's completions from its LoRA ``lag`` optimiser steps back, with ``section``'s
    sampling settings (``config.grpo`` or ``config.onpolicy``, whose fields are named alike). GRPO's and the on-policy arm's."""
    from ssb.generation.policy_sampler import lora_scaling

    use_experimental_api()  # GRPO hands it to TRL as a rollout_func, an experimental API
    sampler = PolicySampler.from_config(config, chat, lora_scaling(peft_config), lag)
    params = SamplingParams(n=section.num_generations, temperature=section.temperature, top_p=section.top_p, top_k=section.top_k,
                            max_new_tokens=section.max_completion_length)
    return TrainerSampling(sampler, chat, params, seed, seed_key)


def _blocks(prompts: list, size: int) -> bool:
    """Whether ``prompts`` is blocks of ``size`` equal prompts in a row (TRL's repeat sampler's order)."""
    return size > 1 and len(prompts) % size == 0 and all(
        prompts[i] == prompts[j] for i in range(0, len(prompts), size) for j in range(i + 1, i + size))


class LaggedWeights(TrainerCallback):
    """Where the sampler lags, keeps the older weights it samples from: pushes each optimiser step's weights as the step
    ends (completions generated every few steps would otherwise leave no weights exactly ``lag`` steps back), and saves
    the pushed weights into each TRL checkpoint, so a resumed run samples from the same older weights an uninterrupted
    one would (``restore`` reads them back; ``sampler_checkpoint_damage`` refuses a checkpoint whose save was cut
    short before them)."""

    def __init__(self, sampler: PolicySampler):
        self.sampler = sampler

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.sampler.lag and model is not None:
            self.sampler.push(state.global_step, lora_state(model))
        return control

    def on_save(self, args, state, control, **kwargs):
        from safetensors.torch import save_file

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}" / SAMPLER_FOLDER
        if self.sampler.lag == 0 or not folder.parent.is_dir():
            return control  # with no lag the next step samples the checkpoint's own weights
        folder.mkdir(exist_ok=True)
        for step, lora in sorted(self.sampler.states.items()):  # the checkpoint's own step last
            partial = folder / f".step-{step}.partial"
            save_file(lora, str(partial))
            follow_umask(partial)
            partial.replace(folder / f"step-{step}.safetensors")  # a kill mid-write leaves no half file under the name
        return control


def sampler_checkpoint_damage(checkpoint: Path, lag: int) -> str | None:
    """Why a TRL checkpoint does not hold the weights a resume with ``lag`` samples from (None when it does): the trainer
    writes its checkpoint before ``LaggedWeights.on_save`` runs, which writes the checkpoint's own step last, and each
    of them must load (``restore`` reads them all)."""
    from ssb.checkpoints import safetensors_damage

    if lag == 0:
        return None
    step = checkpoint.name.split("-", 1)[1]
    if not (checkpoint / SAMPLER_FOLDER / f"step-{step}.safetensors").is_file():
        return "interrupted while the sampler's weights were saved into it"
    return next((why for path in sorted((checkpoint / SAMPLER_FOLDER).glob("step-*.safetensors")) if (why := safetensors_damage(path))), None)


def restore(sampler: PolicySampler, checkpoint: str | None) -> list[int]:
    """Push the weights a checkpoint saved for the sampler (oldest first); returns their steps."""
    from safetensors.torch import load_file

    if checkpoint is None or not (Path(checkpoint) / SAMPLER_FOLDER).is_dir():
        return []
    files = sorted((Path(checkpoint) / SAMPLER_FOLDER).glob("step-*.safetensors"), key=lambda p: int(p.stem.split("-", 1)[1]))
    for path in files:
        sampler.push(int(path.stem.split("-", 1)[1]), load_file(str(path)))
    return [int(p.stem.split("-", 1)[1]) for p in files]
