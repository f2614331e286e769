"""The DOPD objective from logits: routing pass, loss pass, aggregation, metrics.

Both entry points (`dopd_loss` here, `dopd_loss_from_hidden` in chunked.py) run the same two passes over the
valid (response) tokens, in chunks of rows:

1. routing pass (no grad): log q_S and log q_T of the sampled tokens at temperature 1 -> trimmed batch means ->
   one regime per token -> per-term weights (and the pruning probe's mask) -> aggregation coefficients.
2. loss pass: per chunk, the student's log-probabilities, and for each (target, divergence) term of the routing
   table the divergence on only the rows whose regime uses it (targets evaluated on those rows only).

The student gradient is computed chunk by chunk *inside the forward* of a custom autograd.Function (a local
autograd graph over one chunk, released before the next), and kept as one row per token; backward only scales
those rows. Each per-token loss depends on its own logit row only, so row n of d(loss)/d(logits) is
(coefficient_n * grad_loss + grad_per_token_n) * d(L_n)/d(logits_n): the stored rows serve both `loss` and
`per_token_loss`. Peak memory is the inputs plus one gradient row per token plus one chunk's intermediates,
instead of every divergence intermediate of every token held until backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from .config import DOPDLossConfig
from .diagnostics import DiagnosticsProbe
from .divergences import FULL_FUNCTIONS, LOG_FLOOR, divergence, log_probs, renormalized
from .routing import (
    REGIMES, IGNORED, UNROUTED, Thresholds, assign_regimes, compute_thresholds, prune_keep_mask,
)

IGNORE_INDEX = -100
# rows of the valid-token list (a slice, or an index tensor) -> target logits [n, V] (no grad)
RowFn = Callable[[Union[slice, Tensor]], Tensor]
TermKey = tuple[str, str]


@dataclass
class DOPDLossOutput:
    """Result of the objective.

    loss: scalar (float32), differentiable wrt the student. per_token_loss: [B, T] float32, 0 at ignored and
    pruned positions (differentiable in `dopd_loss`, detached in `dopd_loss_from_hidden`). regimes: [B, T] long,
    an index into REGIMES, IGNORED (-1) at ignored positions, UNROUTED (-2) at response tokens when q_S or q_T
    was not computed. loss_mask: [B, T] bool, tokens that enter the loss (valid and not pruned). gap: [B, T]
    float32, A = |log q_T - log q_S| (0 where unknown). metrics: flat dict of floats (NaN where undefined).
    """

    loss: Tensor
    per_token_loss: Tensor
    regimes: Tensor
    metrics: dict[str, float]
    loss_mask: Tensor
    gap: Tensor


@dataclass
class Plan:
    """Everything decided before the loss pass, one entry per valid token (in flattened [B*T] order)."""

    labels: Tensor  # [N] long, sampled token ids
    regimes: Tensor  # [N] long
    gap: Tensor  # [N] float32
    has_gap: bool
    keep: Tensor  # [N] bool, in the loss
    weights: dict[TermKey, Tensor]  # term -> [N] float32 weight (0: term not applied to that token)
    coeff: Tensor  # [N] float32, d(loss)/d(per-token loss)
    thresholds: Optional[Thresholds]


# ---------------------------------------------------------------------------------------------- pass 1
@torch.no_grad()
def sampled_logprobs(row_fn: RowFn, labels: Tensor, chunk: int,
                     on_rows: Optional[Callable[[slice, Tensor], None]] = None) -> Tensor:
    """log p(labels) at temperature 1 (float32, floored like `log_probs`), computed chunk by chunk; `on_rows(rows, z)`
    sees each chunk's logits (the diagnostics take the argmax there)."""
    n = labels.numel()
    out = torch.empty(n, dtype=torch.float32, device=labels.device)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        z = row_fn(rows).float()
        if on_rows is not None:
            on_rows(rows, z)
        lp = z.gather(-1, labels[rows].unsqueeze(-1)).squeeze(-1) - z.logsumexp(-1)
        out[rows] = lp.clamp_min(-1.0e4)
    return out


