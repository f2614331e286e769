"""`routing_statistic: top1` and `teacher_veto`: a confidently rejected token leaves HS; the paper's default keeps it
there; both entry points agree with the brute-force reference; the new presets route as documented."""

import math

import pytest
import torch

import distill_reference as ref
from dopd.distill import REGIMES, DOPDLossConfig, dopd_loss, dopd_loss_from_hidden
from dopd.distill.passes import routing_pass
from dopd.hparams import ConfigError, DistillArguments
from test_loss import assert_matches, make_batch

# Four response tokens, V = 4, sampled token 0 everywhere. Token 0 is confidently rejected: the privileged student
# gives y 0.9, the teacher gives y 0.01 and puts 0.95 on token 1. Tokens 1-3: both policies agree on y.
PRIV = [[0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3], [0.8, 0.2 / 3, 0.2 / 3, 0.2 / 3], [0.7, 0.1, 0.1, 0.1],
        [0.3, 0.7 / 3, 0.7 / 3, 0.7 / 3]]
TEACHER = [[0.01, 0.95, 0.02, 0.02], [0.8, 0.2 / 3, 0.2 / 3, 0.2 / 3], [0.7, 0.1, 0.1, 0.1],
           [0.3, 0.7 / 3, 0.7 / 3, 0.7 / 3]]
# trim 0. Sampled (the paper): A = [log 90 = 4.50, 0, 0, 0] -> mean 1.125; token 0 high with q_T < q_S -> HS. Tokens
# 1-3: q_S + q_T = 1.6, 1.4, 0.6 against mean q_S 0.675 + mean q_T 0.4525 = 1.1275 -> LH, LH, LL.
# top1: A = [log(0.95 / 0.9) = 0.054, 0, 0, 0] -> mean 0.0135; token 0 high with max T 0.95 >= max S 0.9 -> HT.
# Tokens 1-3: max sums 1.6, 1.4, 0.6 against 0.675 + 0.6875 = 1.3625 -> LH, LH, LL.
# Veto (sampled statistics): token 0 has q_T 0.01 < 0.1 and is not the teacher's top choice -> HT; others unchanged.
EXPECTED = {
    "default": ["HS", "LH", "LH", "LL"],
    "veto": ["HT", "LH", "LH", "LL"],
    "top1": ["HT", "LH", "LH", "LL"],
}
CONFIGS = {
    "default": {},
    "veto": {"teacher_veto": True},
    "top1": {"routing_statistic": "top1"},
}


def _logits(rows):
    return torch.tensor([[[math.log(q) for q in row] for row in rows]], dtype=torch.float32)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_confidently_rejected_token(name):
    labels = torch.zeros(1, len(PRIV), dtype=torch.long)
    student = torch.randn(1, len(PRIV), 4, generator=torch.Generator().manual_seed(0))
    cfg = DOPDLossConfig(trim_fraction=0.0, **CONFIGS[name])
    out = dopd_loss(student, _logits(PRIV), _logits(TEACHER), labels, cfg)
    assert [REGIMES[i] for i in out.regimes[0].tolist()] == EXPECTED[name]
    # the hidden-state path (identity lm_heads over the logits as "hidden states") routes the same
    eye = torch.eye(4)
    out_h = dopd_loss_from_hidden(student, _logits(PRIV), _logits(TEACHER), labels, eye, eye, cfg, chunk_size=3)
    assert torch.equal(out_h.regimes, out.regimes)
    expected_rejected_in_hs = 1.0 if name == "default" else float("nan")
    got = out.metrics["HS/teacher_rejected_frac"]
    assert got == expected_rejected_in_hs or (math.isnan(got) and math.isnan(expected_rejected_in_hs))


def test_the_routing_pass_gives_each_policys_top1_probability():
    labels = torch.zeros(len(PRIV), dtype=torch.long)
    p, t = _logits(PRIV)[0], _logits(TEACHER)[0]
    rp = routing_pass({"privileged_student": lambda r: p[r], "teacher": lambda r: t[r]}, labels, chunk=3)
    assert rp.log_top_s.exp().tolist() == pytest.approx([0.9, 0.8, 0.7, 0.3], abs=1e-6)
    assert rp.log_top_t.exp().tolist() == pytest.approx([0.95, 0.8, 0.7, 0.3], abs=1e-6)
    assert rp.statistics("sampled") == (rp.log_q_s, rp.log_q_t)
    assert rp.statistics("top1") == (rp.log_top_s, rp.log_top_t)


@pytest.mark.parametrize("options", [{"routing_statistic": "top1"}, {"teacher_veto": True},
                                     {"teacher_veto": True, "teacher_veto_prob": 0.3},
                                     {"routing_statistic": "top1", "teacher_veto": True, "loss_aggregation": "token"}])
