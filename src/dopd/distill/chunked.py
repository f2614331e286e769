"""The DOPD objective from hidden states: lm_head applied per chunk of tokens, never [tokens x V] at once.

Same two passes as `dopd_loss` (see loss.py). Pass 1 (no grad) applies the privileged student's and the
teacher's lm_head chunk by chunk and keeps only log q of the sampled tokens. Pass 2 applies the student lm_head
to one chunk, computes the routed terms (targets' lm_heads applied only to the rows routed to them, and for a
top-K term on the student's renormalised support only at those K ids, from K gathered head rows), and takes
the gradient of the chunk's weighted loss wrt the chunk's logits at once; it is contracted right away into
d/d(hidden) ([N, H]) and accumulated into d/d(lm_head weight) ([V, H]) and bias. Backward only scales these.
Peak extra memory: one chunk's [chunk x V] intermediates + [N, H] + one [V, H] accumulator (only when the lm_head
weight requires grad), independent of T x V.

`per_token_loss` is detached on this path (the weight gradient is accumulated with the loss's coefficients).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DOPDLossConfig
from .driver import Run, Targets, ValidTokens, check_inputs, run_objective
from .outputs import DOPDLossOutput, check_labels
from .passes import HeadRows, RoutingPass, routing_pass
from .routing import Thresholds

LMHead = Union[torch.nn.Module, Tensor]
_W_BLOCK_ROWS = 16384  # vocabulary rows per low-precision weight-gradient product (see _HeadGradSink)


def _weight_bias(head: LMHead, name: str) -> tuple[Tensor, Optional[Tensor]]:
    if isinstance(head, Tensor):
        return head, None
    weight = getattr(head, "weight", None)
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"{name}: expected an nn.Linear-like module with `.weight` or a weight tensor, got {type(head)}"
        )
    bias = getattr(head, "bias", None)
    return weight, bias if isinstance(bias, Tensor) else None


class _HeadGradSink:
    """The gradient sink of the hidden-state path: takes d(sum of per-token losses)/d(logit rows) of a chunk and
    contracts it at once into d/d(hidden rows) ([N, H]) and d/d(lm_head weight, bias) ([V, H], [V]) accumulators, each
    row scaled by its aggregation coefficient (so `_FusedHiddenLoss.backward` only scales them by the loss's
    gradient). The [chunk, V] gradient is never kept."""

    def __init__(self, h_all: Tensor, w: Tensor, coeff: Tensor, grad_h: Optional[Tensor], grad_w: Optional[Tensor],
                 grad_b: Optional[Tensor]) -> None:
        self.h_all, self.w, self.coeff = h_all, w, coeff
        self.grad_h, self.grad_w, self.grad_b = grad_h, grad_w, grad_b
        # CPU: the two products that reduce over the vocabulary (g @ W, g^T @ h) run in float32. A bf16 matmul with a
        # ~152k-long reduction took 494 s against 0.9 s in float32 on an AVX2 CPU ([512, 151936] @ [151936, 512],
        # docs/benchmarks.md); autocast would cast float32 operands back to bf16, so it is off for them. The weight
        # is cast a block of vocabulary rows at a time (no float32 [V, H] copy of a bf16 head beside the float32
        # gradient accumulator: 297 MiB for a 151,936 x 512 head).
        self.cpu_float32 = w.device.type == "cpu" and (w.dtype != torch.float32 or torch.is_autocast_enabled("cpu"))

    def __call__(self, start: int, end: int, g: Tensor, dtype: torch.dtype) -> None:
        if self.cpu_float32:  # g is float32 already: no low-precision copy of it and no float32 copy back
            with torch.autocast("cpu", enabled=False):
                self._add(start, end, g)
        else:  # the logits' dtype, as autograd through the lm_head would hand it over
            self._add(start, end, g.to(dtype))

    def _g_times_w(self, g: Tensor) -> Tensor:
        w = self.w
        if not self.cpu_float32 or w.dtype == torch.float32:
            return g @ w
        out = g[:, :_W_BLOCK_ROWS] @ w[:_W_BLOCK_ROWS].float()
        for v0 in range(_W_BLOCK_ROWS, w.shape[0], _W_BLOCK_ROWS):
            out.addmm_(g[:, v0:v0 + _W_BLOCK_ROWS], w[v0:v0 + _W_BLOCK_ROWS].float())
        return out

    def _add(self, start: int, end: int, g: Tensor) -> None:
        # scale the [n, H] side by the coefficients rather than the [n, V] gradient (no [n, V] temporary)
        c = self.coeff[start:end].unsqueeze(1)
        h = self.h_all[start:end]
        grad_h, grad_w, grad_b = self.grad_h, self.grad_w, self.grad_b
        if grad_h is not None:
            grad_h[start:end] = (self._g_times_w(g).float() * c).to(grad_h.dtype)
        if grad_w is not None:
            hc = (h.float() * c).to(g.dtype)
            if g.dtype == torch.float32:
                grad_w.addmm_(g.t(), hc)
            else:
                # blocks of vocabulary rows: the rounded [rows, H] product and its float32 copy are per block,
                # not two more [V, H] matrices at the peak of the chunk (same products, same rounding)
                gt = g.t()
                for v0 in range(0, gt.shape[0], _W_BLOCK_ROWS):
                    grad_w[v0:v0 + _W_BLOCK_ROWS].add_((gt[v0:v0 + _W_BLOCK_ROWS] @ hc).float())
        if grad_b is not None:
            grad_b.add_((c.t().to(g.dtype) @ g).squeeze(0).float())


class _FusedHiddenLoss(torch.autograd.Function):
    """loss (differentiable wrt hidden, weight, bias), per_token and entropy (not differentiable)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, hidden: Tensor, weight: Tensor, bias: Optional[Tensor], run: Run, vocab: int
    ):
        need_h, need_w = bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1])
        need_b = bias is not None and bool(ctx.needs_input_grad[2])
        # Only the first `vocab` rows enter the distributions (the rest: padded vocabulary, never sampled). The
        # weight is sliced here, detached, as a view; the gradients are accumulated into the first rows of
        # full-size buffers, so autograd never pads a sliced gradient back to [V, H] (a second [V, H] copy).
        h_all, w = hidden.detach(), weight.detach()[:vocab]
        b = bias.detach()[:vocab] if bias is not None else None
        grad_h = torch.zeros_like(h_all) if need_h else None
        grad_w_full = torch.zeros(weight.shape, dtype=torch.float32, device=w.device) if need_w else None
        grad_b_full = torch.zeros(bias.shape[0], dtype=torch.float32, device=w.device) if need_b else None
        grad_w = grad_w_full[:vocab] if grad_w_full is not None else None
        grad_b = grad_b_full[:vocab] if grad_b_full is not None else None

        def student_rows(start: int, end: int) -> Tensor:
            return F.linear(h_all[start:end], w, b)

        sink = _HeadGradSink(h_all, w, run.plan.coeff, grad_h, grad_w, grad_b)
        per_tok, entropy = run.loss_pass(student_rows, sink if need_h or need_w or need_b else None, h_all.device)
        loss = (per_tok * run.plan.coeff).sum()
        # kept as attributes, not saved tensors: backward hands them over and scales them in place, so the
        # [V, H] accumulator becomes the weight's .grad without a second [V, H] copy
        ctx.grads = (grad_h, grad_w_full, grad_b_full)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(per_tok, entropy)
        return loss, per_tok, entropy

    @staticmethod
    def backward(ctx, g_loss: Tensor, _g_per_tok: Tensor, _g_entropy: Tensor):  # type: ignore[override]
        if ctx.grads is None:
            raise RuntimeError(
                "dopd_loss_from_hidden: backward ran twice through the same loss (its gradient is computed in the "
                "forward and handed over once); compute the loss again instead of retain_graph=True"
            )
        grads, ctx.grads = ctx.grads, None
        outs = tuple(
            None if g is None else g.mul_(g_loss).to(dtype) for g, dtype in zip(grads, ctx.dtypes)
        )
        return (*outs, None, None)