def _prune_generator(config: DOPDLossConfig, labels: Tensor) -> torch.Generator:
    """Seeded from prune_seed and the batch's token ids: reproducible, yet different from batch to batch."""
    ids = labels.detach().long().cpu()
    digest = int((ids * torch.arange(1, ids.numel() + 1)).sum()) if ids.numel() else 0
    return torch.Generator().manual_seed((config.prune_seed * 1_000_003 + digest) % (1 << 62))


def make_plan(
    config: DOPDLossConfig,
    labels: Tensor,
    seq: Tensor,
    num_seqs: int,
    log_q_s: Optional[Tensor],
    log_q_t: Optional[Tensor],
    generator: Optional[torch.Generator] = None,
    thresholds: Optional[Thresholds] = None,
    denominator: Optional[float] = None,
) -> Plan:
    """`thresholds` given: route with them (statistics of a larger batch, e.g. the optimizer step) instead of this
    call's. `denominator` given: the loss is this call's share of a larger batch's mean (see `dopd_loss`)."""
    n, device = labels.numel(), labels.device
    has_gap = log_q_s is not None and log_q_t is not None
    if has_gap:
        if thresholds is None and (n > 0 or config.routing_scope == "global"):
            # a global scope joins the collective even with no tokens
            thresholds = compute_thresholds(log_q_s, log_q_t, config.trim, config.routing_scope)
        regimes = assign_regimes(log_q_s, log_q_t, thresholds) if n > 0 else labels.new_empty(0)
        gap = (log_q_t - log_q_s).abs()
    else:
        if config.routed:
            raise ValueError("this routing table needs q_S and q_T: pass privileged-student and teacher inputs")
        regimes = torch.full((n,), UNROUTED, dtype=torch.long, device=device)
        gap = torch.zeros(n, dtype=torch.float32, device=device)
    if config.prune_mode == "random" and generator is None:
        generator = _prune_generator(config, labels)
    keep = prune_keep_mask(n, config.prune_mode, config.prune_fraction, gap if has_gap else None, generator, device)

    weights: dict[TermKey, Tensor] = {}
    routed = config.routed
    for key, per_regime in config.term_weights().items():
        per_regime = per_regime.to(device)
        w = per_regime[regimes] if routed else per_regime[0].expand(n)
        w = torch.where(keep, w, torch.zeros_like(w))
        if n > 0 and bool((w != 0).any()):
            weights[key] = w

    keepf = keep.float()
    if config.aggregation == "token":
        total = keepf.sum().clamp_min(1.0) if denominator is None else max(float(denominator), 1.0)
        coeff = keepf / total
    else:  # mean over sequences of each sequence's token mean
        counts = torch.zeros(num_seqs, dtype=torch.float32, device=device).index_add_(0, seq, keepf)
        num_nonempty = (counts > 0).sum().clamp_min(1).float() if denominator is None else max(float(denominator), 1.0)
        coeff = keepf / (counts[seq].clamp_min(1.0) * num_nonempty)
    return Plan(labels, regimes, gap, has_gap, keep, weights, coeff, thresholds)


