"""The DOPD objective from logits: routing pass, loss pass, aggregation, metrics.

Both entry points (`dopd_loss` here, `dopd_loss_from_hidden` in chunked.py) are thin: they check their inputs,
lay out the valid tokens (outputs.py), and run the same two passes (passes.py) around the routing plan (plan.py),
over the valid (response) tokens, in chunks of rows:

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
from typing import Optional, Union

import torch
from torch import Tensor

from .config import DOPDLossConfig
from .diagnostics import DiagnosticsProbe
from .outputs import IGNORE_INDEX, DOPDLossOutput, check_labels, check_needed, scatter_outputs, valid_positions
from .passes import RoutingPass, RowFn, diagnostics_of, loss_pass, plan_inputs, start_routing
from .plan import Plan, make_plan
from .routing import Thresholds

__all__ = ["IGNORE_INDEX", "DOPDLossOutput", "dopd_loss"]


class _FusedLogitsLoss(torch.autograd.Function):
    """loss, per_token (both differentiable wrt student_logits), entropy (not differentiable)."""

    @staticmethod
    def forward(ctx, student_logits: Tensor, run: "_LogitsRun"):  # type: ignore[override]
        need = bool(ctx.needs_input_grad[0])
        flat = student_logits.detach().reshape(-1, student_logits.shape[-1])
        rows_grad = flat.new_empty(run.n, flat.shape[1]) if need else None  # every row is written

        def student_rows(start: int, end: int) -> Tensor:
            return flat[start:end] if run.dense else flat[run.flat_idx[start:end]]

        def sink(start: int, end: int, g: Tensor, dtype: torch.dtype) -> None:
            rows_grad[start:end] = g  # cast to the logits' dtype on assignment

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


# ---------------------------------------------------------------------------------------------- helpers
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
    routing: Optional[RoutingPass] = None,
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
    (non-empty) sequences. Summing the calls' losses then gives the batch's loss. `routing`: pass 1 already
    computed over these labels (`passes.routing_pass`, e.g. when the batch's thresholds were computed): not
    computed again.
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
    routing, probe = start_routing(targets, labels_v, chunk, routing)
    stat_s, stat_t, veto = plan_inputs(routing, config)
    plan = make_plan(config, labels_v, seq, B, stat_s, stat_t, generator, thresholds, denominator, veto=veto)
    run = _LogitsRun(n, dense, flat_idx, plan, targets, config, chunk, probe)
    loss, per_tok, entropy = _FusedLogitsLoss.apply(student_logits, run)
    out = scatter_outputs((B, T), flat_idx, plan, per_tok, entropy, loss, config)
    out.metrics.update(diagnostics_of(probe, plan, routing))
    return out
