"""The routing plan: everything the objective decides before its loss pass, per valid token.

From the routing statistics of pass 1 (`passes.routing_pass`: log q_S and log q_T of the sampled tokens, or each
policy's top-1 log-probability with `routing_statistic: top1`): the batch thresholds (or a larger batch's, handed
in), one regime per token (tokens the teacher vetoes forced to HT), the per-term weights of the routing table, the
pruning probe's mask and the aggregation coefficients (d loss / d per-token loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .config import DOPDLossConfig
from .routing import HT, UNROUTED, Thresholds, assign_regimes, compute_thresholds, prune_keep_mask

TermKey = tuple[str, str]  # (target, divergence)


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
    *,
    veto: Optional[Tensor] = None,
) -> Plan:
    """`log_q_s`, `log_q_t`: the routing statistics ([N], see `RoutingPass.statistics`). `thresholds` given: route
    with them (statistics of a larger batch, e.g. the optimizer step) instead of this call's. `denominator` given:
    the loss is this call's share of a larger batch's mean (see `dopd_loss`). `veto` ([N] bool): tokens routed to HT
    whatever their statistics (the teacher veto); the thresholds are still taken over every token."""
    n, device = labels.numel(), labels.device
    has_gap = log_q_s is not None and log_q_t is not None
    if has_gap:
        if thresholds is None and (n > 0 or config.rank_scope == "global"):
            # a global scope joins the collective even with no tokens
            thresholds = compute_thresholds(log_q_s, log_q_t, config.trim_fraction, config.rank_scope)
        regimes = assign_regimes(log_q_s, log_q_t, thresholds) if n > 0 else labels.new_empty(0)
        if veto is not None and n > 0:
            regimes = regimes.masked_fill(veto, HT)
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
    if config.loss_aggregation == "token":
        total = keepf.sum().clamp_min(1.0) if denominator is None else max(float(denominator), 1.0)
        coeff = keepf / total
    else:  # mean over sequences of each sequence's token mean
        counts = torch.zeros(num_seqs, dtype=torch.float32, device=device).index_add_(0, seq, keepf)
        num_nonempty = (counts > 0).sum().clamp_min(1).float() if denominator is None else max(float(denominator), 1.0)
        coeff = keepf / (counts[seq].clamp_min(1.0) * num_nonempty)
    return Plan(labels, regimes, gap, has_gap, keep, weights, coeff, thresholds)
