"""What ssb's arms trained by TRL's trainers share (GRPO, ``ssb.arms.grpo``; on-policy, ``ssb.arms.onpolicy``): budgets in wall-clock
and generated tokens that carry over resumes, the newest complete checkpoint to resume from, the sampler's recorded
settings, and the one train-save-log sequence."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from ssb.lora import canonical_adapter_config
from ssb.runfolder.artifacts import write_json_atomic, write_jsonl_atomic
from ssb.runfolder.file_modes import follow_umask

_log = logging.getLogger(__name__)


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


def sampler_inputs(config, sampler: str) -> dict:
    """What the completions' numerics depend on: the sampler, and for the engine its resolved settings
    (``backend_spec``: the precision that runs, not ``auto``) and sequences in flight."""
    from ssb.generation import backend_spec

    return {"name": sampler, **({**backend_spec(config), "batch_size": config.backend.batch_size} if sampler == "engine" else {})}


def train_and_save(trainer, checkpoint: str | None, rollouts, out: Path) -> list[dict]:
    """Train a TRL trainer (resuming from ``checkpoint``), release the engine sampler, save ``out/adapter`` and
    ``out/metrics.jsonl`` (the log history, one entry per step); returns that history. GRPO's and the on-policy arm's."""
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        if rollouts is not None:
            rollouts.sampler.close()
    trainer.save_model(str(out / "adapter"))  # the trainer's save: it gathers a sharded model's state first
    if trainer.args.should_save:  # the process that wrote it
        canonical_adapter_config(out / "adapter")
        follow_umask(out / "adapter")
    history = [entry for entry in trainer.state.log_history if "step" in entry]
    write_jsonl_atomic(out / "metrics.jsonl", history)
    return history
