"""Training objectives of the distill stage, chosen by ``distill.objective``: the one table of them.

The training loop (``ssb.training_loop``) is written once; an objective declares only what differs
between methods trained by it (see ``Objective``). ``kd`` is SSB's logit distillation of the hinted
teacher (``ssb.objectives.kd``); ``sft`` is cross-entropy on the same refined solutions, the
hard-label control (``ssb.objectives.sft``). Adding one: a module with an ``OBJECTIVE`` class
beside these, a line in ``OBJECTIVES``, the config fields it reads, and its tests.

The table names modules, so reading it (the config's list of names, ``ssb --help``) imports no torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

# distill.objective -> the module whose OBJECTIVE implements it.
OBJECTIVES = {"kd": "ssb.objectives.kd", "sft": "ssb.objectives.sft"}

# The per-token diagnostic terms an objective may compute (``losses.token_diagnostics``, in this order), summarised per
# step by ``ssb.distill_diagnostics``; one without a teacher computes only the student's.
DIAGNOSTICS = ("teacher_entropy", "student_entropy", "teacher_nll", "top1_agreement")


class Objective(Protocol):
    """What a training objective declares; an instance is made per run from its config (``OBJECTIVE(config)``).

    Declared before anything is loaded:
      ``upstream``: the stage distillation needs finished (its fingerprint is recorded in distill's inputs);
      ``needs_teacher_targets``: whether ``ssb run`` runs the teacher stage for it;
      ``evaluated_name``: the name its adapter is evaluated under (``eval/<name>/``);
      ``terms``: its per-token terms by name, "loss" (the trained one, carrying gradients) first;
      ``logged``: metric name -> term, each reduced over the step as the loss is (``distill.normalization``);
      ``heldout_terms``: the terms reported on held-out examples (``heldout_<term>``).
    """

    upstream: str
    needs_teacher_targets: bool
    evaluated_name: str
    terms: tuple[str, ...]
    logged: dict[str, str]
    heldout_terms: tuple[str, ...]

    def recorded_inputs(self) -> dict:
        """What it adds to distill's recorded stage inputs (besides the distill section itself)."""

    def teacher_view(self, folder) -> Path:
        """The conversations whose prompts the teacher side of an example is aligned on."""

    def open(self, folder, model, tokenizer) -> None:
        """Check and open what it reads from the run folder (refusing it before the stage is marked started)."""

    def attach(self, peft_model, chat) -> None:
        """Bind to the model being trained (an online teacher runs it with the adapters disabled)."""

    def rows(self, group: list, device) -> dict[str, torch.Tensor]:
        """Per-token rows it needs for a micro-batch's solution tokens (one row per token, in ``pack`` order)."""

    def chunk_terms(self, student_logits: torch.Tensor, rows: dict[str, torch.Tensor], head_weight: torch.Tensor,
                    target_ids: torch.Tensor, training: bool) -> torch.Tensor:
        """(c, V) student logits + the same c rows -> (c, len(terms)) per-token terms; column 0 is trained.
        ``training`` False: scoring held-out examples."""


def objective_module(name: str):
    try:
        return importlib.import_module(OBJECTIVES[name])
    except KeyError:
        raise ValueError(f"unknown distill.objective {name!r}; objectives: {', '.join(OBJECTIVES)}") from None


def objective_for(config) -> Objective:
    """The objective ``config.distill.objective`` names, made for ``config``."""
    return objective_module(config.distill.objective).OBJECTIVE(config)
