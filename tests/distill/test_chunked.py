"""dopd_loss_from_hidden == dopd_loss on the logits it would build, in value and gradient."""

import pytest
import torch

from dopd.distill import DOPDLossConfig, dopd_loss, dopd_loss_from_hidden

B, T, H, HT, V = 3, 9, 16, 24, 40


def make_hidden(seed=0, v_teacher=V, bias=False):
    g = torch.Generator().manual_seed(seed)
    h_s = torch.randn(B, T, H, generator=g)
    h_p = torch.randn(B, T, H, generator=g)
    h_t = torch.randn(B, T, HT, generator=g)
    head_s = torch.nn.Linear(H, V, bias=bias)
    head_t = torch.nn.Linear(HT, v_teacher, bias=bias)
    with torch.no_grad():
        head_s.weight.copy_(torch.randn(V, H, generator=g) * 0.7)
        head_t.weight.copy_(torch.randn(v_teacher, HT, generator=g) * 0.7)
        if bias:
            head_s.bias.copy_(torch.randn(V, generator=g))
            head_t.bias.copy_(torch.randn(v_teacher, generator=g))
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :3] = -100
    labels[2, 6:] = -100
    return h_s, h_p, h_t, head_s, head_t, labels


def by_logits(h_s, h_p, h_t, head_s, head_t, labels, cfg):
    """Reference: full logits through nn.Linear, then dopd_loss; gradients by autograd through the heads."""
    h = h_s.clone().requires_grad_(True)
    head_s.zero_grad()
    out = dopd_loss(head_s(h), None if h_p is None else head_s(h_p), None if h_t is None else head_t(h_t), labels, cfg)
    out.loss.backward()
    grads = (h.grad, head_s.weight.grad.clone(), None if head_s.bias is None else head_s.bias.grad.clone())
    return out, grads


def by_hidden(h_s, h_p, h_t, head_s, head_t, labels, cfg, chunk):
    h = h_s.clone().requires_grad_(True)
    head_s.zero_grad()
    out = dopd_loss_from_hidden(h, h_p, h_t, labels, head_s, head_t, config=cfg, chunk_size=chunk)
    out.loss.backward()
    grads = (h.grad, head_s.weight.grad.clone(), None if head_s.bias is None else head_s.bias.grad.clone())
    return out, grads


def assert_same(a, b):
    (out_a, grads_a), (out_b, grads_b) = a, b
    assert torch.allclose(out_a.loss, out_b.loss, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out_a.per_token_loss.detach(), out_b.per_token_loss, atol=1e-5)
    assert torch.equal(out_a.regimes, out_b.regimes) and torch.equal(out_a.loss_mask, out_b.loss_mask)
    for ga, gb in zip(grads_a, grads_b):
        if ga is not None:
            assert torch.allclose(ga, gb, rtol=1e-4, atol=1e-6)
    for key, value in out_a.metrics.items():
        assert value == pytest.approx(out_b.metrics[key], rel=1e-4, abs=1e-6, nan_ok=True), key


@pytest.mark.parametrize("chunk", [1, 4, 7, None])
def test_chunked_equals_unchunked(chunk):
    data = make_hidden()
    cfg = DOPDLossConfig(distill_top_k=8)
    assert_same(by_logits(*data, cfg), by_hidden(*data, cfg, chunk))


@pytest.mark.parametrize("preset,drop", [("vanilla_opd", "priv"), ("opsd", "teacher"), ("uniform_dual", None),
                                         ("ablate_no_teacher", None)])
def test_chunked_equals_unchunked_for_presets(preset, drop):
    h_s, h_p, h_t, head_s, head_t, labels = make_hidden(seed=1)
    if drop == "priv":
        h_p = None
    if drop == "teacher":
        h_t = head_t = None
    cfg = DOPDLossConfig(distill_top_k=8, preset=preset, loss_aggregation="token")
    data = (h_s, h_p, h_t, head_s, head_t, labels)
    assert_same(by_logits(*data, cfg), by_hidden(*data, cfg, 5))


def test_bias_padded_teacher_vocabulary_and_pruning():
    data = make_hidden(seed=2, v_teacher=V + 8, bias=True)
    cfg = DOPDLossConfig(distill_top_k=8, prune_mode="top", prune_fraction=0.2, distill_temperature=1.3)
    a, b = by_logits(*data, cfg), by_hidden(*data, cfg, 6)
    assert_same(a, b)
    assert b[1][2] is not None and b[1][2].abs().sum() > 0  # bias gradient
    assert not bool(b[0].loss_mask.all())


