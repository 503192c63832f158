"""What ssb's arms trained by TRL's trainers share (GRPO, ``ssb.arms.grpo``; on-policy, ``ssb.arms.onpolicy``), and the one
seam to TRL's internals.

Shared: budgets in wall-clock and generated tokens that carry over resumes, the newest complete checkpoint to resume
from, the sampler's choice and recorded settings, the trainer arguments both arms set alike, and the one train-save-log
sequence.

The seam: every member of TRL (or of transformers' ``Trainer``) outside its documented API that ssb touches is touched
here and nowhere else: a step's logged metrics (``_metrics``, ``record_metrics``), the training sampler
(``_get_train_sampler`` and ``trl.trainer.utils.RepeatSampler``, ``epoch_seeded``), the self-distillation trainers'
prompt and generation hooks (``_tokenize_prompts``, ``_tokenize_prompts_untruncated``, ``_generate``,
``self_distillation_trainer``), GRPO's importance-sampling gate (``use_vllm``, ``vllm_generation`` and
``_last_loaded_step`` set on a built trainer, ``correct_with_engine_logprobs``), TRL's experimental APIs
(``trl.experimental.sdft`` and ``sdpo``, ``rollout_func``: ``self_distillation_classes``, ``use_experimental_api``), and
what transformers' ``Trainer`` writes into a checkpoint and how it loads the RNG state (``trainer_pt_utils.safe_globals``:
``CHECKPOINT_FILES``, ``checkpoint_damage``).
It was written against ``TESTED_TRL``; the first use of it under another TRL logs a warning that names both versions
(``check_trl_version``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from ssb.lora import canonical_adapter_config
from ssb.runfolder.artifacts import write_json_atomic, write_jsonl_atomic
from ssb.runfolder.file_modes import follow_umask

_log = logging.getLogger(__name__)

TESTED_TRL = "1.16.0"  # constraints-cpu.txt's pin; tests/test_trl_seam.py keeps the two equal


@functools.cache
def check_trl_version() -> None:
    """Warn, once per process, when the installed TRL is not ``TESTED_TRL``. A warning, not a refusal: a newer TRL may
    well work, but a private member that moved fails here or, worse, silently changes what trains."""
    import trl

    if trl.__version__ != TESTED_TRL:
        _log.warning("TRL %s is installed, but ssb's arms are tested with TRL %s and reach into its internals (ssb.arms.trl), "
                     "which may have moved; pip install -c constraints-cpu.txt -e '.[test]' installs the tested one",
                     trl.__version__, TESTED_TRL)


class WallClockBudget(TrainerCallback):
    """TRL callback: the training wall-clock spent over every invocation, and a stop once it reaches the budget (if any).

    A resumed run continues the count from the checkpoint it resumes from: every checkpoint saves
    the time spent up to its step (``BUDGET_FILE`` inside it). Steps taken after the last checkpoint
    are redone on resume, so the time they took is not counted; only the time up to the checkpoint
    is, plus the new invocation's. Without a checkpoint a run starts at 0. ``<stage>/wall_s.json`` shows
    the time spent after each step (for progress; not read back). Every TRL arm keeps one, budget or not,
    so that its stats can give the whole run's wall-clock (``wall_stats``), not only the last invocation's.
    """

    BUDGET_FILE = "ssb_wall_s.json"

    def __init__(self, budget_s: float | None, ledger: Path, resume_from: str | None = None):
        self.budget_s, self.ledger = budget_s, ledger
        saved = Path(resume_from) / self.BUDGET_FILE if resume_from else None
        # A checkpoint written before every arm kept a ledger records nothing: the time before it is then unknown.
        self.counts_every_step = saved is None or saved.exists()
        self.spent_before = json.loads(saved.read_text())["wall_s"] if saved is not None and saved.exists() else 0.0
        if not self.counts_every_step:
            _log.warning("%s records no wall-clock spent; the count starts from 0 again (the stats will give only this "
                         "invocation's)", resume_from)
        self.resumed_from_step = int(Path(resume_from).name.split("-", 1)[1]) if resume_from else None
        self.started = time.monotonic()

    def spent(self) -> float:
        return self.spent_before + time.monotonic() - self.started

    def exhausted(self) -> bool:
        return self.budget_s is not None and self.spent() >= self.budget_s

    def on_step_end(self, args, state, control, **kwargs):
        write_json_atomic(self.ledger, {"wall_s": round(self.spent(), 2), "step": state.global_step})
        if self.exhausted() and not control.should_training_stop:
            _log.info("wall-clock budget of %.0f s reached after step %d", self.budget_s, state.global_step)
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"  # the folder the trainer has just written
        if checkpoint.is_dir():
            write_json_atomic(checkpoint / self.BUDGET_FILE, {"wall_s": round(self.spent(), 2), "step": state.global_step})
        return control


def wall_stats(clock: WallClockBudget) -> dict:
    """A TRL arm's wall-clock in its stats: ``training_wall_s``, over every invocation (None where a resumed checkpoint
    recorded no time: only ``this_invocation`` is then known), the step it resumed from, and whether the budget stopped it."""
    return {"training_wall_s": round(clock.spent(), 2) if clock.counts_every_step else None,
            "resumed_from_step": clock.resumed_from_step, "stopped_by_wall_clock_budget": clock.exhausted()}


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
            _log.info("generation budget of %d tokens reached after step %d (%d generated)", self.max_tokens, state.global_step, spent)
            self.reached = True
            control.should_training_stop = True
        return control


# What the trainer writes into a checkpoint folder that resuming reads, trainer_state.json last
# (transformers' Trainer._save_checkpoint): a kill during a save leaves a folder without it, and a kill
# while older checkpoints are rotated away (a plain rmtree) one with some of the rest missing.
CHECKPOINT_FILES = ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json")


def checkpoint_damage(checkpoint: Path) -> str | None:
    """Why a TRL checkpoint folder cannot be resumed from, or None: each of ``CHECKPOINT_FILES`` and an RNG state must
    be there and load as the trainer loads it (the adapter's safetensors header and sizes; optimizer, scheduler and RNG
    state by ``torch.load(weights_only=True)``; the trainer state as JSON)."""
    from transformers.trainer_pt_utils import safe_globals

    from ssb.checkpoints import missing, safetensors_damage, torch_state_damage

    state = checkpoint / "trainer_state.json"
    if why := missing(state):
        return why
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{state} does not parse ({exc})"
    rng = sorted(checkpoint.glob("rng_state*.pth")) or [checkpoint / "rng_state.pth"]
    why = (safetensors_damage(checkpoint / "adapter_model.safetensors") or torch_state_damage(checkpoint / "optimizer.pt")
           or torch_state_damage(checkpoint / "scheduler.pt"))
    if why:
        return why
    with safe_globals():  # the numpy types the trainer allows in its RNG state, as it loads it
        return next((why for path in rng if (why := torch_state_damage(path))), None)


def last_complete_checkpoint(checkpoints: Path, also_damage: Callable[[Path], str | None] | None = None) -> str | None:
    """The newest complete ``checkpoint-N`` in ``checkpoints`` (None when there is none), logging each newer one skipped;
    ``also_damage`` says what is wrong with what an arm's own callbacks save into a checkpoint after the trainer wrote it."""
    from ssb.checkpoints import newest_intact

    found = sorted((p for p in checkpoints.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()),
                   key=lambda p: int(p.name.split("-", 1)[1]), reverse=True)

    def damage(checkpoint: Path) -> str | None:
        if why := checkpoint_damage(checkpoint):
            return why
        return also_damage(checkpoint) if also_damage is not None else None

    chosen = newest_intact(found, damage)
    return None if chosen is None else str(chosen)


