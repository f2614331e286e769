"""What the objective returns and checks: the output record, the valid-token layout, input checks, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .config import DOPDLossConfig
from .plan import Plan
from .routing import IGNORED, REGIMES

IGNORE_INDEX = -100
FIRST_TOKENS = 3  # `<R>/first3_frac`: the regimes of each sequence's first response tokens (where style is set)


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
    seq = flat_idx // shape[1]
    counts = torch.zeros(shape[0], dtype=torch.long, device=device).index_add_(0, seq, torch.ones_like(seq))
    rank = torch.arange(flat_idx.numel(), device=device) - (counts.cumsum(0) - counts)[seq]
    metrics = compute_metrics(plan, per_tok.detach(), entropy, config, first=rank < FIRST_TOKENS)
    return DOPDLossOutput(loss, per_token, regimes.view(shape), metrics, mask.view(shape), gap.view(shape))


def compute_metrics(plan: Plan, per_tok: Tensor, entropy: Tensor, config: DOPDLossConfig,
                    first: Optional[Tensor] = None) -> dict[str, float]:
    """Per regime: token fraction, mean gap, mean loss, and (`first`: [N] bool, each sequence's first response
    tokens) the share of those first tokens in the regime; student entropy; thresholds. One device sync."""
    n = per_tok.numel()
    nan = float("nan")
    onehot = torch.zeros(n, len(REGIMES), dtype=torch.float32, device=per_tok.device)
    routed_rows = plan.regimes >= 0
    if bool(routed_rows.any()):
        onehot[routed_rows] = torch.nn.functional.one_hot(plan.regimes[routed_rows], len(REGIMES)).float()
    in_loss = onehot * plan.keep.float().unsqueeze(1)
    firstf = first.float() if first is not None else torch.zeros(n, dtype=torch.float32, device=per_tok.device)
    stats = torch.stack([
        onehot.sum(0), plan.gap @ onehot, in_loss.sum(0), per_tok @ in_loss, firstf @ onehot,
    ]).tolist()
    counts, gap_sums, loss_counts, loss_sums, first_counts = stats
    num_first = sum(first_counts)
    metrics: dict[str, float] = {"num_tokens": float(n)}
    for i, name in enumerate(REGIMES):
        metrics[f"{name}/token_frac"] = counts[i] / n if (n and plan.has_gap) else nan
        metrics[f"{name}/mean_gap"] = gap_sums[i] / counts[i] if counts[i] else nan
        metrics[f"{name}/mean_loss"] = loss_sums[i] / loss_counts[i] if loss_counts[i] else nan
        routed_first = num_first and plan.has_gap
        metrics[f"{name}/first{FIRST_TOKENS}_frac"] = first_counts[i] / num_first if routed_first else nan
    metrics["student_entropy"] = float(entropy.mean()) if n else nan
    thr = plan.thresholds
    metrics["threshold/gap"] = thr.gap if thr else nan
    metrics["threshold/q_s"] = thr.q_s if thr else nan
    metrics["threshold/q_t"] = thr.q_t if thr else nan
    if config.prune_mode is not None:
        metrics["pruned_frac"] = 1.0 - float(plan.keep.float().mean()) if n else nan
    return metrics
