"""Our full-vocabulary divergences equal TRL's generalized JSD on the same logits (needs `trl`; skipped without it).

TRL's convention (`GKDTrainer.generalized_jsd_loss`, and the stable `DistillationTrainer`'s chunked loss), with
s = student, t = teacher, m = (1 - beta) s + beta t:
    jsd_beta = beta KL(t || m) + (1 - beta) KL(s || m);   beta = 0 -> KL(t || s),  beta = 1 -> KL(s || t)
So beta 0 is our `forward_kl`, beta 1 our `reverse_kl`, beta 0.5 our `jensen_shannon` (fixed 0.5 mixture).
Reduction: TRL's `batchmean` with labels is the mean over the non-ignored tokens; ours are per-token values, and the
objective's `aggregation: token` gives the same global token mean.
"""

import pytest
import torch

trl = pytest.importorskip("trl")

from dopd.distill import DOPDLossConfig, dopd_loss  # noqa: E402
from dopd.distill.divergences import forward_kl, jensen_shannon, log_probs, reverse_kl  # noqa: E402

OURS = {0.0: forward_kl, 0.5: jensen_shannon, 1.0: reverse_kl}


def _generalized_jsd_loss():
    try:
        from trl.experimental.gkd import GKDTrainer
    except ImportError:  # older TRL: GKDTrainer at the top level
        from trl import GKDTrainer
    return GKDTrainer.generalized_jsd_loss


def _logits(seed=0, batch=2, length=5, vocab=37, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, length, vocab, generator=g, dtype=torch.float64) * scale
    teacher = torch.randn(batch, length, vocab, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    labels[0, :2] = -100  # a prompt part
    labels[1, -1] = -100  # a pad
    return student, teacher, labels


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_per_token_divergence_equals_trl_generalized_jsd(beta):
    jsd = _generalized_jsd_loss()
    student, teacher, labels = _logits()
    # reduction="none": one value per (token, vocabulary entry); summed over the vocabulary = the per-token divergence
    theirs = jsd(student, teacher, labels=labels, beta=beta, reduction="none").sum(-1)
    mask = labels.ne(-100)
    ours = OURS[beta](log_probs(student[mask]).double(), log_probs(teacher[mask]).double())
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_batchmean_and_gradient_equal_trl(beta):
    jsd = _generalized_jsd_loss()
    student, teacher, labels = _logits(seed=1)
    s1 = student.clone().float().requires_grad_(True)
    s2 = student.clone().float().requires_grad_(True)
    theirs = jsd(s1, teacher.float(), labels=labels, beta=beta)  # batchmean over the valid tokens
    mask = labels.ne(-100)
    ours = OURS[beta](log_probs(s2[mask]), log_probs(teacher.float()[mask])).mean()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    theirs.backward()
    ours.backward()
    torch.testing.assert_close(s2.grad, s1.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("beta,divergence", [(0.0, "fkl"), (0.5, "js"), (1.0, "rkl")])
def test_objective_with_one_full_divergence_equals_trl(beta, divergence):
    """The whole objective, with a table that applies one full-vocabulary divergence to the teacher on every token
    (`vanilla_opd_full_rkl` for beta 1) and the global token mean, equals TRL's loss and gradient."""
    jsd = _generalized_jsd_loss()
    student, teacher, labels = _logits(seed=2)
    table = {r: [["teacher", divergence, 1.0]] for r in ("HT", "HS", "LH", "LL")}
    cfg = DOPDLossConfig(preset="vanilla_opd_full_rkl", routing_table=table, loss_aggregation="token")
    s1 = student.clone().float().requires_grad_(True)
    s2 = student.clone().float().requires_grad_(True)
    theirs = jsd(s1, teacher.float(), labels=labels, beta=beta)
    ours = dopd_loss(s2, None, teacher.float(), labels, config=cfg).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    theirs.backward()
    ours.backward()
    torch.testing.assert_close(s2.grad, s1.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_distillation_trainer_chunked_loss_equals_ours(beta):
    """TRL's stable `DistillationTrainer` computes its loss from hidden states and lm_head weights in chunks
    (`_chunked_divergence_loss`, same beta convention): it equals our divergence on `hidden @ weight.T`."""
    chunked = pytest.importorskip("trl.trainer.distillation_trainer")._chunked_divergence_loss
    g = torch.Generator().manual_seed(3)
    H, V = 16, 53
    h_s, h_t = torch.randn(2, 6, H, generator=g), torch.randn(2, 6, H, generator=g)
    w_s, w_t = torch.randn(V, H, generator=g), torch.randn(V, H, generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    theirs, _, n_valid = chunked(h_s, h_t, w_s, w_t, mask, beta)
    valid = mask.bool()
    ours = OURS[beta](log_probs(h_s[valid] @ w_s.T), log_probs(h_t[valid] @ w_t.T)).mean()
    assert int(n_valid) == int(valid.sum())
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-5)