def _target_row_fns(
    priv_hidden: Optional[Tensor], teacher_hidden: Optional[Tensor], tokens: ValidTokens, w_s: Tensor,
    b_s: Optional[Tensor], teacher_lm_head: Optional[LMHead], vocab: int,
) -> Targets:
    """Row functions of the no-grad targets (`HeadRows`): valid-token rows -> float32 logits over the first `vocab`
    ids, or over K ids per row for the top-K terms.

    The targets' logit rows are handed over as float32 (what log_probs makes of them anyway): the low-precision
    [chunk, V] product is freed at once instead of living on next to its float32 copy and log-softmax."""
    targets: Targets = {"privileged_student": None, "teacher": None}
    if priv_hidden is not None:
        if priv_hidden.shape[:2] != tokens.shape or priv_hidden.shape[-1] != w_s.shape[1]:
            raise ValueError(
                f"priv_student_hidden must be [B, T, H] like the student's; got {tuple(priv_hidden.shape)}")
        h_p = tokens.rows(priv_hidden.detach())
        w_p, b_p = w_s.detach()[:vocab], b_s.detach()[:vocab] if b_s is not None else None
        targets["privileged_student"] = HeadRows(h_p, w_p, b_p)
    if teacher_hidden is not None:
        if teacher_lm_head is None:
            raise ValueError("teacher_hidden was given without teacher_lm_head")
        if teacher_hidden.shape[:2] != tokens.shape:
            raise ValueError(f"teacher_hidden must be [B, T, Ht] like labels; got {tuple(teacher_hidden.shape)}")
        w_t, b_t = _weight_bias(teacher_lm_head, "teacher_lm_head")
        if w_t.shape[0] < vocab:
            raise ValueError(f"teacher lm_head has {w_t.shape[0]} rows, fewer than the student's vocabulary {vocab}")
        w_t = w_t.detach()[:vocab]  # padded vocabulary: the rows past the student's are never sampled
        b_t = b_t.detach()[:vocab] if b_t is not None else None
        h_t = tokens.rows(teacher_hidden.detach())
        targets["teacher"] = HeadRows(h_t, w_t, b_t)
    return targets


