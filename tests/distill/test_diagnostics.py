"""Privilege-illusion diagnostics (dopd.distill.diagnostics): shares on hand-made tensors where each is known, the
step direction against a real gradient step, and the metrics the objective logs against a brute-force recount."""

import math

import pytest
import torch

from dopd.distill import REGIMES, DOPDLossConfig, dopd_loss, dopd_loss_from_hidden
from dopd.distill.diagnostics import DIAG_STATS, REJECT_PROB, diagnostic_metrics, logp_step_direction

HT, HS, LH, LL = range(4)


def _log(p):
    return torch.tensor(p, dtype=torch.float32).log()


def test_shares_on_hand_made_tokens():
    # six tokens: three in HS, one in each other regime
    regimes = torch.tensor([HS, HS, HS, HT, LH, LL])
    # teacher: token 0 rejected (q_T 0.05, not its top); token 1 has q_T 0.05 but IS the teacher's top (a flat
    # distribution): not rejected; token 2 q_T 0.5: not rejected; HT token 3 rejected; others not
    log_q_t = _log([0.05, 0.05, 0.5, 0.01, 0.9, 0.3])
    teacher_top = torch.tensor([False, True, False, False, True, False])
    # privileged student: its top choice differs from y on tokens 0 and 2 of HS and on the LL token
    log_q_s = _log([0.6, 0.2, 0.3, 0.5, 0.9, 0.2])
    priv_top = torch.tensor([True, True, False, True, True, False])
    log_s = _log([0.3, 0.4, 0.3, 0.25, 0.45, 0.2])
    # one gradient step raises log s(y) on tokens 0, 1, 2, 5, lowers it on 3, leaves 4 alone (no gradient)
    step_dir = torch.tensor([0.7, 0.1, 0.2, -1.0, 0.0, 0.3])
    m = diagnostic_metrics(regimes, log_s, log_q_s, log_q_t, teacher_top, priv_top, step_dir)

    assert set(m) == {f"{r}/{s}" for r in (*REGIMES, "all") for s in DIAG_STATS}
    assert m["HS/teacher_rejected_frac"] == pytest.approx(1 / 3)
    assert m["HT/teacher_rejected_frac"] == pytest.approx(1.0)
    assert m["LH/teacher_rejected_frac"] == 0.0 and m["LL/teacher_rejected_frac"] == 0.0
    assert m["all/teacher_rejected_frac"] == pytest.approx(2 / 6)
    assert m["HS/priv_top_differs_frac"] == pytest.approx(1 / 3)
    assert m["LL/priv_top_differs_frac"] == 1.0 and m["HT/priv_top_differs_frac"] == 0.0
    assert m["all/priv_top_differs_frac"] == pytest.approx(2 / 6)
    # mean log q_S - log s over the regime's tokens
    assert m["HS/priv_logp_gain"] == pytest.approx((math.log(2) + math.log(0.5) + 0.0) / 3, abs=1e-6)
    assert m["LH/priv_logp_gain"] == pytest.approx(math.log(2), abs=1e-6)
    # teacher's preference sign(log q_T - log s): HS - - +, HT -, LH +, LL +; steps: HS + + +, HT -, LH 0, LL +
    # HS agrees on token 2 only (1 of 3); HT agrees (both lower); LH has no gradient: undefined; LL agrees
    assert m["HS/grad_agrees_teacher_frac"] == pytest.approx(1 / 3)
    assert m["HT/grad_agrees_teacher_frac"] == 1.0
    assert math.isnan(m["LH/grad_agrees_teacher_frac"])
    assert m["LL/grad_agrees_teacher_frac"] == 1.0
    assert m["all/grad_agrees_teacher_frac"] == pytest.approx(3 / 5)
    # rejected tokens whose step raises log s(y): HS token 0 (raised), HT token 3 (lowered)
    assert m["HS/rejected_raised_frac"] == 1.0
    assert m["HT/rejected_raised_frac"] == 0.0
    assert math.isnan(m["LL/rejected_raised_frac"])  # no rejected token in LL
    assert m["all/rejected_raised_frac"] == pytest.approx(0.5)


def test_reject_threshold_and_step_stats_absent_without_gradient():
    regimes = torch.tensor([LH, LH])
    log_q_t = _log([REJECT_PROB * 1.001, REJECT_PROB * 0.999])
    m = diagnostic_metrics(regimes, _log([0.5, 0.5]), _log([0.5, 0.5]), log_q_t, torch.tensor([False, False]),
                           torch.tensor([True, True]), None)
    assert m["LH/teacher_rejected_frac"] == 0.5
    assert math.isnan(m["LH/grad_agrees_teacher_frac"]) and math.isnan(m["all/rejected_raised_frac"])
    assert math.isnan(m["HS/teacher_rejected_frac"])  # an empty regime is undefined, not 0


def test_step_direction_is_the_first_order_change_of_log_s_y():
    torch.manual_seed(0)
    n, V = 5, 9
    z = torch.randn(n, V, dtype=torch.float64) * 2
    labels = torch.randint(0, V, (n,))
    target = torch.log_softmax(torch.randn(n, V, dtype=torch.float64), -1)
    l_s = torch.log_softmax(z, -1).detach().requires_grad_(True)
    per_row = (l_s.exp() * (l_s - target)).sum(-1)  # reverse KL, any differentiable function of the row
    g = torch.autograd.grad(per_row.sum(), l_s)[0]
    direction = logp_step_direction(l_s.detach(), g, labels)
    # the same thing by a small gradient-descent step on the logits
    zz = z.clone().requires_grad_(True)
    loss = (torch.log_softmax(zz, -1).exp() * (torch.log_softmax(zz, -1) - target)).sum()
    (grad_z,) = torch.autograd.grad(loss, zz)
    eps = 1e-6
    before = torch.log_softmax(z, -1).gather(1, labels[:, None]).squeeze(1)
    after = torch.log_softmax(z - eps * grad_z, -1).gather(1, labels[:, None]).squeeze(1)
    assert torch.allclose(direction.double(), (after - before) / eps, rtol=1e-3, atol=1e-6)
    assert (direction.sign() != 0).all()


