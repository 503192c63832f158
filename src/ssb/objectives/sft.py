"""``distill.objective: sft``, the hard-label control: cross-entropy on the same refined solutions given the bare question.

No teacher targets (``ssb run`` skips the teacher stage); the teacher view is refine's own
``teacher.jsonl``, read only to align examples the way ``kd`` does, so both train on the same
solution token ids. Its ``kd`` term is 0 (nothing is distilled) so that every objective's metrics
keep one schema; the teacher's diagnostics are absent (None in the metrics).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ssb.losses import cross_entropy, token_diagnostics


class SFT:
    upstream = "refine"
    needs_teacher_targets = False
    evaluated_name = "sft"
    terms = ("loss", "kd", "ce", "student_entropy")
    logged = {"loss": "loss", "kl": "kd", "ce": "ce"}
    heldout_terms = ("ce",)

    def __init__(self, config):
        self.config = config

    def recorded_inputs(self) -> dict:
        return {"teacher_format": None}

    def teacher_view(self, folder) -> Path:
        return folder.file("teacher.jsonl")

    def open(self, folder, model, tokenizer) -> None:
        pass

    def attach(self, peft_model, chat) -> None:
        pass

    def rows(self, group: list, device) -> dict[str, torch.Tensor]:
        return {}

    def chunk_terms(self, student_logits, rows, head_weight, target_ids, training: bool) -> torch.Tensor:
        ce = cross_entropy(student_logits, target_ids)
        student_entropy = token_diagnostics(student_logits.detach(), None, target_ids)[:, 1]
        return torch.stack([ce, torch.zeros_like(ce), ce, student_entropy], dim=-1)


OBJECTIVE = SFT