def sampler_choice(config, field: str, choice: str, trl_forced: bool = False) -> str:
    """What samples an arm's completions: ``engine`` (ssb's OpenVINO engine) or ``trl`` (TRL's own generation), for the
    arm's ``field`` (``grpo.sampler``, ``onpolicy.sampler``) set to ``choice``; ``auto`` is the engine where
    ``backend.name`` resolves to openvino. ``trl_forced``: the arm's settings leave only TRL's generation (GRPO's vLLM)."""
    from ssb.generation import backend_name

    if choice == "trl" or trl_forced or (choice == "auto" and backend_name(config) != "openvino"):
        return "trl"
    if importlib.util.find_spec("openvino_genai") is None:
        raise ValueError(f"{field}: engine needs openvino-genai (pip install -c constraints-cpu.txt -e '.[openvino]')")
    return "engine"


def sampler_inputs(config, sampler: str) -> dict:
    """What the completions' numerics depend on: the sampler, and for the engine its resolved settings
    (``backend_spec``: the precision that runs, not ``auto``) and sequences in flight."""
    from ssb.generation import backend_spec

    return {"name": sampler, **({**backend_spec(config), "batch_size": config.backend.batch_size} if sampler == "engine" else {})}


def trainer_args(config_class: type, config, section, output_dir: str, seed: int, **own):
    """``config_class`` (TRL's ``GRPOConfig``, ``SDFTConfig`` or ``SDPOConfig``) with what both arms set from their
    section of the config (``section``: ``config.grpo`` or ``config.onpolicy``, whose fields are named alike) and
    ``own``, the arm's own arguments. TRL's CPU-hostile defaults are overridden: bf16 only on a GPU (and a model dtype
    that allows it), gradient checkpointing as the section says; one log entry per optimiser step, the two newest
    checkpoints kept, no external reporting."""
    from ssb.models import resolve_device

    check_trl_version()
    on_gpu = resolve_device(config.model).type == "cuda"
    return config_class(
        output_dir=output_dir, seed=seed, use_cpu=not on_gpu, bf16=on_gpu and config.model.dtype in ("auto", "bfloat16"),
        learning_rate=section.lr, num_train_epochs=section.epochs, max_steps=section.max_steps if section.max_steps is not None else -1,
        per_device_train_batch_size=section.batch_size, gradient_accumulation_steps=section.gradient_accumulation_steps,
        num_generations=section.num_generations, max_completion_length=section.max_completion_length,
        temperature=section.temperature, top_k=section.top_k, top_p=section.top_p, max_grad_norm=section.max_grad_norm,
        warmup_steps=section.warmup_steps, gradient_checkpointing=section.gradient_checkpointing, logging_steps=1,
        save_steps=section.save_every, save_total_limit=2, report_to=[], disable_tqdm=not config.progress, **own,
    )


