"""A batch split into parts (the micro-batches of one optimizer step): with the whole batch's thresholds and
denominator passed to each part, the parts' losses sum to the whole batch's loss, value and gradient."""

import pytest
import torch

from dopd.distill import (
    DOPDLossConfig, compute_thresholds, dopd_loss, dopd_loss_from_hidden, routing_pass_from_hidden,
)


def _batch(seed=0, B=4, T=7, H=12, V=30):
    g = torch.Generator().manual_seed(seed)
    h = [torch.randn(B, T, H, generator=g) for _ in range(3)]
    w_s, w_t = torch.randn(V, H, generator=g), torch.randn(V, H, generator=g)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, 5:] = -100  # sequences of different lengths
    labels[2, 2:] = -100
    return h, w_s, w_t, labels


def _logq(hidden, weight, labels):
    lp = torch.log_softmax(hidden @ weight.T, -1)
    mask = labels.ne(-100)
    return lp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)[mask]


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
@pytest.mark.parametrize("path", ["logits", "hidden"])
def test_parts_with_batch_statistics_sum_to_the_whole(aggregation, path):
    (h_s, h_p, h_t), w_s, w_t, labels = _batch()
    cfg = DOPDLossConfig(distill_top_k=5, loss_aggregation=aggregation)

    def run(rows, **kw):
        hs = h_s[rows].clone().requires_grad_(True)
        ws = w_s.clone().requires_grad_(True)
        if path == "logits":
            out = dopd_loss(hs @ ws.T, h_p[rows] @ w_s.T, h_t[rows] @ w_t.T, labels[rows], cfg, chunk_size=3, **kw)
        else:
            out = dopd_loss_from_hidden(hs, h_p[rows], h_t[rows], labels[rows], ws, w_t, cfg, chunk_size=3, **kw)
        out.loss.backward()
        return out, hs.grad, ws.grad

    whole, g_h, g_w = run(slice(0, 4))
    thr = compute_thresholds(_logq(h_p, w_s, labels), _logq(h_t, w_t, labels), cfg.trim_fraction)
    n_tokens = int(labels.ne(-100).sum())
    denominator = n_tokens if aggregation == "token" else 4
    parts = [run(slice(i, i + 2), thresholds=thr, denominator=denominator) for i in (0, 2)]
    assert whole.metrics["threshold/gap"] == pytest.approx(thr.gap)
    for (out, _, _), i in zip(parts, (0, 2)):
        assert torch.equal(out.regimes, whole.regimes[i:i + 2])
        assert out.metrics["threshold/gap"] == thr.gap
    assert float(sum(p[0].loss.detach() for p in parts)) == pytest.approx(float(whole.loss.detach()), rel=1e-5)
    torch.testing.assert_close(torch.cat([p[1] for p in parts]), g_h, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(parts[0][2] + parts[1][2], g_w, rtol=1e-5, atol=1e-7)
    # the part's own statistics route differently (the test tells batch from part statistics apart)
    own = dopd_loss(h_s[:2] @ w_s.T, h_p[:2] @ w_s.T, h_t[:2] @ w_t.T, labels[:2], cfg)
    assert own.metrics["threshold/gap"] != pytest.approx(thr.gap)


@pytest.mark.parametrize("aggregation", ["sequence", "token"])
def test_a_routing_pass_handed_in_gives_the_same_loss_gradient_and_metrics(aggregation):
    """Pass 1 computed once (`routing_pass_from_hidden`, as the trainer does for the step's statistics) and handed
    to the loss equals the loss computing its own pass 1: value, gradients, regimes, every metric."""
    (h_s, h_p, h_t), w_s, w_t, labels = _batch(seed=3)
    cfg = DOPDLossConfig(distill_top_k=5, loss_aggregation=aggregation)

    def run(**kw):
        hs = h_s.clone().requires_grad_(True)
        ws = w_s.clone().requires_grad_(True)
        out = dopd_loss_from_hidden(hs, h_p, h_t, labels, ws, w_t, cfg, chunk_size=3, **kw)
        out.loss.backward()
        return out, hs.grad, ws.grad

    routing = routing_pass_from_hidden(h_p, h_t, labels, w_s, w_t, chunk_size=5)
    torch.testing.assert_close(routing.log_q_s, _logq(h_p, w_s, labels))
    torch.testing.assert_close(routing.log_q_t, _logq(h_t, w_t, labels))
    mask = labels.ne(-100)
    assert torch.equal(routing.teacher_top_is_label, (h_t @ w_t.T).argmax(-1)[mask] == labels[mask])
    own, g_h, g_w = run()
    given, g_h2, g_w2 = run(routing=routing)
    assert torch.equal(given.regimes, own.regimes)
    assert float(given.loss.detach()) == pytest.approx(float(own.loss.detach()), rel=1e-6)
    torch.testing.assert_close(g_h2, g_h)
    torch.testing.assert_close(g_w2, g_w)
    assert given.metrics.keys() == own.metrics.keys()
    for key, value in own.metrics.items():
        assert given.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-7, nan_ok=True), key


def test_a_routing_pass_over_other_tokens_is_refused():
    (h_s, h_p, h_t), w_s, w_t, labels = _batch()
    routing = routing_pass_from_hidden(h_p[:2], h_t[:2], labels[:2], w_s, w_t)
    with pytest.raises(ValueError, match="routing pass over"):
        dopd_loss_from_hidden(h_s, h_p, h_t, labels, w_s, w_t, DOPDLossConfig(), routing=routing)