def test_lm_head_as_weight_tensor_and_frozen():
    h_s, h_p, h_t, head_s, head_t, labels = make_hidden(seed=3)
    cfg = DOPDLossConfig(distill_top_k=8)
    (ref_out, (ref_gh, _, _)) = by_logits(h_s, h_p, h_t, head_s, head_t, labels, cfg)
    w = head_s.weight.detach()  # frozen: no weight gradient
    h = h_s.clone().requires_grad_(True)
    out = dopd_loss_from_hidden(h, h_p, h_t, labels, w, head_t.weight.detach(), config=cfg, chunk_size=4)
    out.loss.backward()
    assert torch.allclose(out.loss, ref_out.loss, atol=1e-6) and torch.allclose(h.grad, ref_gh, atol=1e-6)
    # the hidden states' gradient flows on into whatever produced them
    x = torch.randn(B, T, H, requires_grad=True)
    out = dopd_loss_from_hidden(torch.tanh(x), h_p, h_t, labels, w, head_t.weight, config=cfg, chunk_size=4)
    out.loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_only_student_side_gets_gradient():
    h_s, h_p, h_t, head_s, head_t, labels = make_hidden(seed=4)
    h_p.requires_grad_(True)
    h_t.requires_grad_(True)
    out = dopd_loss_from_hidden(h_s.requires_grad_(True), h_p, h_t, labels, head_s, head_t,
                                DOPDLossConfig(distill_top_k=8), 5)
    out.loss.backward()
    assert h_p.grad is None and h_t.grad is None and head_t.weight.grad is None
    assert h_s.grad.abs().sum() > 0 and head_s.weight.grad.abs().sum() > 0


def test_bf16_hidden_path_is_finite_and_close():
    h_s, h_p, h_t, head_s, head_t, labels = make_hidden(seed=5)
    cfg = DOPDLossConfig(distill_top_k=8)
    ref_out, _ = by_hidden(h_s, h_p, h_t, head_s, head_t, labels, cfg, 4)
    head_s, head_t = head_s.to(torch.bfloat16), head_t.to(torch.bfloat16)
    h = h_s.to(torch.bfloat16).requires_grad_(True)
    out = dopd_loss_from_hidden(h, h_p.bfloat16(), h_t.bfloat16(), labels, head_s, head_t, config=cfg, chunk_size=4)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(h.grad.float()).all()
    assert h.grad.dtype == torch.bfloat16 and head_s.weight.grad.dtype == torch.bfloat16
    assert torch.isfinite(head_s.weight.grad.float()).all()
    assert out.loss.item() == pytest.approx(ref_out.loss.item(), rel=0.1)


def test_no_grad_mode_gives_values_only():
    data = make_hidden(seed=6)
    cfg = DOPDLossConfig(distill_top_k=8)
    ref_out, _ = by_logits(*data, cfg)
    with torch.no_grad():
        out = dopd_loss_from_hidden(data[0], data[1], data[2], data[5], data[3], data[4], config=cfg, chunk_size=5)
    assert not out.loss.requires_grad
    assert torch.allclose(out.loss, ref_out.loss, atol=1e-6)


def test_hidden_input_errors():
    h_s, h_p, h_t, head_s, head_t, labels = make_hidden()
    with pytest.raises(ValueError, match="teacher_lm_head"):
        dopd_loss_from_hidden(h_s, h_p, h_t, labels, head_s, None)
    small = torch.nn.Linear(HT, V - 1)
    with pytest.raises(ValueError, match="fewer"):
        dopd_loss_from_hidden(h_s, h_p, h_t, labels, head_s, small)
    with pytest.raises(ValueError, match="needs the privileged"):
        dopd_loss_from_hidden(h_s, None, h_t, labels, head_s, head_t)