# ---------------------------------------------------------------------------------------------- pass 2
def chunk_losses(
    s_logp: Tensor,
    rows: slice,
    plan: Plan,
    targets: dict[str, Optional[RowFn]],
    config: DOPDLossConfig,
    want_grad: bool = False,
) -> tuple[Tensor, Optional[Tensor]]:
    """Per-token loss (float32, detached) of the valid tokens `rows` (a slice of the list), and with `want_grad`
    its gradient wrt s_logp, row by row ([n, V]; row n is d L_n / d s_logp_n).

    s_logp: student log-probabilities [n, V] at the configured temperature. Each term's gradient is taken on its
    own rows and added into one buffer, so autograd never holds a [n, V] zero-filled gradient per term. Row
    subsets use advanced indexing / index_add_: on CPU, index_select of long rows is several times slower.
    """
    n, vocab = s_logp.shape
    per_tok = torch.zeros(n, dtype=torch.float32, device=s_logp.device)
    grad = torch.zeros_like(s_logp) if want_grad else None
    labels = plan.labels[rows]
    student_topk: Optional[Tensor] = None  # [n, K] indices, shared by the top-K terms of this chunk
    for (target, div), w_all in plan.weights.items():
        w = w_all[rows]
        sel = w.nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        every = sel.numel() == n
        row_fn = targets[target]
        with torch.no_grad():
            t_logp = log_probs(row_fn(rows if every else sel + rows.start), config.temperature)
        if div.endswith("_topk") and config.top_k < vocab:
            # gather the K entries straight from the chunk's rows: no [rows, V] copy of the student, and the
            # target's [rows, V] is released before the backward
            if config.topk_support == "student":
                if student_topk is None:
                    student_topk = s_logp.topk(config.top_k, dim=-1, sorted=False).indices
                idx = student_topk if every else student_topk[sel]
            else:
                idx = t_logp.topk(config.top_k, dim=-1, sorted=False).indices
            where = ((torch.arange(n, device=s_logp.device) if every else sel).unsqueeze(1), idx)
            s_in = s_logp[where]
            t_in = t_logp.gather(1, idx)
            del t_logp
            with torch.enable_grad():
                if want_grad:
                    s_in.requires_grad_(True)
                s_k, t_k = renormalized(s_in, t_in, config.topk_renormalize)
                val = FULL_FUNCTIONS[div[: -len("_topk")]](s_k, t_k)
        else:
            where = None
            s_in = (s_logp if every else s_logp[sel]).detach()
            with torch.enable_grad():
                if want_grad:
                    s_in.requires_grad_(True)
                val = divergence(div, s_in, t_logp, labels if every else labels[sel], top_k=config.top_k,
                                 topk_support=config.topk_support, topk_renormalize=config.topk_renormalize)
            del t_logp
        with torch.enable_grad():
            contrib = (w if every else w[sel]) * val
            g_in = torch.autograd.grad(contrib.sum(), s_in)[0] if want_grad else None
        del s_in, val
        if g_in is not None:
            if where is not None:  # [rows, K] entries of the support
                grad.index_put_(where, g_in, accumulate=True)
            elif every:
                grad.add_(g_in)
            else:
                grad.index_add_(0, sel, g_in)
            del g_in
        contrib = contrib.detach()
        per_tok = per_tok + contrib if every else per_tok.index_add(0, sel, contrib)
    return per_tok, grad


@torch.no_grad()
def _entropy(logp: Tensor) -> Tensor:
    return -torch.linalg.vecdot(logp.exp(), logp)  # one [n, V] temporary


GradSink = Callable[[int, int, Tensor], None]  # (start, end, d sum(L_n) / d z rows) -> stores what it needs


def loss_pass(
    student_rows: Callable[[int, int], Tensor],
    n: int,
    plan: Plan,
    targets: dict[str, Optional[RowFn]],
    config: DOPDLossConfig,
    chunk: int,
    sink: Optional[GradSink],
    device: torch.device,
    probe: Optional[DiagnosticsProbe] = None,
) -> tuple[Tensor, Tensor]:
    """Run pass 2 chunk by chunk; hand each chunk's logit-row gradients to `sink` (None: values only)."""
    per_tok = torch.zeros(n, dtype=torch.float32, device=device)
    entropy = torch.zeros(n, dtype=torch.float32, device=device)
    tau = config.temperature
    for start in range(0, n, chunk):
        end = min(n, start + chunk)
        rows = slice(start, end)
        # The graph starts at the student log-probabilities, not at the logits: the logits chunk is freed right
        # away and the log-softmax backward is applied by hand below (one [n, V] tensor instead of three).
        with torch.no_grad():
            z = student_rows(start, end)
            z_dtype = z.dtype
            s_logp = log_probs(z, tau)
            if probe is not None:
                probe.student_rows(rows, s_logp if tau == 1.0 else None, z)
            if tau != 1.0:
                entropy[rows] = _entropy(log_probs(z, 1.0))
            del z
            if tau == 1.0:
                entropy[rows] = _entropy(s_logp)
        pt, g = chunk_losses(s_logp, rows, plan, targets, config, want_grad=sink is not None)
        per_tok[rows] = pt
        if sink is not None:
            with torch.no_grad():
                # d/dz of clamp_min(log_softmax(z / tau), LOG_FLOOR): no gradient at floored entries, then
                # dz = (g - softmax * sum(g)) / tau; s_logp is not needed any more: exponentiated in place
                g.masked_fill_(s_logp <= LOG_FLOOR, 0.0)
                g_sum = g.sum(-1, keepdim=True)
                if probe is not None:  # before the in-place softmax backward below
                    probe.student_grad(rows, s_logp, g, g_sum)
                g.sub_(s_logp.exp_().mul_(g_sum))
                if tau != 1.0:
                    g.div_(tau)
                sink(start, end, g.to(z_dtype))
            del g
        del s_logp
    return per_tok, entropy


