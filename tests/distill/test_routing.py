"""Thresholds by hand, the four masks partition the valid tokens, quantile fallback."""

import math

import numpy as np
import pytest
import torch

from dopd.distill import REGIMES, DOPDLossConfig, compute_thresholds, dopd_loss, trimmed_mean
from dopd.distill import routing

E = math.e
# Five response tokens, sampled token id 0 everywhere; probabilities chosen so that A = 0, 1, 2, 3, 4.
Q_S = [0.5, 0.05, 0.8, math.exp(-4), 0.9]
Q_T = [0.5, 0.05 * E, 0.8 * math.exp(-2), math.exp(-1), 0.9 * math.exp(-4)]
# trim = 0.1, n = 5: the 0.9 quantile sits at position 0.9 * 4 = 3.6 of the sorted values.
#   A sorted   = [0, 1, 2, 3, 4]                       -> cut = 3 + 0.6 * 1 = 3.6, drop 4 -> mean(0,1,2,3) = 1.5
#   q_S sorted = [0.018316, 0.05, 0.5, 0.8, 0.9]       -> cut = 0.8 + 0.6 * 0.1 = 0.86, drop 0.9
#                -> mean(0.5, 0.05, 0.8, 0.018316) = 1.368316 / 4 = 0.342079
#   q_T sorted = [0.016484, 0.108268, 0.135914, 0.367879, 0.5] -> cut = 0.367879 + 0.6 * 0.132121 = 0.447152,
#                drop 0.5 -> mean(0.135914, 0.108268, 0.367879, 0.016484) = 0.628545 / 4 = 0.157136
# Regimes: A >= 1.5 for tokens 2, 3, 4: token 2 q_T 0.108 < q_S 0.8 -> HS; token 3 q_T 0.368 >= q_S 0.018 -> HT;
# token 4 q_T 0.016 < 0.9 -> HS. Tokens 0, 1 (A < 1.5): q_S + q_T = 1.0 and 0.186 against 0.342079 + 0.157136
# = 0.499215 -> token 0 LH, token 1 LL.
EXPECTED_THRESHOLDS = (1.5, 0.342079, 0.157136)
EXPECTED_REGIMES = ["LH", "LL", "HS", "HT", "HS"]


def _logits_with_prob(qs, v=4):
    """[1, n, v] logits whose softmax gives probability q at token 0 and splits the rest evenly."""
    rows = [[math.log(q)] + [math.log((1 - q) / (v - 1))] * (v - 1) for q in qs]
    return torch.tensor([rows], dtype=torch.float32)


def test_thresholds_and_regimes_by_hand():
    log_q_s = torch.tensor(Q_S).log()
    log_q_t = torch.tensor(Q_T).log()
    thr = compute_thresholds(log_q_s, log_q_t, trim=0.1)
    assert (thr.gap, thr.q_s, thr.q_t) == pytest.approx(EXPECTED_THRESHOLDS, abs=2e-6)
    regimes = routing.assign_regimes(log_q_s, log_q_t, thr)
    assert [REGIMES[i] for i in regimes.tolist()] == EXPECTED_REGIMES


def test_dopd_loss_reports_the_hand_thresholds():
    n = len(Q_S)
    student = torch.randn(1, n, 4)
    labels = torch.zeros(1, n, dtype=torch.long)
    out = dopd_loss(student, _logits_with_prob(Q_S), _logits_with_prob(Q_T), labels, DOPDLossConfig(trim_fraction=0.1))
    got = (out.metrics["threshold/gap"], out.metrics["threshold/q_s"], out.metrics["threshold/q_t"])
    assert got == pytest.approx(EXPECTED_THRESHOLDS, abs=2e-6)
    assert [REGIMES[i] for i in out.regimes[0].tolist()] == EXPECTED_REGIMES
    assert out.gap[0].tolist() == pytest.approx([0, 1, 2, 3, 4], abs=1e-5)
    assert out.metrics["HS/token_frac"] == pytest.approx(0.4)
    assert out.metrics["HS/mean_gap"] == pytest.approx(3.0, abs=1e-5)


def test_trimmed_mean_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    assert trimmed_mean(x, 0.0).item() == pytest.approx(22.0)
    # 0.95 quantile: position 3.8 -> 4 + 0.8 * 96 = 80.8; 100 dropped -> mean(1,2,3,4) = 2.5
    assert trimmed_mean(x, 0.05).item() == pytest.approx(2.5)
    # 0.75 quantile: position 3 exactly -> cut = 4; values "above" the cut are dropped, 4 itself is kept
    assert trimmed_mean(x, 0.25).item() == pytest.approx(2.5)


def test_quantile_fallback_equals_torch_quantile(monkeypatch):
    x = torch.randn(1001)
    expected = torch.quantile(x, 0.95).item()
    monkeypatch.setattr(routing, "_QUANTILE_MAX", 10)
    assert routing.quantile(x, 0.95).item() == pytest.approx(expected, abs=1e-6)


def test_masks_partition_the_valid_tokens():
    g = torch.Generator().manual_seed(0)
    B, T, V = 4, 50, 30
    student = torch.randn(B, T, V, generator=g)
    priv = torch.randn(B, T, V, generator=g) * 2
    teacher = torch.randn(B, T, V, generator=g) * 2
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, :7] = -100
    labels[2, 30:] = -100
    out = dopd_loss(student, priv, teacher, labels)
    valid = labels != -100
    assert ((out.regimes >= 0) == valid).all() and (out.regimes[~valid] == -1).all()
    masks = [(out.regimes == i) for i in range(4)]
    assert (sum(m.long() for m in masks) == valid.long()).all()  # each valid token in exactly one regime
    assert sum(out.metrics[f"{r}/token_frac"] for r in REGIMES) == pytest.approx(1.0)

    # the conditions, recomputed in float64 with numpy's linear quantile
    lab = labels.clamp_min(0).unsqueeze(-1)
    qs = torch.softmax(priv.double(), -1).gather(-1, lab).squeeze(-1)[valid].numpy()
    qt = torch.softmax(teacher.double(), -1).gather(-1, lab).squeeze(-1)[valid].numpy()
    a = np.abs(np.log(qt) - np.log(qs))

    def tmean(x):
        return x[x <= np.quantile(x, 0.95)].mean()

    high = a >= tmean(a)
    expected = np.where(high, np.where(qt >= qs, 0, 1), np.where(qs + qt >= tmean(qs) + tmean(qt), 2, 3))
    assert (out.regimes[valid].numpy() == expected).all()
    for i in range(4):
        assert (expected == i).any(), f"regime {REGIMES[i]} empty: the example does not exercise it"
