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

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

Normalization = Literal["sequence", "token"]


def kl_full(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row ``T^2 KL(softmax(t/T) || softmax(s/T))``. (N, V), (N, V) -> (N,), float32."""
    return kd_full(student_logits, teacher_logits, temperature, "forward")


KDDirection = Literal["forward", "reverse", "jsd"]


def kd_full(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, direction: KDDirection = "forward",
            beta: float = 0.5) -> torch.Tensor:
    """Per-row divergence between full teacher and student distributions at temperature T, times T^2.

    (N, V), (N, V) -> (N,), float32. ``forward`` is the paper's ``KL(p_t || p_s)``; ``reverse`` is
    ``KL(p_s || p_t)`` (mode-seeking); ``jsd`` is the generalised Jensen-Shannon divergence
    ``beta KL(p_t || m) + (1 - beta) KL(p_s || m)`` with ``m = beta p_t + (1 - beta) p_s``, 0 < beta < 1
    (beta = 0.5: the symmetric JSD). Every direction is 0 exactly when the two distributions agree.
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if direction == "forward":
        divergence = (log_p.exp() * (log_p - log_q)).sum(-1)
    elif direction == "reverse":
        divergence = (log_q.exp() * (log_q - log_p)).sum(-1)
    elif direction == "jsd":
        if not 0 < beta < 1:
            raise ValueError(f"jsd needs 0 < beta < 1, got {beta}")
        log_m = torch.logsumexp(torch.stack([log_p + math.log(beta), log_q + math.log(1 - beta)]), dim=0)
        divergence = beta * (log_p.exp() * (log_p - log_m)).sum(-1) + (1 - beta) * (log_q.exp() * (log_q - log_m)).sum(-1)
    else:
        raise ValueError(f"unknown KD direction {direction!r}")
    return temperature**2 * divergence


def token_diagnostics(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, target_ids: torch.Tensor,
                      teacher_top1: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row teacher entropy, student entropy, teacher NLL of the target, top-1 agreement (at T = 1).

    (N, V) student logits, (N, V) teacher logits or None, (N,) target ids -> (N, 4), float32. Without
    full teacher logits (top-k targets) the teacher columns are NaN, and agreement uses
    ``teacher_top1`` (N,) when given.
    """
    log_q = F.log_softmax(student_logits.float(), dim=-1)
    student_entropy = -(log_q.exp() * log_q).sum(-1)
    student_top1 = student_logits.argmax(-1)
    nan = torch.full_like(student_entropy, float("nan"))
    if teacher_logits is None:
        agree = (student_top1 == teacher_top1).float() if teacher_top1 is not None else nan
        return torch.stack([nan, student_entropy, nan, agree], dim=-1)
    log_p = F.log_softmax(teacher_logits.float(), dim=-1)
    teacher_entropy = -(log_p.exp() * log_p).sum(-1)
    teacher_nll = -log_p.gather(-1, target_ids.long()[:, None])[:, 0]
    agree = (student_top1 == teacher_logits.argmax(-1)).float()
    return torch.stack([teacher_entropy, student_entropy, teacher_nll, agree], dim=-1)


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
    head = (log_p.exp() * (log_p - log_q)).sum(-1)
    if topk_ids.shape[-1] >= student_logits.shape[-1]:
        return temperature**2 * head  # k = V: no tail on either side (the teacher's is rounding error)
    # The student's tail summed over the tokens outside the top k, not as 1 - (top-k mass): that
    # difference rounds to 0 for a confident student, and log 0 would make the loss infinite.
    log_q_tail = torch.logsumexp(log_q_all.scatter(-1, topk_ids.long(), float("-inf")), dim=-1)
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


class _FusedHeadLoss(torch.autograd.Function):
    """Per-token losses through a frozen output head, chunk by chunk, gradients taken on the spot.

    Each row's loss depends only on its own logits, so d(sum_i w_i L_i)/dh_i = w_i (dL_i/dz_i) W,
    whatever the weights w_i the caller applies later. The forward pass computes, per chunk of rows,
    the logits z (c, V), the loss, dL/dz by autograd, and immediately dL/dh = (dL/dz) W (c, H); only
    that (N, H) tensor is kept for the backward pass, which scales it by the incoming gradient.
    Logits are never kept or recomputed: peak memory grows with chunk x V, and the head's matrix
    product runs twice per row (forward, and dL/dz W) instead of three times.
    """

    @staticmethod
    def forward(ctx, hidden, weight, loss_fn, chunk_size, *row_args):
        losses, grads = [], []
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start : start + chunk_size]
            with torch.enable_grad():
                logits = (h @ weight.T).detach().requires_grad_(True)  # (c, V)
                out = loss_fn(logits, *(a[start : start + chunk_size] for a in row_args))  # (c, m); column 0 is trained
                (grad_logits,) = torch.autograd.grad(out[:, 0].sum(), logits)
            losses.append(out.detach())
            grads.append((grad_logits.to(weight.dtype) @ weight).to(hidden.dtype))  # (c, H)
        ctx.save_for_backward(torch.cat(grads))
        return torch.cat(losses)

    @staticmethod
    def backward(ctx, grad_out):
        (grad_hidden,) = ctx.saved_tensors
        return (grad_hidden * grad_out[:, :1].to(grad_hidden.dtype), None, None, None, *([None] * (len(ctx.needs_input_grad) - 4)))


def fused_head_loss(hidden: torch.Tensor, weight: torch.Tensor, loss_fn: Callable[..., torch.Tensor], *row_args: torch.Tensor,
                    chunk_size: int) -> torch.Tensor:
    """``loss_fn(hidden @ weight.T, *row_args)`` row chunk by row chunk, differentiable in ``hidden`` only.

    ``hidden`` (N, H) are final hidden states, ``weight`` (V, H) the frozen output head, ``row_args``
    tensors with N rows (teacher targets, label ids). ``loss_fn`` maps (c, V) logits and the matching
    rows to (c, m) losses; gradients flow through column 0 only (the trained objective), the other
    columns are reported values. Returns (N, m); (0, m) shapes give an empty result.
    """
    if weight.requires_grad:
        raise ValueError("fused_head_loss needs a frozen output head (weight.requires_grad is False)")
    if hidden.shape[0] == 0:
        with torch.no_grad():
            return loss_fn(hidden.new_zeros((0, weight.shape[0])), *row_args)
    return _FusedHeadLoss.apply(hidden, weight, loss_fn, chunk_size, *row_args)
