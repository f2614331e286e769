"""The objective's two passes over the valid (response) tokens, chunk by chunk of rows.

1. `routing_pass` (no grad): log q_S and log q_T of the sampled tokens at temperature 1, whether each is the
   target's top choice (the diagnostics, the teacher veto), and each target's top-1 log-probability (the `top1`
   routing statistic), all from the same logit rows. Its result can be computed once and handed to the loss (the trainer
   does so when it routes over the optimizer step).
2. `loss_pass`: per chunk, the student's log-probabilities, and for each (target, divergence) term of the routing
   table the divergence on only the rows whose regime uses it (targets evaluated on those rows only); the gradient
   wrt the chunk's logit rows is handed to a sink.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DOPDLossConfig
from .diagnostics import DiagnosticsProbe
from .divergences import FULL_FUNCTIONS, LOG_FLOOR, divergence, log_probs, renormalized, row_blocks
from .plan import Plan

# rows of the valid-token list (a slice, or an index tensor) -> target logits [n, V] (no grad)
RowFn = Callable[[Union[slice, Tensor]], Tensor]
# (start, end, d sum(L_n) / d z rows in float32, the logits' dtype) -> stores what it needs, cast as it needs
GradSink = Callable[[int, int, Tensor, torch.dtype], None]
_GATHERED_ELEMENTS = 1 << 24  # per [rows, K, H] block of lm_head rows gathered by `HeadRows.columns`


class HeadRows:
    """A no-grad target given by its final hidden states of the valid tokens [N, H] and an lm_head ([V, H] weight
    over the first V ids, optional bias). Called with rows it is a RowFn (float32 logits over all V ids); `columns`
    gives only K ids per row, [n, K], from K gathered rows of the head (n * K * H multiply-adds instead of n * V * H),
    which is all a top-K term on the student's renormalised support needs of it."""

    def __init__(self, hidden: Tensor, weight: Tensor, bias: Optional[Tensor]) -> None:
        self.hidden, self.weight, self.bias = hidden, weight, bias

    def __call__(self, rows: Union[slice, Tensor]) -> Tensor:
        return F.linear(self.hidden[rows], self.weight, self.bias).float()

    def columns(self, rows: Union[slice, Tensor], ids: Tensor) -> Tensor:
        h = self.hidden[rows]
        out = torch.empty(ids.shape, dtype=torch.float32, device=h.device)
        step = max(1, _GATHERED_ELEMENTS // max(1, ids.shape[1] * h.shape[1]))
        for r0 in range(0, h.shape[0], step):
            r1 = min(h.shape[0], r0 + step)
            block = ids[r0:r1]
            z = torch.bmm(self.weight[block], h[r0:r1].unsqueeze(-1)).squeeze(-1)  # [r, K]
            if self.bias is not None:
                z = z + self.bias[block]
            out[r0:r1] = z
        return out


# ---------------------------------------------------------------------------------------------- pass 1
@dataclass
class RoutingPass:
    """Pass 1 over N valid tokens: log q_S and log q_T of the sampled tokens (temperature 1, float32 [N]), whether
    each sampled token is the privileged student's / the teacher's top choice ([N] bool), and each one's top-1
    log-probability max_v log S(v | x, p, y<n), max_v log T(v | x, p, y<n) (float32 [N])."""

    log_q_s: Tensor
    log_q_t: Tensor
    priv_top_is_label: Tensor
    teacher_top_is_label: Tensor
    log_top_s: Tensor
    log_top_t: Tensor

    def statistics(self, kind: str = "sampled") -> tuple[Tensor, Tensor]:
        """The (privileged student's, teacher's) log-probabilities the regimes compare: at the sampled token
        (`sampled`, the paper) or each policy's top-1 (`top1`)."""
        if kind == "sampled":
            return self.log_q_s, self.log_q_t
        if kind == "top1":
            return self.log_top_s, self.log_top_t
        raise ValueError(f"routing_statistic must be sampled | top1, got {kind!r}")

    def check_matches(self, labels_v: Tensor) -> None:
        if self.log_q_s.numel() != labels_v.numel() or self.log_q_t.numel() != labels_v.numel():
            raise ValueError(
                f"routing: a routing pass over {self.log_q_s.numel()} tokens was given for {labels_v.numel()} valid "
                "tokens (compute it over the same labels)"
            )


@torch.no_grad()
def sampled_logprobs(row_fn: RowFn, labels: Tensor, chunk: int) -> tuple[Tensor, Tensor, Tensor]:
    """(log p(labels) at temperature 1, float32 and floored like `log_probs`; whether each label is the argmax;
    the top-1 log-probability max_v log p(v), floored alike), computed chunk by chunk from the same rows."""
    n = labels.numel()
    out = torch.empty(n, dtype=torch.float32, device=labels.device)
    top = torch.zeros(n, dtype=torch.bool, device=labels.device)
    best = torch.empty(n, dtype=torch.float32, device=labels.device)
    for start in range(0, n, chunk):
        rows = slice(start, min(n, start + chunk))
        z = row_fn(rows).float()
        top[rows] = z.argmax(-1) == labels[rows]
        lse = z.logsumexp(-1)
        lp = z.gather(-1, labels[rows].unsqueeze(-1)).squeeze(-1) - lse
        out[rows] = lp.clamp_min(-1.0e4)
        best[rows] = (z.amax(-1) - lse).clamp_min(-1.0e4)
    return out, top, best


def routing_pass(targets: dict[str, Optional[RowFn]], labels_v: Tensor, chunk: int) -> Optional[RoutingPass]:
    """Pass 1. Computed whenever both targets are present (routing or, for unrouted presets, metrics only)."""
    priv, teacher = targets.get("privileged_student"), targets.get("teacher")
    if priv is None or teacher is None:
        return None
    log_q_s, priv_top, log_top_s = sampled_logprobs(priv, labels_v, chunk)
    log_q_t, teacher_top, log_top_t = sampled_logprobs(teacher, labels_v, chunk)
    return RoutingPass(log_q_s, log_q_t, priv_top, teacher_top, log_top_s, log_top_t)


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
    n = s_logp.shape[0]
    per_tok = torch.zeros(n, dtype=torch.float32, device=s_logp.device)
    grad: Optional[Tensor] = None  # allocated by the first term (or taken over from it: see _add_term_grad)
    labels = plan.labels[rows]
    student_topk: dict[str, Tensor] = {}  # the chunk's [n, K] top-K ids, shared by its top-K terms
    for (target, div), w_all in plan.weights.items():
        w = w_all[rows]
        sel = w.nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        every = sel.numel() == n
        s_in, val, where = _term(div, s_logp, rows, sel, every, targets[target], labels, config, student_topk,
                                 want_grad)
        with torch.enable_grad():
            contrib = (w if every else w[sel]) * val
            g_in = torch.autograd.grad(contrib.sum(), s_in)[0] if want_grad else None
        del s_in, val
        if g_in is not None:
            grad = _add_term_grad(grad, g_in, s_logp, sel, every, where)
            del g_in
        contrib = contrib.detach()
        per_tok = per_tok + contrib if every else per_tok.index_add(0, sel, contrib)
    if want_grad and grad is None:  # no term on these rows
        grad = torch.zeros_like(s_logp)
    return per_tok, grad


def _term(
    div: str, s_logp: Tensor, rows: slice, sel: Tensor, every: bool, row_fn: RowFn, labels: Tensor,
    config: DOPDLossConfig, student_topk: dict[str, Tensor], want_grad: bool,
) -> tuple[Tensor, Tensor, Optional[tuple[Tensor, Tensor]]]:
    """One (target, divergence) term on the chunk's rows `sel` (all of them with `every`): the student's input to it
    (a leaf that requires grad with `want_grad`), the term per row, and where that input sits in the chunk's [n, V]
    (the [rows, K] entries of a top-K support; None: whole rows)."""
    n, vocab = s_logp.shape
    target_rows = rows if every else sel + rows.start
    if div.endswith("_topk") and config.distill_top_k < vocab:
        # gather the K entries straight from the chunk's rows: no [rows, V] copy of the student, and the
        # target's [rows, V] is released before the backward
        idx, t_in = _topk_target(s_logp, row_fn, target_rows, sel, every, config, student_topk)
        where = ((torch.arange(n, device=s_logp.device) if every else sel).unsqueeze(1), idx)
        s_in = s_logp[where]
        with torch.enable_grad():
            if want_grad:
                s_in.requires_grad_(True)
            s_k, t_k = renormalized(s_in, t_in, config.topk_renormalize)
            return s_in, FULL_FUNCTIONS[div[: -len("_topk")]](s_k, t_k), where
    with torch.no_grad():
        t_logp = log_probs(row_fn(target_rows), config.distill_temperature)
    s_in = (s_logp if every else s_logp[sel]).detach()
    with torch.enable_grad():
        if want_grad:
            s_in.requires_grad_(True)
        val = divergence(div, s_in, t_logp, labels if every else labels[sel], top_k=config.distill_top_k,
                         topk_support=config.topk_support, topk_renormalize=config.topk_renormalize)
    return s_in, val, None


@torch.no_grad()
def _topk_target(s_logp: Tensor, row_fn: RowFn, target_rows: Union[slice, Tensor], sel: Tensor, every: bool,
                 config: DOPDLossConfig, student_topk: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The K ids per row of a top-K term ([rows, K]: the student's top K, computed once per chunk, or the target's)
    and the target's input there (its log-probabilities at those ids, or its logits; see below)."""
    tau = config.distill_temperature
    if config.topk_support != "student":
        t_logp = log_probs(row_fn(target_rows), tau)
        idx = t_logp.topk(config.distill_top_k, dim=-1, sorted=False).indices
        return idx, t_logp.gather(1, idx)
    if "ids" not in student_topk:
        student_topk["ids"] = s_logp.topk(config.distill_top_k, dim=-1, sorted=False).indices
    idx = student_topk["ids"] if every else student_topk["ids"][sel]
    if config.topk_renormalize and isinstance(row_fn, HeadRows):
        # renormalised on the student's support, the target's normaliser over V cancels: its logits at the K ids
        # decide the term (equal to the full row's unless a log-probability there is below LOG_FLOOR, which finite
        # heads do not reach)
        t_in = row_fn.columns(target_rows, idx)
        return idx, (t_in / tau if tau != 1.0 else t_in)
    return idx, log_probs(row_fn(target_rows), tau).gather(1, idx)


def _add_term_grad(grad: Optional[Tensor], g_in: Tensor, s_logp: Tensor, sel: Tensor, every: bool,
                   where: Optional[tuple[Tensor, Tensor]]) -> Tensor:
    """A term's gradient (on its rows `sel`, or on the [rows, K] entries `where`) added into the chunk's [n, V]."""
    if grad is None and where is None and every and g_in.dtype == torch.float32 and g_in.is_contiguous():
        return g_in  # the first term's own [n, V] gradient: no zero-filled buffer beside it at the peak
    if grad is None:
        grad = torch.zeros_like(s_logp)
    if where is not None:  # [rows, K] entries of the support
        grad.index_put_(where, g_in, accumulate=True)
    elif every:
        grad.add_(g_in)
    else:
        grad.index_add_(0, sel, g_in)
    return grad


@torch.no_grad()
def _entropy(logp: Tensor) -> Tensor:
    out = torch.empty(logp.shape[0], dtype=torch.float32, device=logp.device)
    for rows in row_blocks(logp.shape[0], logp.shape[1]):  # a block's temporaries, not two more [n, V]
        out[rows] = -torch.linalg.vecdot(logp[rows].exp(), logp[rows])
    return out


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
    tau = config.distill_temperature
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
                sink(start, end, g, z_dtype)
            del g
        del s_logp
    return per_tok, entropy