def _batch(B=3, T=7, V=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, p, t = (torch.randn(B, T, V, generator=g) * 2 for _ in range(3))
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :2] = -100
    labels[2, 5:] = -100
    return s, p, t, labels


def _brute_force(student, priv, teacher, labels, out, per_token_grad, temperature=1.0):
    """Recount every statistic from the raw logits, the returned regimes and autograd's per-row gradient."""
    valid = labels.ne(-100)
    y = labels.clamp_min(0).unsqueeze(-1)
    ls, lp, lt = (torch.log_softmax(x.float(), -1) for x in (student, priv, teacher))
    log_s, log_q_s, log_q_t = (x.gather(-1, y).squeeze(-1) for x in (ls, lp, lt))
    rejected = (log_q_t.exp() < REJECT_PROB) & (teacher.argmax(-1) != labels)
    differs = priv.argmax(-1) != labels
    # d log s(y) under a gradient-descent step on the token's own logits: -(e_y - s) . dL/dz (s at the loss's
    # temperature, the distribution the loss moves)
    e_y = torch.nn.functional.one_hot(labels.clamp_min(0), student.shape[-1]).float()
    step = -((e_y - torch.softmax(student.float() / temperature, -1)) * per_token_grad).sum(-1)
    pref = log_q_t - log_s
    expected = {}
    for name, mask in [*((r, valid & (out.regimes == i)) for i, r in enumerate(REGIMES)), ("all", valid)]:
        n = int(mask.sum())
        moved = mask & (step.abs() > 1e-7) & (pref != 0)
        rej = mask & rejected & (step.abs() > 1e-7)
        expected[f"{name}/teacher_rejected_frac"] = float(rejected[mask].float().mean()) if n else float("nan")
        expected[f"{name}/priv_top_differs_frac"] = float(differs[mask].float().mean()) if n else float("nan")
        expected[f"{name}/priv_logp_gain"] = float((log_q_s - log_s)[mask].mean()) if n else float("nan")
        expected[f"{name}/grad_agrees_teacher_frac"] = (
            float((step.sign() == pref.sign())[moved].float().mean()) if moved.any() else float("nan"))
        expected[f"{name}/rejected_raised_frac"] = float((step > 0)[rej].float().mean()) if rej.any() else float("nan")
    return expected


def _assert_close(metrics, expected):
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(metrics[key]), key
        else:
            assert metrics[key] == pytest.approx(value, abs=1e-5), key


@pytest.mark.parametrize("preset,extra", [("dopd", {}), ("uniform_dual", {}), ("ablate_no_student", {}),
                                          ("vanilla_opd", {"prune_mode": "top"}),
                                          ("dopd", {"distill_temperature": 0.7})])
def test_objective_logs_the_diagnostics_of_its_own_gradient(preset, extra):
    student, priv, teacher, labels = _batch()
    cfg = DOPDLossConfig(preset=preset, distill_top_k=4, **extra)
    s = student.clone().requires_grad_(True)
    out = dopd_loss(s, priv, teacher, labels, cfg, chunk_size=5)
    (grad,) = torch.autograd.grad(out.per_token_loss.sum(), s)  # row n: d L_n / d z_n
    expected = _brute_force(student, priv, teacher, labels, out, grad, cfg.distill_temperature)
    _assert_close(out.metrics, expected)
    assert expected["all/teacher_rejected_frac"] > 0  # the batch exercises the statistic
    if preset == "ablate_no_student":  # HS and LL get no loss: no gradient, no agreement to measure
        assert math.isnan(out.metrics["HS/grad_agrees_teacher_frac"])


def test_hidden_path_logs_the_same_diagnostics():
    torch.manual_seed(1)
    B, T, H, V = 2, 9, 6, 13
    hs, hp, ht = (torch.randn(B, T, H) for _ in range(3))
    w_s, w_t = torch.randn(V, H), torch.randn(V, H)
    labels = torch.randint(0, V, (B, T))
    labels[1, 6:] = -100
    cfg = DOPDLossConfig(distill_top_k=5)
    hs_ = hs.clone().requires_grad_(True)
    out_h = dopd_loss_from_hidden(hs_, hp, ht, labels, w_s, w_t, cfg, chunk_size=4)
    out_l = dopd_loss((hs @ w_s.T).requires_grad_(True), hp @ w_s.T, ht @ w_t.T, labels, cfg, chunk_size=7)
    keys = [k for k in out_l.metrics if k.split("/")[-1] in DIAG_STATS]
    assert len(keys) == 5 * len(DIAG_STATS)
    for key in keys:
        a, b = out_h.metrics[key], out_l.metrics[key]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-5), key


def test_no_diagnostics_when_a_privileged_policy_is_not_scored():
    student, _, teacher, labels = _batch()
    out = dopd_loss(student.requires_grad_(True), None, teacher, labels, DOPDLossConfig(preset="vanilla_opd"))
    assert not any(k.split("/")[-1] in DIAG_STATS for k in out.metrics)