class _FusedLogitsLoss(torch.autograd.Function):
    """loss, per_token (both differentiable wrt student_logits), entropy (not differentiable)."""

    @staticmethod
    def forward(ctx, student_logits: Tensor, run: "_LogitsRun"):  # type: ignore[override]
        need = bool(ctx.needs_input_grad[0])
        flat = student_logits.detach().reshape(-1, student_logits.shape[-1])
        rows_grad = flat.new_empty(run.n, flat.shape[1]) if need else None  # every row is written

        def student_rows(start: int, end: int) -> Tensor:
            return flat[start:end] if run.dense else flat[run.flat_idx[start:end]]

        def sink(start: int, end: int, g: Tensor) -> None:
            rows_grad[start:end] = g

        per_tok, entropy = loss_pass(
            student_rows, run.n, run.plan, run.targets, run.config, run.chunk, sink if need else None, flat.device,
            run.probe,
        )
        loss = (per_tok * run.plan.coeff).sum()
        ctx.run = run
        ctx.shape = student_logits.shape
        ctx.save_for_backward(rows_grad if need else None)
        ctx.mark_non_differentiable(entropy)
        return loss, per_tok, entropy

    @staticmethod
    def backward(ctx, g_loss: Tensor, g_per_tok: Tensor, _g_entropy: Tensor):  # type: ignore[override]
        (rows_grad,) = ctx.saved_tensors
        if rows_grad is None:
            return None, None
        run = ctx.run
        scale = run.plan.coeff * g_loss + g_per_tok
        g_rows = (rows_grad.float() * scale.unsqueeze(1)).to(rows_grad.dtype)
        if run.dense:
            grad = g_rows
        else:
            grad = rows_grad.new_zeros(math.prod(ctx.shape[:-1]), ctx.shape[-1])
            grad[run.flat_idx] = g_rows
        return grad.view(ctx.shape), None


@dataclass
class _LogitsRun:
    n: int
    dense: bool  # every position is valid: rows are plain slices
    flat_idx: Tensor
    plan: Plan
    targets: dict[str, Optional[RowFn]]
    config: DOPDLossConfig
    chunk: int
    probe: Optional[DiagnosticsProbe] = None


# ---------------------------------------------------------------------------------------------- shared helpers
def valid_positions(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(flat indices of valid tokens [N], their labels [N], their sequence index [N])."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be [B, T], got shape {tuple(labels.shape)}")
    flat_labels = labels.reshape(-1)
    flat_idx = flat_labels.ne(IGNORE_INDEX).nonzero().squeeze(1)
    return flat_idx, flat_labels[flat_idx].long(), flat_idx // labels.shape[1]


def check_labels(labels_v: Tensor, vocab: int) -> None:
    if labels_v.numel() and (int(labels_v.min()) < 0 or int(labels_v.max()) >= vocab):
        raise ValueError(f"labels must be -100 or token ids in [0, {vocab}); got values outside that range")