def train_and_save(trainer, checkpoint: str | None, sampling, out: Path) -> list[dict]:
    """Train a TRL trainer (resuming from ``checkpoint``), release the engine's ``sampling`` (if any), save
    ``out/adapter`` and ``out/metrics.jsonl`` (the log history, one entry per step); returns that history. GRPO's and
    the on-policy arm's."""
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if sampling is not None:
            sampling.sampler.close()
    trainer.save_model(str(out / "adapter"))  # the trainer's save: it gathers a sharded model's state first
    if trainer.args.should_save:  # the process that wrote it
        canonical_adapter_config(out / "adapter")
        follow_umask(out / "adapter")
    history = [entry for entry in trainer.state.log_history if "step" in entry]
    write_jsonl_atomic(out / "metrics.jsonl", history)
    return history


# TRL's private members, each as TESTED_TRL has it: where the next TRL upgrade looks first.


def use_experimental_api() -> None:
    """Silence TRL's notice that an API is experimental (``trl.experimental``, GRPO's ``rollout_func``): the version
    check stands in for it."""
    check_trl_version()
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def self_distillation_classes(kind: str) -> tuple[type, type]:
    """TRL's experimental self-distillation trainer and its config: ``sdft`` (SDFT) or ``sdpo`` (SDPO)."""
    use_experimental_api()
    if kind == "sdpo":
        from trl.experimental.sdpo import SDPOConfig, SDPOTrainer

        return SDPOTrainer, SDPOConfig
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    return SDFTTrainer, SDFTConfig


def record_metrics(trainer, values: dict[str, list[float]]) -> None:
    """Add ``values`` to the training step's metrics: TRL logs each name's mean over the step into the log history
    (``metrics.jsonl``). Its trainers keep them in the private ``_metrics``, with no public way in."""
    metrics = trainer._metrics["train"]
    for name, more in values.items():
        metrics[name].extend(more)


