"""dopd_loss against the brute-force reference; gradients; dtypes and masked vocabularies; edge cases."""

import pytest
import torch

import distill_reference as ref
from dopd.distill import REGIMES, DOPDLossConfig, dopd_loss


def make_batch(B=3, T=6, V=12, seed=0, v_teacher=None, ignore=True):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(B, T, V, generator=g) * 2
    priv = torch.randn(B, T, V, generator=g) * 2
    teacher = torch.randn(B, T, v_teacher or V, generator=g) * 2
    labels = torch.randint(0, V, (B, T), generator=g)
    if ignore:
        labels[0, :2] = -100  # prompt positions
        labels[1, 4:] = -100  # padding
    return student, priv, teacher, labels


def run_reference(student, priv, teacher, labels, table, cfg: DOPDLossConfig, keep=None):
    return ref.reference(
        student.tolist(), None if priv is None else priv.tolist(), None if teacher is None else teacher.tolist(),
        labels.tolist(), table, top_k=cfg.distill_top_k, trim=cfg.trim_fraction,
        temperature=cfg.distill_temperature, aggregation=cfg.loss_aggregation, support=cfg.topk_support,
        renormalize=cfg.topk_renormalize, keep=keep,
    )


def assert_matches(out, expected, labels):
    loss, per_token, regimes, _ = expected
    assert out.loss.item() == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert torch.allclose(out.per_token_loss.double(), torch.tensor(per_token, dtype=torch.float64), atol=2e-5)
    names = [[None if i < 0 else REGIMES[i] for i in row] for row in out.regimes.tolist()]
    if any(r is not None for row in regimes for r in row):
        assert names == regimes


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"loss_aggregation": "token"},
        {"distill_temperature": 0.8},
        {"topk_support": "target", "topk_renormalize": False},
        {"distill_top_k": 12},
        {"trim_fraction": 0.0, "beta_l": 0.5, "beta_w": 0.1},
    ],
)
def test_matches_reference(overrides):
    cfg = DOPDLossConfig(distill_top_k=overrides.pop("distill_top_k", 4), **overrides)
    student, priv, teacher, labels = make_batch()
    out = dopd_loss(student, priv, teacher, labels, cfg)
    expected = run_reference(student, priv, teacher, labels, ref.paper_table(cfg.beta_l, cfg.beta_w), cfg)
    assert_matches(out, expected, labels)
    assert set(ref_name for row in expected[2] for ref_name in row if ref_name) == set(REGIMES)


def test_defaults_are_the_papers():
    cfg = DOPDLossConfig()
    assert (cfg.distill_top_k, cfg.beta_l, cfg.beta_w, cfg.trim_fraction, cfg.distill_temperature,
            cfg.loss_aggregation) == (
        128, 0.6, 0.3, 0.05, 1.0, "sequence")
    assert (cfg.topk_support, cfg.topk_renormalize, cfg.preset) == ("student", True, "dopd")


def test_aggregation_sequence_versus_token_by_hand():
    student, priv, teacher, labels = make_batch()
    seq = dopd_loss(student, priv, teacher, labels, DOPDLossConfig(distill_top_k=4))
    tok = dopd_loss(student, priv, teacher, labels, DOPDLossConfig(distill_top_k=4, loss_aggregation="token"))
    valid = (labels != -100).double()
    pt = seq.per_token_loss.double()
    per_seq = pt.sum(1) / valid.sum(1)  # sequences of 4, 6, 4 valid tokens
    assert seq.loss.item() == pytest.approx(per_seq.mean().item(), rel=1e-6)
    assert tok.loss.item() == pytest.approx((pt.sum() / valid.sum()).item(), rel=1e-6)
    assert seq.loss.item() != pytest.approx(tok.loss.item(), rel=1e-4)


def test_gradient_matches_finite_differences_of_the_reference():
    student, priv, teacher, labels = make_batch(B=2, T=3, V=6, seed=3, ignore=False)
    labels[1, 2] = -100
    cfg = DOPDLossConfig(distill_top_k=3)
    table = ref.paper_table()
    z = student.clone().requires_grad_(True)
    dopd_loss(z, priv, teacher, labels, cfg).loss.backward()
    eps = 1e-4
    numeric = torch.zeros_like(student, dtype=torch.float64)
    base = student.double()
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in student.shape)).tolist():
        plus, minus = base.clone(), base.clone()
        plus[tuple(idx)] += eps
        minus[tuple(idx)] -= eps
        f = [run_reference(x, priv, teacher, labels, table, cfg)[0] for x in (plus, minus)]
        numeric[tuple(idx)] = (f[0] - f[1]) / (2 * eps)
    assert torch.allclose(z.grad.double(), numeric, atol=2e-4)
    assert (z.grad[1, 2] == 0).all()  # ignored position


def test_gradient_reaches_only_the_student():
    student, priv, teacher, labels = make_batch()
    s, p, t = (x.clone().requires_grad_(True) for x in (student, priv, teacher))
    out = dopd_loss(s, p, t, labels, DOPDLossConfig(distill_top_k=4))
    out.loss.backward()
    assert p.grad is None and t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert (s.grad[labels == -100] == 0).all()


