"""A batch split into parts (the micro-batches of one optimizer step): with the whole batch's thresholds and
denominator passed to each part, the parts' losses sum to the whole batch's loss, value and gradient."""

import pytest
import torch

from dopd.distill import DOPDLossConfig, compute_thresholds, dopd_loss, dopd_loss_from_hidden


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
    cfg = DOPDLossConfig(top_k=5, aggregation=aggregation)

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
    thr = compute_thresholds(_logq(h_p, w_s, labels), _logq(h_t, w_t, labels), cfg.trim)
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