def test_peak_memory_of_a_chunk_does_not_grow_with_tokens():
    """Largest tensor the hidden path allocates is [chunk, V] (traced with a dispatch mode), not [tokens, V]."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel())
            return out

    vocab, hidden, chunk = 500, 8, 16
    sizes = {}
    for tokens in (64, 256):
        g = torch.Generator().manual_seed(0)
        h = [torch.randn(1, tokens, hidden, generator=g) for _ in range(3)]
        w = torch.randn(vocab, hidden, generator=g, requires_grad=True)
        labels = torch.randint(0, vocab, (1, tokens), generator=g)
        h0 = h[0].requires_grad_(True)
        with Largest() as mode:
            out = dopd_loss_from_hidden(h0, h[1], h[2], labels, w, w.detach(), DOPDLossConfig(distill_top_k=8),
                                        chunk_size=chunk)
            out.loss.backward()
        sizes[tokens] = mode.largest
    assert sizes[64] == sizes[256] == vocab * max(chunk, hidden)  # one chunk of logits (or the [V, H] weight grad)


def test_second_backward_is_refused_clearly():
    h_s, h_p, h_t, head_s, head_t, labels = make_hidden(seed=7)
    out = dopd_loss_from_hidden(h_s.requires_grad_(True), h_p, h_t, labels, head_s, head_t,
                                DOPDLossConfig(distill_top_k=8))
    out.loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        out.loss.backward()


@pytest.mark.parametrize("mode", ["bf16 weights", "fp32 weights under autocast"])
def test_cpu_vocabulary_reductions_run_in_float32(mode):
    """On CPU the two products that sum over the vocabulary (d/d hidden = g @ W, d/d W = g^T @ h) run in float32: a
    bf16 matmul with a ~152k-long reduction took 494 s against 0.9 s in float32 on this AVX2 machine
    (docs/benchmarks.md). Checked at the dispatcher: no low-precision mm/addmm whose reduction runs over V."""
    from torch.utils._python_dispatch import TorchDispatchMode

    V, H = 96, 16
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 5, H, generator=g)
    head = torch.nn.Linear(H, V, bias=False)
    labels = torch.randint(0, V, (2, 5), generator=g)
    seen: list[tuple[str, torch.dtype, int]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket.__name__)
            if name in ("mm", "addmm"):
                a, b = (args[0], args[1]) if name == "mm" else (args[1], args[2])
                seen.append((name, a.dtype, a.shape[-1]))
            return func(*args, **(kwargs or {}))

    cfg = DOPDLossConfig(preset="opsd")  # the privileged student only: one lm_head
    if mode == "bf16 weights":
        head = head.to(torch.bfloat16)
        hs = h.to(torch.bfloat16).requires_grad_(True)
        context = torch.autocast("cpu", enabled=False)
    else:
        hs = h.clone().requires_grad_(True)
        context = torch.autocast("cpu", dtype=torch.bfloat16)
    with context, Record():
        out = dopd_loss_from_hidden(hs, h.to(hs.dtype), None, labels, head, None, cfg, chunk_size=4)
    out.loss.backward()
    reductions = [(name, dtype) for name, dtype, k in seen if k == V]
    assert reductions, "the gradient products over the vocabulary were not seen"
    assert all(dtype == torch.float32 for _, dtype in reductions), reductions
    assert torch.isfinite(hs.grad.float()).all() and torch.isfinite(head.weight.grad.float()).all()


def test_cpu_bf16_head_is_cast_to_float32_one_block_at_a_time(monkeypatch):
    """The float32 products of a bf16 head on CPU cast the weight a block of vocabulary rows at a time: no float32
    [V, H] copy of the whole head (297 MiB for a 151,936 x 512 one) beside the float32 gradient accumulator. The
    blocked result equals the one-block result."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import dopd.distill.chunked as chunked

    V, H = 96, 16
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 5, H, generator=g).to(torch.bfloat16)
    head = torch.nn.Linear(H, V, bias=False).to(torch.bfloat16)
    labels = torch.randint(0, V, (2, 5), generator=g)
    cfg = DOPDLossConfig(preset="opsd")

    def run(block: int) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
        monkeypatch.setattr(chunked, "_W_BLOCK_ROWS", block)
        casts: list[tuple[int, ...]] = []

        class Record(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if func.overloadpacket.__name__ == "_to_copy" and args[0].dtype == torch.bfloat16 \
                        and out.dtype == torch.float32:
                    casts.append(tuple(args[0].shape))
                return out

        hs = h.clone().requires_grad_(True)
        with torch.autocast("cpu", enabled=False), Record():
            out = dopd_loss_from_hidden(hs, h, None, labels, head, None, cfg, chunk_size=4)
        out.loss.backward()
        head.weight.grad = None
        return hs.grad.float(), casts

    grad_blocked, casts = run(32)
    assert (32, H) in casts and (V, H) not in casts, casts
    grad_whole, _ = run(1 << 20)
    torch.testing.assert_close(grad_blocked, grad_whole, rtol=1e-2, atol=1e-3)


def _vocab_rows(run) -> int:
    """Rows of every product the call makes whose output has V columns (an lm_head applied to hidden rows)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    total = [0]

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket.__name__ in ("mm", "addmm") and out.dim() == 2 and out.shape[1] == V:
                total[0] += out.shape[0]
            return out

    with Record():
        run()
    return total[0]


def test_topk_terms_score_targets_only_at_the_students_support():
    """With the student's renormalised top-K support (the default), a target's normaliser over V cancels: its K
    logits per row decide the term. So the loss pass applies a target's whole lm_head only to the rows whose term
    needs the whole distribution (DOPD: HT, full JS to the teacher); top-K rows gather K rows of the head. Counted
    at the dispatcher, and the result still equals the logits path."""
    from dopd.distill import routing_pass_from_hidden

    h_s, h_p, h_t, head_s, head_t, labels = make_hidden(seed=3)
    cfg = DOPDLossConfig(distill_top_k=8)
    n = int((labels != -100).sum())
    routing = routing_pass_from_hidden(h_p, h_t, labels, head_s, head_t)
    box = {}

    def loss_only():
        box["out"] = dopd_loss_from_hidden(h_s, h_p, h_t, labels, head_s, head_t, config=cfg, chunk_size=5,
                                           routing=routing)

    rows = _vocab_rows(loss_only)
    ht = int((box["out"].regimes == 0).sum())
    assert 0 < ht < n
    assert rows == n + ht  # the student's rows, and the teacher's on HT rows only (was 2 n: every row's target)
    assert_same(by_logits(h_s, h_p, h_t, head_s, head_t, labels, cfg), by_hidden(h_s, h_p, h_t, head_s, head_t,
                                                                                 labels, cfg, 5))
    # a support chosen by the target, or raw (unrenormalised) probabilities, need the target's whole row
    for other in (DOPDLossConfig(distill_top_k=8, topk_support="target"),
                  DOPDLossConfig(distill_top_k=8, topk_renormalize=False)):
        full = _vocab_rows(lambda: dopd_loss_from_hidden(h_s, h_p, h_t, labels, head_s, head_t, config=other,
                                                         chunk_size=5, routing=routing))
        assert full == 2 * n
        assert_same(by_logits(h_s, h_p, h_t, head_s, head_t, labels, other),
                    by_hidden(h_s, h_p, h_t, head_s, head_t, labels, other, 5))


class _LivePeak:
    """Peak bytes of live tensors with fresh storage allocated inside the block (a dispatch mode; views and inputs
    are not counted). CPU-only and approximate, but it sees every [rows, V] temporary the objective makes."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        probe = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                inputs = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves((args, kwargs))
                          if isinstance(a, torch.Tensor)}
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor) and t.numel() > 0:
                        probe.add(t, inputs)
                return out

        self.mode, self.live, self.current, self.peak = Mode(), {}, 0, 0

    def add(self, t, inputs):
        import weakref

        key = t.untyped_storage().data_ptr()
        if key in inputs or key in self.live:
            return
        self.live[key] = t.untyped_storage().nbytes()
        self.current += self.live[key]
        self.peak = max(self.peak, self.current)
        weakref.finalize(t, self.free, key)

    def free(self, key):
        self.current -= self.live.pop(key, 0)


