import math

import pytest
import torch
import torch.nn.functional as F

from ssb.losses import cross_entropy, fused_head_loss, kl_full, kl_topk, reduce_per_token, topk_tail_log_probs

torch.manual_seed(0)


def dense_reference(student, teacher, T):
    """Independent computation with torch's kl_div: T^2 * KL(p_t || p_s) per row."""
    return T**2 * F.kl_div(F.log_softmax(student / T, -1), F.log_softmax(teacher / T, -1), log_target=True, reduction="none").sum(-1)


@pytest.mark.parametrize("T", [1.0, 2.0, 0.7])
def test_full_kl_equals_kl_div(T):
    s, t = torch.randn(7, 50) * 3, torch.randn(7, 50) * 3
    torch.testing.assert_close(kl_full(s, t, T), dense_reference(s, t, T))


def test_zero_when_student_equals_teacher():
    x = torch.randn(5, 40)
    assert kl_full(x, x.clone(), 2.0).abs().max() < 1e-6
    vals, ids = x.topk(8, -1)
    lse = torch.logsumexp(x / 2.0, -1)
    assert kl_topk(x, vals, ids, lse, 2.0).abs().max() < 1e-5


def test_topk_with_k_equal_vocab_equals_full():
    s, t = torch.randn(6, 30), torch.randn(6, 30) * 2
    vals, ids = t.topk(30, -1)
    lse = torch.logsumexp(t / 2.0, -1)
    torch.testing.assert_close(kl_topk(s, vals, ids, lse, 2.0), kl_full(s, t, 2.0), atol=1e-5, rtol=1e-5)


def test_tail_bucket_sums_to_one_and_bounds_full_kl_from_below():
    s, t = torch.randn(6, 100), torch.randn(6, 100)
    vals, ids = t.topk(10, -1)
    lse = torch.logsumexp(t / 2.0, -1)
    log_p, log_tail = topk_tail_log_probs(vals, lse, 2.0)
    torch.testing.assert_close(log_p.exp().sum(-1) + log_tail.exp(), torch.ones(6))
    assert (kl_topk(s, vals, ids, lse, 2.0) <= kl_full(s, t, 2.0) + 1e-6).all()
    # Against the coarsened distributions computed directly.
    p = F.softmax(t / 2.0, -1)
    q = F.softmax(s / 2.0, -1)
    p_b = torch.cat([p.gather(-1, ids), 1 - p.gather(-1, ids).sum(-1, keepdim=True)], -1)
    q_b = torch.cat([q.gather(-1, ids), 1 - q.gather(-1, ids).sum(-1, keepdim=True)], -1)
    torch.testing.assert_close(kl_topk(s, vals, ids, lse, 2.0), 4.0 * (p_b * (p_b / q_b).log()).sum(-1), atol=1e-5, rtol=1e-4)


def test_topk_without_tail_renormalises():
    s, t = torch.randn(4, 20), torch.randn(4, 20)
    vals, ids = t.topk(5, -1)
    lse = torch.logsumexp(t, -1)
    p = F.softmax(vals, -1)
    q = F.log_softmax(s, -1).gather(-1, ids)
    torch.testing.assert_close(kl_topk(s, vals, ids, lse, 1.0, tail=False), (p * (p.log() - q)).sum(-1))


def test_sequence_and_token_normalisation():
    per_token = torch.tensor([1.0, 3.0, 10.0, 2.0, 2.0, 2.0])
    seq = torch.tensor([0, 0, 1, 2, 2, 2])
    # eq. 6: mean of per-sequence means = (2 + 10 + 2) / 3
    assert reduce_per_token(per_token, seq, 3, "sequence", 3).item() == pytest.approx(14 / 3)
    assert reduce_per_token(per_token, seq, 3, "token", 6).item() == pytest.approx(20 / 6)
    # Split across two micro-batches with a global denominator: the same total.
    a = reduce_per_token(per_token[:3], seq[:3], 2, "sequence", 3)
    b = reduce_per_token(per_token[3:], seq[3:] - 2, 1, "sequence", 3)
    assert (a + b).item() == pytest.approx(14 / 3)


def test_all_masked_gives_zero_not_nan():
    empty = torch.zeros(0)
    out = reduce_per_token(empty, torch.zeros(0, dtype=torch.long), 2, "sequence", 0)
    assert out.item() == 0.0 and not math.isnan(out.item())
    assert reduce_per_token(empty, torch.zeros(0, dtype=torch.long), 0, "token", 0).item() == 0.0


@pytest.mark.parametrize("objective", ["full", "topk", "kd+ce"])
def test_fused_head_loss_equals_dense_autograd_in_values_and_gradients(objective):
    head = torch.nn.Linear(16, 64, bias=False).requires_grad_(False)
    h = torch.randn(23, 16, requires_grad=True)
    teacher = torch.randn(23, 64) * 2
    vals, ids = teacher.topk(7, -1)
    lse = torch.logsumexp(teacher / 2.0, -1)
    labels = torch.randint(0, 64, (23,))
    weights = torch.rand(23)  # what a later reduction applies per token

    def losses(logits, teacher_rows, val_rows, id_rows, lse_rows, label_rows):
        if objective == "topk":
            kd = kl_topk(logits, val_rows, id_rows, lse_rows, 2.0)
        else:
            kd = kl_full(logits, teacher_rows, 2.0)
        ce = cross_entropy(logits, label_rows)
        trained = kd + 0.3 * ce if objective == "kd+ce" else kd
        return torch.stack([trained, kd, ce], -1)

    dense = losses(head(h), teacher, vals, ids, lse, labels)
    (dense[:, 0] * weights).sum().backward()
    dense_grad, h.grad = h.grad.clone(), None
    fused = fused_head_loss(h, head.weight, losses, teacher, vals, ids, lse, labels, chunk_size=5)
    (fused[:, 0] * weights).sum().backward()
    torch.testing.assert_close(fused, dense.detach())
    torch.testing.assert_close(h.grad, dense_grad)