def test_per_token_loss_is_differentiable():
    student, priv, teacher, labels = make_batch()
    cfg = DOPDLossConfig(distill_top_k=4, loss_aggregation="token")
    a = student.clone().requires_grad_(True)
    out = dopd_loss(a, priv, teacher, labels, cfg)
    out.loss.backward()
    b = student.clone().requires_grad_(True)
    dopd_loss(b, priv, teacher, labels, cfg).per_token_loss.sum().backward()
    n = int((labels != -100).sum())
    assert torch.allclose(b.grad, a.grad * n, atol=1e-5)
    # both outputs together: gradients add
    c = student.clone().requires_grad_(True)
    out = dopd_loss(c, priv, teacher, labels, cfg)
    (out.loss + out.per_token_loss.sum()).backward()
    assert torch.allclose(c.grad, a.grad * (n + 1), atol=1e-5)


def test_chunk_size_does_not_change_the_result():
    student, priv, teacher, labels = make_batch()
    outs = []
    for chunk in (1, 5, None):
        z = student.clone().requires_grad_(True)
        out = dopd_loss(z, priv, teacher, labels, DOPDLossConfig(distill_top_k=4), chunk_size=chunk)
        out.loss.backward()
        outs.append((out.loss.detach(), z.grad))
    for loss, grad in outs[1:]:
        assert torch.allclose(loss, outs[0][0], atol=1e-6) and torch.allclose(grad, outs[0][1], atol=1e-6)


def test_bf16_inputs_and_masked_vocabulary_stay_finite():
    student, priv, teacher, labels = make_batch(V=16)
    for x in (student, priv, teacher):
        x[..., 13:] = float("-inf")  # masked vocabulary in every model
    teacher[0, 3, labels[0, 3]] = float("-inf")  # the teacher rules out a sampled token
    labels = labels % 13
    labels[0, :2] = -100
    z = student.to(torch.bfloat16).requires_grad_(True)
    for preset in ("dopd", "ablate_full_vocab_everywhere", "vanilla_opd", "uniform_dual"):
        out = dopd_loss(z, priv.to(torch.bfloat16), teacher.to(torch.bfloat16), labels,
                        DOPDLossConfig(distill_top_k=4, preset=preset))
        (g,) = torch.autograd.grad(out.loss, z)
        assert out.loss.dtype == torch.float32
        assert torch.isfinite(out.loss) and torch.isfinite(out.per_token_loss).all(), preset
        assert torch.isfinite(g.float()).all() and g.dtype == torch.bfloat16, preset
        assert all(v == v for k, v in out.metrics.items() if k.startswith("threshold")), preset


def test_float32_masked_vocabulary_matches_reference():
    student, priv, teacher, labels = make_batch(V=10)
    for x in (student, priv, teacher):
        x[..., 8:] = float("-inf")
    labels = labels % 8
    labels[0, :2] = -100
    cfg = DOPDLossConfig(distill_top_k=4)
    out = dopd_loss(student, priv, teacher, labels, cfg)
    assert_matches(out, run_reference(student, priv, teacher, labels, ref.paper_table(), cfg), labels)


def test_padded_teacher_vocabulary_is_sliced():
    student, priv, teacher, labels = make_batch(v_teacher=15)
    cfg = DOPDLossConfig(distill_top_k=4)
    out = dopd_loss(student, priv, teacher, labels, cfg)
    sliced = dopd_loss(student, priv, teacher[..., :12].contiguous(), labels, cfg)
    assert torch.equal(out.per_token_loss, sliced.per_token_loss)
    assert_matches(out, run_reference(student, priv, teacher, labels, ref.paper_table(), cfg), labels)
    with pytest.raises(ValueError, match="fewer"):
        dopd_loss(student, priv, teacher[..., :10], labels, cfg)


def test_no_valid_token():
    student, priv, teacher, labels = make_batch()
    labels[:] = -100
    z = student.clone().requires_grad_(True)
    out = dopd_loss(z, priv, teacher, labels)
    out.loss.backward()
    assert out.loss.item() == 0.0 and (z.grad == 0).all() and (out.regimes == -1).all()


def test_input_errors():
    student, priv, teacher, labels = make_batch()
    with pytest.raises(ValueError, match="needs the teacher"):
        dopd_loss(student, priv, None, labels)
    with pytest.raises(ValueError, match="labels must be"):
        dopd_loss(student, priv, teacher, labels + 100)
    with pytest.raises(ValueError, match="student_logits"):
        dopd_loss(student[0], priv, teacher, labels)


def test_metrics_are_flat_floats():
    student, priv, teacher, labels = make_batch()
    out = dopd_loss(student, priv, teacher, labels, DOPDLossConfig(distill_top_k=4))
    expected = {f"{r}/{m}" for r in REGIMES for m in ("token_frac", "mean_gap", "mean_loss")}
    expected |= {"student_entropy", "threshold/gap", "threshold/q_s", "threshold/q_t"}
    assert expected <= set(out.metrics)
    assert all(isinstance(v, float) for v in out.metrics.values())
    valid = labels != -100
    p = torch.softmax(student.double(), -1)
    entropy = -(p * p.log()).sum(-1)[valid].mean().item()
    assert out.metrics["student_entropy"] == pytest.approx(entropy, rel=1e-5)
    for i, r in enumerate(REGIMES):
        m = out.regimes == i
        if m.any():
            assert out.metrics[f"{r}/mean_loss"] == pytest.approx(out.per_token_loss[m].mean().item(), rel=1e-5)
            assert out.metrics[f"{r}/mean_gap"] == pytest.approx(out.gap[m].mean().item(), rel=1e-5)
