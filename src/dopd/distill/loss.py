"""The DOPD objective from logits: routing pass, loss pass, aggregation, metrics.

Both entry points (`dopd_loss` here, `dopd_loss_from_hidden` in chunked.py) are thin: they check their inputs and
hand their logit rows to the one driver (driver.py), which runs the same two passes (passes.py) around the routing
plan (plan.py), over the valid (response) tokens, in chunks of rows:

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
from typing import Optional, Union

import torch
from torch import Tensor

from .config import DOPDLossConfig
from .driver import Run, ValidTokens, check_inputs, run_objective
from .outputs import IGNORE_INDEX, DOPDLossOutput, check_labels
from .passes import RoutingPass, RowFn
from .routing import Thresholds

__all__ = ["IGNORE_INDEX", "DOPDLossOutput", "dopd_loss"]


class _FusedLogitsLoss(torch.autograd.Function):
    """loss, per_token (both differentiable wrt student_logits), entropy (not differentiable)."""

    @staticmethod
    def forward(ctx, student_logits: Tensor, run: Run):  # type: ignore[override]
        need = bool(ctx.needs_input_grad[0])
        tokens = run.tokens
        flat = student_logits.detach().reshape(-1, student_logits.shape[-1])
        rows_grad = flat.new_empty(tokens.n, flat.shape[1]) if need else None  # every row is written

        def student_rows(start: int, end: int) -> Tensor:
            return flat[start:end] if tokens.dense else flat[tokens.flat_idx[start:end]]

        def sink(start: int, end: int, g: Tensor, dtype: torch.dtype) -> None:
            rows_grad[start:end] = g  # cast to the logits' dtype on assignment

        per_tok, entropy = run.loss_pass(student_rows, sink if need else None, flat.device)
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
        if run.tokens.dense:
            grad = g_rows
        else:
            grad = rows_grad.new_zeros(math.prod(ctx.shape[:-1]), ctx.shape[-1])
            grad[run.tokens.flat_idx] = g_rows
        return grad.view(ctx.shape), None


# ---------------------------------------------------------------------------------------------- helpers
def _target_rows(logits: Optional[Tensor], tokens: ValidTokens, vocab: int, name: str) -> Optional[RowFn]:
    if logits is None:
        return None
    if logits.dim() != 3:
        raise ValueError(f"{name} logits must be [B, T, V], got shape {tuple(logits.shape)}")
    if logits.shape[-1] < vocab:
        raise ValueError(f"{name} logits have {logits.shape[-1]} vocabulary entries, fewer than the student's {vocab}")
    # a wider target (padded vocabulary) is sliced to the student's width: the extra rows are never sampled
    flat = logits.detach().reshape(-1, logits.shape[-1])[:, :vocab]
    dense, flat_idx = tokens.dense, tokens.flat_idx

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
    mean: with `loss_aggregation: token` the number of tokens of the whole batch, with `sequence` its number of
    (non-empty) sequences. Summing the calls' losses then gives the batch's loss. `routing`: pass 1 already
    computed over these labels (`passes.routing_pass`, e.g. when the batch's thresholds were computed): not
    computed again.
    """
    config, tokens = check_inputs(config, student_logits, priv_student_logits, teacher_logits, labels,
                                  "student_logits", "[B, T, V]", "logits")
    for name, other in (("privileged student", priv_student_logits), ("teacher", teacher_logits)):
        if other is not None and other.shape[:2] != labels.shape:
            raise ValueError(f"{name} logits must be [B, T, V'] like the student's; got {tuple(other.shape)}")
    vocab = student_logits.shape[-1]
    check_labels(tokens.labels, vocab)
    targets = {
        "privileged_student": _target_rows(priv_student_logits, tokens, vocab, "privileged student"),
        "teacher": _target_rows(teacher_logits, tokens, vocab, "teacher"),
    }
    return run_objective(
        tokens, targets, config, lambda run: _FusedLogitsLoss.apply(student_logits, run), chunk_size=chunk_size,
        generator=generator, thresholds=thresholds, denominator=denominator, routing=routing,
    )
