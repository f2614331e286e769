"""Each divergence against a brute-force loop over the vocabulary, limiting cases, analytic gradients."""

import math

import pytest
import torch

import distill_reference as ref
from dopd.distill import divergence, log_probs

FULL = ("js", "rkl", "fkl")


def _pair(n=5, v=11, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, v, generator=g) * scale, torch.randn(n, v, generator=g) * scale


@pytest.mark.parametrize("name", FULL)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_full_divergence_matches_brute_force(name, temperature):
    s, t = _pair()
    got = divergence(name, log_probs(s, temperature), log_probs(t, temperature))
    for i in range(s.shape[0]):
        expected = ref.div(name, ref.softmax(s[i].tolist(), temperature), ref.softmax(t[i].tolist(), temperature), 0)
        assert got[i].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", ("js_topk", "rkl_topk", "fkl_topk"))
@pytest.mark.parametrize("support", ("student", "target"))
@pytest.mark.parametrize("renormalize", (True, False))
def test_topk_divergence_matches_brute_force(name, support, renormalize):
    s, t = _pair(seed=1)
    got = divergence(name, log_probs(s), log_probs(t), top_k=4, topk_support=support, topk_renormalize=renormalize)
    for i in range(s.shape[0]):
        expected = ref.div(name, ref.softmax(s[i].tolist()), ref.softmax(t[i].tolist()), 0, 4, support, renormalize)
        assert got[i].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_topk_student_support_differs_from_target_support():
    s, t = _pair(seed=2)
    a = divergence("rkl_topk", log_probs(s), log_probs(t), top_k=3, topk_support="student")
    b = divergence("rkl_topk", log_probs(s), log_probs(t), top_k=3, topk_support="target")
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("name", FULL + ("js_topk", "rkl_topk", "fkl_topk", "sampled_rkl"))
def test_identical_distributions_give_zero(name):
    s, _ = _pair(seed=3)
    labels = torch.randint(0, s.shape[1], (s.shape[0],))
    lp = log_probs(s)
    got = divergence(name, lp, lp.clone(), labels, top_k=4)
    assert torch.allclose(got, torch.zeros_like(got), atol=1e-6)


@pytest.mark.parametrize("base", FULL)
@pytest.mark.parametrize("k", [11, 50])
def test_topk_with_k_at_least_vocab_is_full(base, k):
    s, t = _pair(seed=4)
    full = divergence(base, log_probs(s), log_probs(t))
    for renorm in (True, False):
        topk = divergence(base + "_topk", log_probs(s), log_probs(t), top_k=k, topk_renormalize=renorm)
        assert torch.allclose(topk, full, atol=1e-6)


def test_divergence_values_by_hand():
    # s = (1/2, 1/2), t = (1/4, 3/4): KL(s||t) = 1/2 ln 2 + 1/2 ln(2/3); KL(t||s) = 1/4 ln(1/2) + 3/4 ln(3/2)
    s = torch.log(torch.tensor([[0.5, 0.5]]))
    t = torch.log(torch.tensor([[0.25, 0.75]]))
    assert divergence("rkl", s, t).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-7)
    assert divergence("fkl", s, t).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-7)
    # m = (3/8, 5/8): JS = 1/2 [1/4 ln(2/3) + 3/4 ln(6/5)] + 1/2 [1/2 ln(4/3) + 1/2 ln(4/5)]
    js = 0.5 * (0.25 * math.log(2 / 3) + 0.75 * math.log(6 / 5)) + 0.5 * (0.5 * math.log(4 / 3) + 0.5 * math.log(4 / 5))
    assert divergence("js", s, t).item() == pytest.approx(js, abs=1e-7)


def test_gradients_match_analytic_formulas():
    s, t = _pair(n=3, v=7, seed=5)
    t_lp = log_probs(t)
    p_t = t_lp.exp()
    for name in FULL:
        z = s.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(divergence(name, log_probs(z), t_lp).sum(), z)
        p = torch.softmax(s.double(), -1)
        q = p_t.double()
        if name == "rkl":  # d KL(s||t) / dz_j = s_j (log s_j - log t_j - KL)
            d = (p.log() - q.log())
            expected = p * (d - (p * d).sum(-1, keepdim=True))
        elif name == "fkl":  # d KL(t||s) / dz_j = s_j - t_j
            expected = p - q
        else:  # dJS/ds_j = 1/2 log(s_j / m_j), then through the softmax
            gs = 0.5 * (p.log() - ((p + q) / 2).log())
            expected = p * (gs - (p * gs).sum(-1, keepdim=True))
        assert torch.allclose(g.double(), expected, atol=1e-6), name


