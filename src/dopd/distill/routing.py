"""Per-token routing: privilege gap, batch thresholds (trimmed means), the four regimes, the pruning probe.

All statistics are at temperature 1 and in float32: q_S = S(y | x, p, y<n) (privileged student), q_T = T(y | x, p,
y<n) (teacher), A = |log q_T - log q_S|. With `routing_statistic: top1` q_S and q_T are instead each privileged
policy's top-1 probability at the position (max_v S(v | x, p, y<n), max_v T(v | x, p, y<n)), whatever was sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

REGIMES = ("HT", "HS", "LH", "LL")
HT, HS, LH, LL = range(4)
IGNORED = -1  # `regimes` value at positions that are not response tokens (labels == -100)
UNROUTED = -2  # `regimes` value at response tokens when q_S or q_T was not computed (preset without routing)

ROUTING_STATISTICS = ("sampled", "top1")  # q at the sampled token (the paper) | each policy's top-1 probability

_QUANTILE_MAX = 1 << 24  # torch.quantile refuses larger inputs


@dataclass(frozen=True)
class Thresholds:
    """Batch thresholds: trimmed means of A, q_S and q_T."""

    gap: float
    q_s: float
    q_t: float


def quantile(x: Tensor, q: float) -> Tensor:
    """torch.quantile with linear interpolation; the same by sorting when the input is too large for it."""
    x = x.float().flatten()
    if x.numel() <= _QUANTILE_MAX:
        return torch.quantile(x, q, interpolation="linear")
    xs = x.sort().values
    pos = q * (xs.numel() - 1)
    lo = int(pos)
    hi = min(lo + 1, xs.numel() - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


def trimmed_mean(x: Tensor, trim: float) -> Tensor:
    """Mean of `x` after dropping its values above the (1 - trim) quantile (linear interpolation)."""
    x = x.float().flatten()
    if x.numel() == 0:
        return x.new_tensor(float("nan"))
    if trim <= 0:
        return x.mean()
    cut = quantile(x, 1.0 - trim)
    return x[x <= cut].mean()


def all_gather_varlen(x: Tensor) -> Tensor:
    """Concatenate a 1-D tensor across the default process group (ranks may hold different lengths)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    n = torch.tensor([x.numel()], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(int(s) for s in sizes))
    padded = x.new_zeros(longest)
    padded[: x.numel()] = x
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])


def compute_thresholds(log_q_s: Tensor, log_q_t: Tensor, trim: float, scope: str = "local") -> Thresholds:
    """Trimmed batch means of A, q_S and q_T over the given tokens (`scope="global"`: over all ranks)."""
    if scope == "global":
        log_q_s, log_q_t = all_gather_varlen(log_q_s), all_gather_varlen(log_q_t)
    gap = (log_q_t - log_q_s).abs()
    return Thresholds(
        gap=float(trimmed_mean(gap, trim)),
        q_s=float(trimmed_mean(log_q_s.exp(), trim)),
        q_t=float(trimmed_mean(log_q_t.exp(), trim)),
    )


ROUTING_UNITS = ("step", "micro_batch")
_OLD_SCOPES = {"local": False, "global": True}  # names before the step scope: one micro-batch, this rank / all ranks


def resolve_routing_scope(scope: str, across_ranks: bool = True) -> tuple[str, str]:
    """Config keys `routing_scope` + `routing_across_ranks` -> (unit, rank scope).

    unit: `step` (statistics over every micro-batch of the optimizer step) or `micro_batch` (each call on its own);
    rank scope: `global` (pooled over all data-parallel ranks) or `local` (this rank). The old values `local` and
    `global` mean one micro-batch on this rank / across ranks, whatever `across_ranks` says.
    """
    if scope in _OLD_SCOPES:
        return "micro_batch", "global" if _OLD_SCOPES[scope] else "local"
    if scope not in ROUTING_UNITS:
        raise ValueError(f"routing_scope must be one of {ROUTING_UNITS} (or the old local | global), got {scope!r}")
    return scope, "global" if across_ranks else "local"


def assign_regimes(log_q_s: Tensor, log_q_t: Tensor, thr: Thresholds) -> Tensor:
    """Regime index per token (into REGIMES). The four cases partition the tokens by construction."""
    gap = (log_q_t - log_q_s).abs()
    q_s, q_t = log_q_s.exp(), log_q_t.exp()
    high = gap >= thr.gap
    teacher_ge = q_t >= q_s
    confident = (q_s + q_t) >= (thr.q_s + thr.q_t)
    regimes = torch.full_like(log_q_s, LL, dtype=torch.long)
    regimes[~high & confident] = LH
    regimes[high & ~teacher_ge] = HS
    regimes[high & teacher_ge] = HT
    return regimes


def teacher_rejects(log_q_t: Tensor, teacher_top_is_label: Tensor, prob: float) -> Tensor:
    """True where the teacher rejects the sampled token: T(y | x, p, y<n) < `prob` and y is not its top choice."""
    return (log_q_t.float().exp() < prob) & ~teacher_top_is_label.bool()


def prune_keep_mask(
    n: int, mode: Optional[str], fraction: float, gap: Optional[Tensor], generator: Optional[torch.Generator],
    device: torch.device,
) -> Tensor:
    """Token-pruning probe: True for tokens kept in the loss.

    Drops round(fraction * n) tokens: those with the largest gap (`top`), the smallest (`bottom`), or a uniform
    random subset (`random`, drawn with `generator`, on the CPU, so a seed reproduces it on any device).
    """
    keep = torch.ones(n, dtype=torch.bool, device=device)
    if mode is None or n == 0:
        return keep
    n_drop = int(round(fraction * n))
    if n_drop <= 0:
        return keep
    if mode == "random":
        drop = torch.randperm(n, generator=generator)[:n_drop].to(device)
    elif mode in ("top", "bottom"):
        if gap is None:
            raise ValueError(f"prune_mode={mode!r} needs the gap A, i.e. both privileged-student and teacher logits")
        drop = (gap if mode == "top" else -gap).topk(n_drop).indices
    else:
        raise ValueError(f"prune_mode must be top | bottom | random | None, got {mode!r}")
    keep[drop] = False
    return keep
