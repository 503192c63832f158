"""What each distillation step's metrics say beyond the loss: where the KD falls and how teacher and student differ.

Per step, over all of the step's solution tokens (token-weighted, summed over micro-batches and
processes): teacher and student entropy and the teacher's NLL of the solution token (at T = 1; the
NLL says how much the hinted teacher "agrees" with the kept solution), top-1 agreement of teacher
and student, and the share of the step's KD that falls on the end-of-turn token and on the tokens
that write the final boxed answer. Top-k targets keep no full teacher distribution: their teacher
columns are reported as None, and so are those of an objective that has no teacher (``sft``).
"""

from __future__ import annotations

import torch

from ssb.objectives import DIAGNOSTICS

# What a step's metrics carry besides the per-token diagnostics' means: the KD's shares on special tokens.
KD_SHARES = ("kd_share_eot", "kd_share_answer")


class StepDiagnostics:
    """Sums of one optimiser step's per-token diagnostics, reduced over processes by the caller."""

    def __init__(self, device):
        # per diagnostic: sum, count (NaN-free rows); then KD on all tokens, on end-of-turn, on answer tokens
        self.sums = torch.zeros(2 * len(DIAGNOSTICS) + 3, dtype=torch.float64, device=device)

    def add(self, per_token: torch.Tensor, terms: tuple[str, ...], eot: torch.Tensor, answer: torch.Tensor) -> None:
        """``per_token`` (N, len(terms)): an objective's named per-token terms; ``eot``, ``answer`` (N,) bool masks.
        A diagnostic the objective does not compute counts as NaN on every token (None in the metrics), and no
        ``kd`` term as 0 (no shares)."""
        with torch.no_grad():
            nan = per_token.new_full((len(per_token),), float("nan"))
            values = torch.stack([per_token[:, terms.index(name)] if name in terms else nan for name in DIAGNOSTICS], dim=-1).double()
            finite = ~values.isnan()
            n = len(DIAGNOSTICS)
            self.sums[:n] += torch.where(finite, values, 0.0).sum(0)
            self.sums[n : 2 * n] += finite.sum(0)
            kd = per_token[:, terms.index("kd")].double() if "kd" in terms else torch.zeros_like(nan, dtype=torch.float64)
            self.sums[2 * n] += kd.sum()
            self.sums[2 * n + 1] += kd[eot].sum()
            self.sums[2 * n + 2] += kd[answer].sum()

    @staticmethod
    def metrics(sums: torch.Tensor) -> dict:
        """The step's metrics from (reduced) sums: token means, and KD shares (None where undefined)."""
        n = len(DIAGNOSTICS)
        values = sums.tolist()
        out = {name: round(values[i] / values[n + i], 6) if values[n + i] else None for i, name in enumerate(DIAGNOSTICS)}
        kd_total = values[2 * n]
        for i, name in enumerate(KD_SHARES):
            out[name] = round(values[2 * n + 1 + i] / kd_total, 6) if kd_total > 0 else None
        return out