def check_needed(config: DOPDLossConfig, priv: Optional[Tensor], teacher: Optional[Tensor], what: str) -> None:
    if config.needs_privileged_student and priv is None:
        raise ValueError(f"preset/table `{config.preset}` needs the privileged student's {what}; got None")
    if config.needs_teacher and teacher is None:
        raise ValueError(f"preset/table `{config.preset}` needs the teacher's {what}; got None")


def routing_logprobs(
    targets: dict[str, Optional[RowFn]], labels_v: Tensor, chunk: int, probe: Optional[DiagnosticsProbe] = None,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Pass 1. Computed whenever both targets are present (routing or, for unrouted presets, metrics only)."""
    priv, teacher = targets.get("privileged_student"), targets.get("teacher")
    if priv is None or teacher is None:
        return None, None
    hook = (lambda name: None) if probe is None else (lambda name: lambda rows, z: probe.target_rows(name, rows, z))
    return (sampled_logprobs(priv, labels_v, chunk, hook("privileged_student")),
            sampled_logprobs(teacher, labels_v, chunk, hook("teacher")))


def scatter_outputs(
    shape: tuple[int, int], flat_idx: Tensor, plan: Plan, per_tok: Tensor, entropy: Tensor, loss: Tensor,
    config: DOPDLossConfig,
) -> DOPDLossOutput:
    numel = shape[0] * shape[1]
    device = per_tok.device
    per_token = per_tok.new_zeros(numel).index_copy(0, flat_idx, per_tok).view(shape)
    regimes = torch.full((numel,), IGNORED, dtype=torch.long, device=device)
    regimes.index_copy_(0, flat_idx, plan.regimes)
    mask = torch.zeros(numel, dtype=torch.bool, device=device)
    mask.index_copy_(0, flat_idx, plan.keep)
    gap = torch.zeros(numel, dtype=torch.float32, device=device)
    gap.index_copy_(0, flat_idx, plan.gap)
    metrics = compute_metrics(plan, per_tok.detach(), entropy, config)
    return DOPDLossOutput(loss, per_token, regimes.view(shape), metrics, mask.view(shape), gap.view(shape))


def compute_metrics(plan: Plan, per_tok: Tensor, entropy: Tensor, config: DOPDLossConfig) -> dict[str, float]:
    """Per regime: token fraction, mean gap, mean loss; student entropy; thresholds. One device sync."""
    n = per_tok.numel()
    nan = float("nan")
    onehot = torch.zeros(n, len(REGIMES), dtype=torch.float32, device=per_tok.device)
    routed_rows = plan.regimes >= 0
    if bool(routed_rows.any()):
        onehot[routed_rows] = torch.nn.functional.one_hot(plan.regimes[routed_rows], len(REGIMES)).float()
    in_loss = onehot * plan.keep.float().unsqueeze(1)
    stats = torch.stack([
        onehot.sum(0), plan.gap @ onehot, in_loss.sum(0), per_tok @ in_loss,
    ]).tolist()
    counts, gap_sums, loss_counts, loss_sums = stats
    metrics: dict[str, float] = {"num_tokens": float(n)}
    for i, name in enumerate(REGIMES):
        metrics[f"{name}/token_frac"] = counts[i] / n if (n and plan.has_gap) else nan
        metrics[f"{name}/mean_gap"] = gap_sums[i] / counts[i] if counts[i] else nan
        metrics[f"{name}/mean_loss"] = loss_sums[i] / loss_counts[i] if loss_counts[i] else nan
    metrics["student_entropy"] = float(entropy.mean()) if n else nan
    thr = plan.thresholds
    metrics["threshold/gap"] = thr.gap if thr else nan
    metrics["threshold/q_s"] = thr.q_s if thr else nan
    metrics["threshold/q_t"] = thr.q_t if thr else nan
    if config.prune_mode is not None:
        metrics["pruned_frac"] = 1.0 - float(plan.keep.float().mean()) if n else nan
    return metrics


def _target_rows(logits: Optional[Tensor], flat_idx: Tensor, dense: bool, vocab: int, name: str) -> Optional[RowFn]:
    if logits is None:
        return None
    if logits.dim() != 3:
        raise ValueError(f"{name} logits must be [B, T, V], got shape {tuple(logits.shape)}")
    if logits.shape[-1] < vocab:
        raise ValueError(f"{name} logits have {logits.shape[-1]} vocabulary entries, fewer than the student's {vocab}")
    # a wider target (padded vocabulary) is sliced to the student's width: the extra rows are never sampled
    flat = logits.detach().reshape(-1, logits.shape[-1])[:, :vocab]

    def rows_fn(rows: Union[slice, Tensor]) -> Tensor:
        return flat[rows] if dense else flat[flat_idx[rows]]

    return rows_fn


# ---------------------------------------------------------------------------------------------- entry point
def dopd_loss(
    student_logits: Tensor,
    priv_student_logits: Optional[Tensor],
    teacher_logits: Optional[Tensor],
    labels: Tensor,
    config: Optional[DOPDLossConfig] = None,
    *,
    generator: Optional[torch.Generator] = None,
    chunk_size: Optional[int] = 1024,
    thresholds: Optional[Thresholds] = None,
    denominator: Optional[float] = None,
) -> DOPDLossOutput:
    """The routed DOPD objective from logits.

    student_logits [B, T, V] (the only differentiable input), priv_student_logits / teacher_logits [B, T, V']
    (V' >= V; sliced to V; stop-gradient; None where `config.needs_*` is False), labels [B, T]: the sampled
    token each position predicts, -100 at non-response positions. `generator` seeds the random pruning probe
    (default: from `config.prune_seed` and the batch's token ids). `chunk_size` bounds the transient memory of a
    chunk of rows; the result does not depend on it.

    A call can be one part of a larger batch (the micro-batches of an optimizer step, on every rank):
    `thresholds` (a `Thresholds`, e.g. `compute_thresholds` over the whole batch's log q_S, log q_T) routes with
    that batch's statistics instead of this call's; `denominator` makes the loss this call's share of the batch's
    mean: with `aggregation: token` the number of tokens of the whole batch, with `sequence` its number of
    (non-empty) sequences. Summing the calls' losses then gives the batch's loss.
    """
    config = config if config is not None else DOPDLossConfig()
    if student_logits.dim() != 3 or student_logits.shape[:2] != labels.shape:
        raise ValueError(
            f"student_logits must be [B, T, V] with labels [B, T]; got {tuple(student_logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    check_needed(config, priv_student_logits, teacher_logits, "logits")
    for name, other in (("privileged student", priv_student_logits), ("teacher", teacher_logits)):
        if other is not None and other.shape[:2] != labels.shape:
            raise ValueError(f"{name} logits must be [B, T, V'] like the student's; got {tuple(other.shape)}")
    B, T, V = student_logits.shape
    flat_idx, labels_v, seq = valid_positions(labels.to(student_logits.device))
    check_labels(labels_v, V)
    n = flat_idx.numel()
    dense = n == B * T
    targets = {
        "privileged_student": _target_rows(priv_student_logits, flat_idx, dense, V, "privileged student"),
        "teacher": _target_rows(teacher_logits, flat_idx, dense, V, "teacher"),
    }
    chunk = max(1, chunk_size or n or 1)
    probe = DiagnosticsProbe.for_targets(targets, labels_v)  # None unless both privileged policies are scored
    log_q_s, log_q_t = routing_logprobs(targets, labels_v, chunk, probe)
    plan = make_plan(config, labels_v, seq, B, log_q_s, log_q_t, generator, thresholds, denominator)
    run = _LogitsRun(n, dense, flat_idx, plan, targets, config, chunk, probe)
    loss, per_tok, entropy = _FusedLogitsLoss.apply(student_logits, run)
    out = scatter_outputs((B, T), flat_idx, plan, per_tok, entropy, loss, config)
    if probe is not None:
        out.metrics.update(probe.metrics(plan.regimes, log_q_s, log_q_t))
    return out
