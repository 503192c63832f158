"""``distill.objective: kd``, SSB (Algorithm 1, lines 38-49): match the hinted teacher's distribution on every solution token.

Per token: ``kd_weight * T^2 KL(softmax(t/T) || softmax(s/T)) + ce_weight * CE`` (``distill.kd_direction``
for reverse KL or JSD), the teacher's rows read from the stored targets or computed online by
``ssb.teacher_targets.Teacher``, the one reader of every target format. ``distill.kd_exclude_eot``
gives the end-of-turn token no KD term.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ssb.losses import cross_entropy
from ssb.objectives import DIAGNOSTICS
from ssb.teacher_targets import Teacher, open_targets, teacher_view_path


class KD:
    upstream = "teacher"
    needs_teacher_targets = True
    evaluated_name = "ssb"
    terms = ("loss", "kd", "ce", *DIAGNOSTICS)
    logged = {"loss": "loss", "kl": "kd", "ce": "ce"}
    heldout_terms = ("kd", "ce")

    def __init__(self, config):
        self.config = config
        self.stored = self.teacher = self.end_of_turn_id = None

    def recorded_inputs(self) -> dict:
        return {"teacher_format": self.config.teacher.format}

    def teacher_view(self, folder) -> Path:
        return teacher_view_path(folder, self.config)  # online reads its prompts from it

    def open(self, folder, model, tokenizer) -> None:
        self.stored = open_targets(self.config, folder.file("teacher"), model, tokenizer)  # targets made for something else: refused now

    def attach(self, peft_model, chat) -> None:
        self.teacher = Teacher(self.config, self.stored, peft_model, chat.pad_id)
        self.end_of_turn_id = chat.end_of_turn_id

    def rows(self, group: list, device) -> dict[str, torch.Tensor]:
        return self.teacher.rows(group, device)

    def chunk_terms(self, student_logits, rows, head_weight, target_ids, training: bool) -> torch.Tensor:
        d = self.config.distill
        ce = cross_entropy(student_logits, target_ids)  # reported even when not trained: it is cheap
        scored = self.teacher.score(student_logits, rows, head_weight, target_ids)  # (c, 1 + len(DIAGNOSTICS))
        # The held-out KD stays the full KD, so that it compares across arms that exclude the end-of-turn token or not.
        kd = scored[:, 0] * (target_ids != self.end_of_turn_id) if d.kd_exclude_eot and training else scored[:, 0]
        return torch.cat([torch.stack([d.kd_weight * kd + d.ce_weight * ce, kd, ce], dim=-1), scored[:, 1:]], dim=-1)


OBJECTIVE = KD