def test_options_match_the_reference_on_random_batches(options):
    cfg = DOPDLossConfig(distill_top_k=4, **options)
    student, priv, teacher, labels = make_batch(seed=5)
    out = dopd_loss(student, priv, teacher, labels, cfg)
    expected = ref.reference(
        student.tolist(), priv.tolist(), teacher.tolist(), labels.tolist(), ref.paper_table(cfg.beta_l, cfg.beta_w),
        top_k=cfg.distill_top_k, trim=cfg.trim_fraction, aggregation=cfg.loss_aggregation,
        statistic=cfg.routing_statistic,
        veto_prob=cfg.teacher_veto_prob if cfg.teacher_veto else None)
    assert_matches(out, expected, labels)
    # the chunked hidden-state path agrees (pass 1 computed there chunk by chunk from the heads)
    g = torch.Generator().manual_seed(1)
    H, V = 6, student.shape[-1]
    hs, hp, ht = (torch.randn(*labels.shape, H, generator=g) for _ in range(3))
    w_s, w_t = torch.randn(V, H, generator=g), torch.randn(V, H, generator=g)
    out_h = dopd_loss_from_hidden(hs, hp, ht, labels, w_s, w_t, cfg, chunk_size=4)
    out_l = dopd_loss(hs @ w_s.T, hp @ w_s.T, ht @ w_t.T, labels, cfg)
    assert torch.equal(out_h.regimes, out_l.regimes)
    assert out_h.loss.item() == pytest.approx(out_l.loss.item(), rel=1e-5)


def test_under_the_veto_no_rejected_token_is_left_outside_ht():
    student, priv, noise, _ = make_batch(B=4, T=20, V=10, seed=3, ignore=False)
    teacher = priv + 0.5 * noise  # a teacher that mostly agrees with the privileged student
    g = torch.Generator().manual_seed(3)
    labels = torch.multinomial(priv.softmax(-1).view(-1, 10), 1, generator=g).view(4, 20)  # sampled tokens
    labels[0, :3] = -100
    default = dopd_loss(student, priv, teacher, labels, DOPDLossConfig(distill_top_k=4))
    vetoed = dopd_loss(student, priv, teacher, labels, DOPDLossConfig(distill_top_k=4, teacher_veto=True))
    assert default.metrics["HS/teacher_rejected_frac"] > 0.3  # the illusion the veto removes
    assert vetoed.metrics["HS/token_frac"] > 0
    for r in ("HS", "LH", "LL"):
        got = vetoed.metrics[f"{r}/teacher_rejected_frac"]
        assert got == 0.0 or (math.isnan(got) and vetoed.metrics[f"{r}/token_frac"] == 0), r
    # tokens the teacher does not reject keep their regime (same thresholds: taken over every token)
    t_logp = teacher.log_softmax(-1)
    valid = labels != -100
    y = labels.clamp_min(0)
    q_t = t_logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).exp()
    rejected = valid & (q_t < 0.1) & (teacher.argmax(-1) != y)
    assert bool(rejected.any())
    assert (vetoed.regimes[rejected] == REGIMES.index("HT")).all()
    assert torch.equal(vetoed.regimes[valid & ~rejected], default.regimes[valid & ~rejected])
    assert vetoed.metrics["threshold/gap"] == default.metrics["threshold/gap"]


def test_first_token_regime_shares():
    student, priv, teacher, labels = make_batch(B=3, T=6, V=12, seed=0)  # row 0 starts at t=2, row 1 ends at t=4
    out = dopd_loss(student, priv, teacher, labels, DOPDLossConfig(distill_top_k=4))
    firsts = [out.regimes[0, 2:5], out.regimes[1, 0:3], out.regimes[2, 0:3]]
    first = torch.cat(firsts)
    for i, r in enumerate(REGIMES):
        assert out.metrics[f"{r}/first3_frac"] == pytest.approx(float((first == i).float().mean()))


def test_bad_values_are_config_errors():
    with pytest.raises(ValueError, match="routing_statistic"):
        DOPDLossConfig(routing_statistic="max")
    with pytest.raises(ValueError, match="teacher_veto_prob"):
        DOPDLossConfig(teacher_veto_prob=0.0)
    with pytest.raises(ConfigError, match="routing_statistic"):
        DOPDLossConfig.from_args(DistillArguments(routing_statistic="top2"), "dopd")
    cfg = DOPDLossConfig.from_args(DistillArguments(routing_statistic="top1", teacher_veto=True,
                                                    teacher_veto_prob=0.2), "dopd")
    assert (cfg.routing_statistic, cfg.teacher_veto, cfg.teacher_veto_prob) == ("top1", True, 0.2)
