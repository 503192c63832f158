"""Distillation losses as pure functions (paper eq. 6), with the reductions training needs.

Conventions: rows are solution tokens gathered from a batch, ``N`` of them; ``V`` is the
vocabulary. ``T`` is the distillation temperature; every KL is ``T^2 * KL(softmax(t/T) ||
softmax(s/T))``, teacher first, the Hinton et al. scaling that keeps gradient size independent of T.

Reductions: eq. 6 averages over each sequence's tokens, then over sequences ("sequence"); the
authors' code averages over all tokens of a batch ("token"). Both divide by a *global* count (all
micro-batches of an optimiser step on all processes), passed in by the caller, so that gradient
accumulation and data parallelism give the same update as one big batch. Empty input gives 0.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

Normalization = Literal["sequence", "token"]


def kl_full(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row ``T^2 KL(softmax(t/T) || softmax(s/T))``. (N, V), (N, V) -> (N,), float32."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return temperature**2 * (log_p.exp() * (log_p - log_q)).sum(-1)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate near both ends; -inf at x = 0."""
    x = x.clamp(max=0.0)
    return torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def topk_tail_log_probs(topk_logits: torch.Tensor, log_normalizer: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher log-probabilities of its top-k tokens and of the "tail" bucket of all other tokens.

    ``topk_logits`` (N, k) are raw logits; ``log_normalizer`` (N,) is ``logsumexp(t/T)`` over the
    full vocabulary, stored with them. Returns ((N, k), (N,)); their exps sum to one per row.
    """
    log_p = topk_logits.float() / temperature - log_normalizer.float()[:, None]
    return log_p, _log1mexp(torch.logsumexp(log_p, dim=-1))


def kl_topk(student_logits: torch.Tensor, topk_logits: torch.Tensor, topk_ids: torch.Tensor, log_normalizer: torch.Tensor,
            temperature: float, tail: bool = True) -> torch.Tensor:
    """Per-row ``T^2 KL`` from a top-k teacher. (N, V), (N, k), (N, k), (N,) -> (N,).

    With ``tail`` the distributions are compared on k + 1 buckets (the top-k tokens and the rest);
    by the data-processing inequality this never exceeds the full KL, and equals it when k = V.
    Without ``tail`` the teacher's top-k probabilities are renormalised and the student is scored
    on those tokens only (the usual sparse-KD shortcut).
    """
    log_q_all = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_q = log_q_all.gather(-1, topk_ids.long())
    log_p, log_p_tail = topk_tail_log_probs(topk_logits, log_normalizer, temperature)
    if not tail:
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
        return temperature**2 * (log_p.exp() * (log_p - log_q)).sum(-1)
    log_q_tail = _log1mexp(torch.logsumexp(log_q, dim=-1))
    head = (log_p.exp() * (log_p - log_q)).sum(-1)
    p_tail = log_p_tail.exp()
    # 0 * log(0 / q) = 0: a tail the teacher leaves empty contributes nothing (and no NaN).
    tail_term = torch.where(p_tail > 0, p_tail * (log_p_tail - log_q_tail), torch.zeros_like(p_tail))
    return temperature**2 * (head + tail_term)


def cross_entropy(student_logits: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Per-row CE on hard labels at temperature 1. (N, V), (N,) -> (N,)."""
    return F.cross_entropy(student_logits.float(), target_ids.long(), reduction="none")


def reduce_per_token(per_token: torch.Tensor, sequence_index: torch.Tensor, num_sequences: int,
                     normalization: Normalization, denominator: float) -> torch.Tensor:
    """Sum this micro-batch's contribution to the step loss.

    ``per_token`` (N,) losses of solution tokens, ``sequence_index`` (N,) which of this batch's
    ``num_sequences`` sequences each belongs to. "sequence": sum over sequences of the mean over
    their tokens; "token": sum over tokens. Either is divided by ``denominator``, the global count
    of sequences (resp. tokens) in the optimiser step. Returns a scalar; 0 when N = 0.
    """
    if normalization == "sequence":
        lengths = torch.zeros(num_sequences, dtype=per_token.dtype, device=per_token.device)
        lengths.index_add_(0, sequence_index, torch.ones_like(per_token))
        weights = 1.0 / lengths.clamp(min=1.0)[sequence_index]
        total = (per_token * weights).sum()
    elif normalization == "token":
        total = per_token.sum()
    else:
        raise ValueError(f"unknown normalization {normalization!r}")
    return total / max(float(denominator), 1.0)


def chunked_over_rows(fn: Callable[..., torch.Tensor], *row_tensors: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``fn`` applied to row chunks of ``row_tensors``, concatenated, with activation checkpointing.

    ``fn`` maps (c, ...) tensors to a (c,) loss; it typically projects hidden states through the
    output head, so it materialises (c, V) logits. Checkpointing recomputes them in the backward
    pass instead of keeping them, so peak memory grows with ``chunk_size * V``, not ``N * V``.
    """
    n = row_tensors[0].shape[0]
    if n == 0:
        return row_tensors[0].new_zeros(0, dtype=torch.float32)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in row_tensors)
    pieces = []
    for start in range(0, n, chunk_size):
        chunk = [t[start : start + chunk_size] for t in row_tensors]
        pieces.append(checkpoint(fn, *chunk, use_reentrant=False) if needs_grad else fn(*chunk))
    return torch.cat(pieces)