def test_sampled_rkl_value_and_reinforce_gradient():
    s, t = _pair(n=4, v=9, seed=6)
    y = torch.tensor([0, 3, 8, 2])
    z = s.clone().requires_grad_(True)
    val = divergence("sampled_rkl", log_probs(z), log_probs(t), y)
    p, q = torch.softmax(s.double(), -1), torch.softmax(t.double(), -1)
    rows = torch.arange(4)
    adv = p[rows, y].log() - q[rows, y].log()
    assert torch.allclose(val.double(), adv, atol=1e-6)
    (g,) = torch.autograd.grad(val.sum(), z)
    # (log s(y) - log t(y)) * d log s(y) / dz = adv * (onehot(y) - s)
    expected = adv.unsqueeze(1) * (torch.nn.functional.one_hot(y, 9).double() - p)
    assert torch.allclose(g.double(), expected, atol=1e-6)


@pytest.mark.parametrize("name", FULL + ("js_topk", "rkl_topk", "fkl_topk", "sampled_rkl"))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_masked_vocabulary_stays_finite(name, dtype):
    s, t = _pair(n=4, v=10, seed=7)
    s[:, 7:] = float("-inf")  # masked in both
    t[:, 7:] = float("-inf")
    t[0, 2] = float("-inf")  # masked in the target only, where the student has mass
    y = torch.tensor([1, 2, 3, 4])
    z = s.to(dtype).requires_grad_(True)
    val = divergence(name, log_probs(z), log_probs(t.to(dtype)), y, top_k=4)
    (g,) = torch.autograd.grad(val.sum(), z)
    assert torch.isfinite(val).all() and torch.isfinite(g.float()).all()
    if dtype == torch.float32:  # rows without a target-only mask equal the loop over the unmasked entries
        for i in range(1, 4):
            expected = ref.div(name, ref.softmax(s[i].tolist()), ref.softmax(t[i].tolist()), int(y[i]), 4)
            assert val[i].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
        if name != "sampled_rkl":
            assert val[0].item() > 0


def test_unknown_divergence():
    s, t = _pair()
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence("tvd", log_probs(s), log_probs(t))


def test_full_divergence_gradients_pass_gradcheck_for_both_inputs():
    from dopd.distill.divergences import _FullDivergence

    g = torch.Generator().manual_seed(8)
    for kind in FULL:
        s = torch.log_softmax(torch.randn(3, 6, generator=g, dtype=torch.float64), -1).requires_grad_(True)
        t = torch.log_softmax(torch.randn(3, 6, generator=g, dtype=torch.float64), -1).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a, b: _FullDivergence.apply(a, b, kind), (s, t)), kind


@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 6)])
def test_full_divergence_in_row_blocks_passes_gradcheck(monkeypatch, shape):
    """Blocks of 2 rows (a remainder block, and leading dims flattened): same values and gradients."""
    import dopd.distill.divergences as divergences
    from dopd.distill.divergences import _FullDivergence

    monkeypatch.setattr(divergences, "_BLOCK_ELEMENTS", 2 * shape[-1])
    g = torch.Generator().manual_seed(9)
    for kind in FULL:
        s = torch.log_softmax(torch.randn(*shape, generator=g, dtype=torch.float64), -1).requires_grad_(True)
        t = torch.log_softmax(torch.randn(*shape, generator=g, dtype=torch.float64), -1).requires_grad_(True)
        # values first: after gradcheck, a row the blocks skipped could still hold its value in reused memory
        got = _FullDivergence.apply(s, t, kind).detach().reshape(-1)
        rows_s, rows_t = s.detach().exp().reshape(-1, shape[-1]), t.detach().exp().reshape(-1, shape[-1])
        for i in range(got.numel()):  # the brute-force reference of this module
            assert got[i].item() == pytest.approx(getattr(ref, kind)(rows_s[i].tolist(), rows_t[i].tolist()),
                                                  rel=1e-9, abs=1e-12)
        assert torch.autograd.gradcheck(lambda a, b: _FullDivergence.apply(a, b, kind), (s, t)), kind