def epoch_seeded(trainer_class: type) -> type:
    """``trainer_class`` (TRL's ``GRPOTrainer``, ``SDFTTrainer`` or ``SDPOTrainer``, or a subclass) with each epoch's
    question order drawn from (seed, epoch), so that a resume reproduces it.

    TRL's ``RepeatSampler`` shuffles with one generator carried over the epochs. A run resumed from a checkpoint
    rebuilds the sampler, and its generator, from the seed: a run resumed in epoch 2 then trains epoch 2 in epoch 1's
    order, not the one an uninterrupted run would (found by the on-policy arm's kill/resume test: step-3 loss 0.17525
    against 0.17490). Drawing each epoch's permutation from ``seed + epoch`` makes the order a function of the epoch
    alone; the trainer calls ``set_epoch`` at the start of every epoch, a resumed one included."""
    from trl.trainer.utils import RepeatSampler

    check_trl_version()

    class EpochSeededSampler(RepeatSampler):
        def set_epoch(self, epoch: int) -> None:
            if self.shuffle:
                self.generator.manual_seed(self.seed + epoch)

    class EpochSeeded(trainer_class):
        def _get_train_sampler(self, dataset=None):
            return EpochSeededSampler(self.train_dataset if dataset is None else dataset, mini_repeat_count=self.num_generations,
                                      batch_size=self.args.generation_batch_size // self.num_generations,
                                      repeat_count=self.num_iterations * self.args.steps_per_generation, shuffle=self.shuffle_dataset,
                                      seed=self.args.seed)

    EpochSeeded.__name__ = EpochSeeded.__qualname__ = f"EpochSeeded{trainer_class.__name__}"
    return EpochSeeded


def self_distillation_trainer(base: type, prompt_ids: Callable, sample: Callable | None = None, watch: Callable | None = None) -> type:
    """``base`` (TRL's ``SDFTTrainer`` or ``SDPOTrainer``) with each epoch's order drawn from its number (``epoch_seeded``)
    and its prompt and generation hooks given to ssb: each conversation tokenized by ``prompt_ids`` and never truncated
    (SDPO's teacher prompts too); the completions drawn by ``sample(prompt_ids, trainer) -> (prompts, completions)``
    where given, else by TRL; and ``watch(prompts, completions) -> {name: value}`` logged with the step that generated."""

    class SSBSelfDistillationTrainer(epoch_seeded(base)):
        def _tokenize_prompts(self, prompts: list) -> list[list[int]]:
            return [prompt_ids(conversation) for conversation in prompts]

        def _tokenize_prompts_untruncated(self, prompts: list) -> list[list[int]]:  # SDPO's teacher prompts
            return self._tokenize_prompts(prompts)

        def _generate(self, ids: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
            prompts, completions = super()._generate(ids) if sample is None else sample(ids, self)
            if watch is not None:
                record_metrics(self, {name: [value] for name, value in watch(prompts, completions).items()})
            return prompts, completions

    return SSBSelfDistillationTrainer


class _WeightsPushedByRollouts:
    """What GRPOTrainer calls to sync vLLM's weights before a ``rollout_func`` call: nothing to do, since
    ``TrainerSampling`` pushes the trainer's weights to the engine itself."""

    def sync_weights(self) -> None:
        pass


def correct_with_engine_logprobs(trainer) -> None:
    """Have TRL's importance-sampling correction weight GRPO's loss by the trainer's over the engine's probability of
    each sampled token (in ``trainer.vllm_importance_sampling_mode``, clipped as TRL's arguments say).

    TRL 1.16 computes the correction from any rollout's log-probabilities (a ``rollout_func`` returns them) but gates it
    on ``use_vllm``, in the trainer's five checks of ``use_vllm and vllm_importance_sampling_correction``. With a
    ``rollout_func`` (and no tools, which ssb never passes) the trainer reads ``use_vllm`` elsewhere only to sync vLLM's
    weights before calling it, which here is ``_WeightsPushedByRollouts``; so setting it after construction opens the
    correction and nothing else. tests/test_grpo.py holds the ratio the loss receives to one computed independently, so
    a TRL that moved the gate fails there rather than silently training uncorrected."""
    trainer.use_vllm = True
    trainer.vllm_generation = _WeightsPushedByRollouts()
    trainer._last_loaded_step = -1