def _vocab(w_s: Tensor, vocab_size: Optional[int]) -> int:
    vocab = w_s.shape[0] if vocab_size is None else min(int(vocab_size), w_s.shape[0])
    if vocab < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return vocab


@torch.no_grad()
def routing_pass_from_hidden(
    priv_student_hidden: Tensor,
    teacher_hidden: Tensor,
    labels: Tensor,
    student_lm_head: LMHead,
    teacher_lm_head: LMHead,
    chunk_size: Optional[int] = 1024,
    *,
    vocab_size: Optional[int] = None,
) -> RoutingPass:
    """Pass 1 of `dopd_loss_from_hidden` on its own (same inputs, same chunks, same values): log q_S and log q_T of
    the sampled tokens and the targets' top-choice flags. Computed once, it serves both the batch's routing
    statistics (`compute_thresholds`) and this part's loss (`routing=`), which then skips its own pass 1."""
    w_s, b_s = _weight_bias(student_lm_head, "student_lm_head")
    vocab = _vocab(w_s, vocab_size)
    tokens = ValidTokens.of_labels(labels, priv_student_hidden.device)
    check_labels(tokens.labels, vocab)
    targets = _target_row_fns(priv_student_hidden, teacher_hidden, tokens, w_s, b_s, teacher_lm_head, vocab)
    return routing_pass(targets, tokens.labels, tokens.chunk(chunk_size))


def dopd_loss_from_hidden(
    student_hidden: Tensor,
    priv_student_hidden: Optional[Tensor],
    teacher_hidden: Optional[Tensor],
    labels: Tensor,
    student_lm_head: LMHead,
    teacher_lm_head: Optional[LMHead] = None,
    config: Optional[DOPDLossConfig] = None,
    chunk_size: Optional[int] = 1024,
    *,
    generator: Optional[torch.Generator] = None,
    vocab_size: Optional[int] = None,
    thresholds: Optional[Thresholds] = None,
    denominator: Optional[float] = None,
    routing: Optional[RoutingPass] = None,
) -> DOPDLossOutput:
    """The routed DOPD objective from final hidden states, computed in chunks of `chunk_size` tokens.

    student_hidden [B, T, H] (differentiable), priv_student_hidden [B, T, H] (the same model on x+p; scored with
    the student's lm_head, stop-gradient), teacher_hidden [B, T, Ht] (stop-gradient), labels [B, T] as in
    `dopd_loss`. Each lm_head is an nn.Linear (bias used if present) or a [V, H] weight tensor; gradient reaches
    the student's weight/bias when they require grad. A teacher lm_head with more rows than the student's
    (padded vocabulary) is sliced to the student's V rows; fewer rows is an error. `chunk_size` None or 0: one
    chunk. Equals `dopd_loss(h_s @ W_s.T, h_p @ W_s.T, h_t @ W_t.T, labels, config)` in value and gradient.

    `vocab_size`: only the first `vocab_size` lm_head rows make up the distributions (checkpoints pad the output
    layer beyond the tokenizer; those rows are never sampled); None or more than the student's rows: all of its
    rows. Same value and gradient as passing heads sliced to `vocab_size` rows (the padding rows get zero
    gradient), without autograd materialising a zero-padded copy of the sliced weight's gradient.

    `thresholds`, `denominator`: this call as one part of a larger batch, as in `dopd_loss`. `routing`: pass 1
    already computed over these labels (`routing_pass_from_hidden`): not computed again.
    """
    config, tokens = check_inputs(config, student_hidden, priv_student_hidden, teacher_hidden, labels,
                                  "student_hidden", "[B, T, H]", "hidden states")
    w_s, b_s = _weight_bias(student_lm_head, "student_lm_head")
    vocab = _vocab(w_s, vocab_size)
    if w_s.shape[1] != student_hidden.shape[-1]:
        raise ValueError(f"student lm_head expects hidden size {w_s.shape[1]}, got {student_hidden.shape[-1]}")
    check_labels(tokens.labels, vocab)
    if priv_student_hidden is not None and priv_student_hidden.shape != student_hidden.shape:
        raise ValueError(f"priv_student_hidden must match student_hidden's shape {tuple(student_hidden.shape)}")
    targets = _target_row_fns(priv_student_hidden, teacher_hidden, tokens, w_s, b_s, teacher_lm_head, vocab)

    def fused(run: Run) -> tuple[Tensor, Tensor, Tensor]:
        h_s = tokens.rows(student_hidden)  # differentiable gather of the response rows
        return _FusedHiddenLoss.apply(h_s, w_s, b_s, run, vocab)

    return run_objective(tokens, targets, config, fused, chunk_size=chunk_size, generator=generator,
                         thresholds=thresholds, denominator=denominator, routing=routing)