def test_fused_head_loss_refuses_a_trainable_head_and_handles_no_rows():
    head = torch.nn.Linear(8, 32, bias=False)
    with pytest.raises(ValueError, match="frozen output head"):
        fused_head_loss(torch.randn(3, 8), head.weight, lambda z: z.sum(-1, keepdim=True), chunk_size=2)
    head.requires_grad_(False)
    out = fused_head_loss(torch.zeros(0, 8, requires_grad=True), head.weight, lambda z: torch.stack([z.sum(-1), z.sum(-1)], -1), chunk_size=2)
    assert out.shape == (0, 2)


def test_cross_entropy_matches_manual():
    logits, target = torch.randn(5, 11), torch.randint(0, 11, (5,))
    manual = -F.log_softmax(logits, -1)[torch.arange(5), target]
    torch.testing.assert_close(cross_entropy(logits, target), manual)


def test_topk_tail_stays_finite_for_a_student_sure_of_its_top_k():
    """1 - (top-k mass) rounds to 0 in float32 here; the tail must come from the tokens outside the top k."""
    t = torch.randn(4, 50)
    vals, ids = t.topk(5, -1)
    lse = torch.logsumexp(t / 2.0, -1)
    s = torch.full((4, 50), -40.0).scatter(-1, ids, 40.0).requires_grad_(True)  # tail mass ~ e^-40 per token at T = 2
    loss = kl_topk(s, vals, ids, lse, 2.0)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(s.grad).all()
    # Independent reference: the k + 1 bucket distributions built directly in float64.
    p = torch.softmax(t.double() / 2.0, -1)
    q = torch.softmax(s.detach().double() / 2.0, -1)
    mask = torch.zeros_like(p, dtype=torch.bool).scatter(-1, ids, True)
    p_b = torch.cat([p.gather(-1, ids), (p * ~mask).sum(-1, keepdim=True)], -1)
    q_b = torch.cat([q.gather(-1, ids), (q * ~mask).sum(-1, keepdim=True)], -1)
    torch.testing.assert_close(loss.double(), 4.0 * (p_b * (p_b / q_b).log()).sum(-1), rtol=1e-4, atol=1e-4)


def test_kd_directions_against_explicit_float64_formulas():
    from ssb.losses import kd_full

    s, t = torch.randn(6, 40) * 2, torch.randn(6, 40) * 2
    T = 1.5
    p, q = F.softmax(t.double() / T, -1), F.softmax(s.double() / T, -1)
    kl = lambda a, b: (a * (a / b).log()).sum(-1)  # noqa: E731
    torch.testing.assert_close(kd_full(s, t, T, "forward").double(), T**2 * kl(p, q), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(kd_full(s, t, T, "reverse").double(), T**2 * kl(q, p), rtol=1e-4, atol=1e-5)
    for beta in (0.5, 0.2, 0.9):
        m = beta * p + (1 - beta) * q
        torch.testing.assert_close(kd_full(s, t, T, "jsd", beta).double(), T**2 * (beta * kl(p, m) + (1 - beta) * kl(q, m)),
                                   rtol=1e-4, atol=1e-5)
    # The symmetric JSD does not care which side is the teacher; it is bounded by T^2 log 2.
    torch.testing.assert_close(kd_full(s, t, T, "jsd", 0.5), kd_full(t, s, T, "jsd", 0.5))
    assert (kd_full(s, t, T, "jsd", 0.5) <= T**2 * math.log(2) + 1e-6).all()
    for direction in ("forward", "reverse", "jsd"):
        assert kd_full(s, s.clone(), T, direction).abs().max() < 1e-6
    with pytest.raises(ValueError, match="0 < beta < 1"):
        kd_full(s, t, T, "jsd", 1.0)


def test_token_diagnostics_against_direct_computation():
    from ssb.losses import token_diagnostics

    s, t = torch.randn(5, 30), torch.randn(5, 30)
    targets = torch.randint(0, 30, (5,))
    d = token_diagnostics(s, t, targets)
    p, q = F.softmax(t, -1), F.softmax(s, -1)
    torch.testing.assert_close(d[:, 0], -(p * p.log()).sum(-1))
    torch.testing.assert_close(d[:, 1], -(q * q.log()).sum(-1))
    torch.testing.assert_close(d[:, 2], -p[torch.arange(5), targets].log())
    torch.testing.assert_close(d[:, 3], (s.argmax(-1) == t.argmax(-1)).float())
    sparse = token_diagnostics(s, None, targets, teacher_top1=s.argmax(-1))
    assert sparse[:, 0].isnan().all() and sparse[:, 2].isnan().all() and (sparse[:, 3] == 1).all()