def test_chunk_peak_is_three_rows_of_logits(monkeypatch):
    """Vanilla OPD with the full reverse KL (the TRL comparison): at its peak a chunk holds three [chunk, V] float32
    tensors (the student's log-probabilities, the target's, and the gradient) beside the [V, H] accumulator. The
    divergence's and the entropy's temporaries are per block of rows, and the first term's gradient is the buffer
    (no zero-filled one beside it). Before: 5.5 rows of logits."""
    import dopd.distill.divergences as divergences

    vocab, hidden, tokens, chunk = 3000, 16, 64, 32
    monkeypatch.setattr(divergences, "_BLOCK_ELEMENTS", 4 * vocab)
    g = torch.Generator().manual_seed(0)
    h_s, h_t = torch.randn(1, tokens, hidden, generator=g), torch.randn(1, tokens, hidden, generator=g)
    w, w_t = torch.randn(vocab, hidden, generator=g, requires_grad=True), torch.randn(vocab, hidden, generator=g)
    labels = torch.randint(0, vocab, (1, tokens), generator=g)
    hs = h_s.clone().requires_grad_(True)
    probe = _LivePeak()
    with probe.mode:
        out = dopd_loss_from_hidden(hs, None, h_t, labels, w, w_t, DOPDLossConfig(preset="vanilla_opd_full_rkl"),
                                    chunk_size=chunk)
        out.loss.backward()
    row_units = probe.peak / (chunk * vocab * 4)
    accumulator = vocab * hidden * 4 / (chunk * vocab * 4)
    blocks = 3 * 4 / chunk  # up to three temporaries of one 4-row block
    assert row_units <= 3 + accumulator + blocks, row_units
    assert torch.isfinite(hs.grad).all() and torch.isfinite(w.grad).all()
