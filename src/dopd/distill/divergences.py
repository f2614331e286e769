"""Per-token divergences between the student distribution s and a target distribution t.

Every function takes log-probabilities over the last dimension (float32, as made by `log_probs`) and returns one
value per row. The student is always the first argument and the trained side; the target is a constant.

Masked vocabulary entries (-inf logits) would make `0 * (-inf - -inf)` = NaN in the sums below and NaN in their
gradients. `log_probs` therefore clamps log-probabilities at `LOG_FLOOR` (-1e4): exp(-1e4) is exactly 0 in
float32, so every finite case is unchanged, an entry masked in both distributions contributes exactly 0, and an
entry the target masks but the student does not gives a large finite penalty instead of +inf.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_FLOOR = -1.0e4

FULL_DIVERGENCES = ("js", "rkl", "fkl")
TOPK_DIVERGENCES = ("js_topk", "rkl_topk", "fkl_topk")
DIVERGENCES = FULL_DIVERGENCES + TOPK_DIVERGENCES + ("sampled_rkl",)


def log_probs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """float32 log-softmax of `logits / temperature`, clamped at LOG_FLOOR (no -inf, no NaN)."""
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    out = F.log_softmax(z, dim=-1)
    if out.requires_grad:
        return out.clamp_min(LOG_FLOOR)
    return out.clamp_min_(LOG_FLOOR)  # no graph: in place, one [n, V] tensor less


_BLOCK_ELEMENTS = 1 << 24  # entries per row block of the divergences' temporaries (64 MiB in float32)


def row_blocks(rows: int, width: int) -> list[slice]:
    """Slices of rows such that one block of a [rows, width] tensor holds at most `_BLOCK_ELEMENTS` entries."""
    step = max(1, _BLOCK_ELEMENTS // max(1, width))
    return [slice(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]


def _full_value(kind: str, s_logp: Tensor, t_logp: Tensor) -> Tensor:
    if kind == "rkl":
        return torch.linalg.vecdot(s_logp.exp(), s_logp - t_logp)
    if kind == "fkl":
        return torch.linalg.vecdot(t_logp.exp(), t_logp - s_logp)
    m_logp = torch.logaddexp(s_logp, t_logp).sub_(math.log(2.0))
    value = torch.linalg.vecdot(t_logp.exp(), t_logp - m_logp)
    value += torch.linalg.vecdot(s_logp.exp(), s_logp - m_logp)
    return value.mul_(0.5)


def _full_grads(kind: str, s_logp: Tensor, t_logp: Tensor, g: Tensor, need_s: bool, need_t: bool,
                gs: Optional[Tensor], gt: Optional[Tensor]) -> None:
    """Write d/d l_s and d/d l_t of one row block into gs / gt (the block's slices of the outputs)."""
    if kind == "rkl":
        if need_s:
            gs.copy_((s_logp - t_logp).add_(1.0).mul_(s_logp.exp()).mul_(g))
        if need_t:
            torch.mul(s_logp.exp(), -g, out=gt)
    elif kind == "fkl":
        if need_s:
            torch.mul(t_logp.exp(), -g, out=gs)
        if need_t:
            gt.copy_((t_logp - s_logp).add_(1.0).mul_(t_logp.exp()).mul_(g))
    else:
        m_logp = torch.logaddexp(s_logp, t_logp).sub_(math.log(2.0))
        if need_t:
            gt.copy_((t_logp - m_logp).mul_(t_logp.exp()).mul_(0.5 * g))
        if need_s:
            gs.copy_(m_logp.neg_().add_(s_logp).mul_(s_logp.exp()).mul_(0.5 * g))


class _FullDivergence(torch.autograd.Function):
    """sum_v over one row of RKL / FKL / JS, with the analytic gradient wrt both log-probability inputs.

    Autograd through the elementwise formulas would save five or six [rows, V] intermediates per call (JS: the
    mixture, both exponentials, both differences); this saves only the two inputs, which are alive anyway, and
    rebuilds the one-line gradient in backward. With l = log-probabilities, s = exp(l_s), t = exp(l_t):
      RKL = sum s (l_s - l_t):  d/dl_s = s (l_s - l_t + 1),   d/dl_t = -s
      FKL = sum t (l_t - l_s):  d/dl_s = -t,                  d/dl_t = t (l_t - l_s + 1)
      JS  = 1/2 sum t (l_t - l_m) + 1/2 sum s (l_s - l_m), l_m = log((s + t) / 2):
                                d/dl_s = 1/2 s (l_s - l_m),   d/dl_t = 1/2 t (l_t - l_m)
    (the terms through l_m cancel: d l_m / d l_s = s / (s + t)).
    Both directions run over blocks of rows (`_BLOCK_ELEMENTS` entries): the temporaries are a block's, not two
    more [rows, V] tensors beside the inputs and the gradient (on the hidden-state path the divergence's
    temporaries set the peak of a chunk).
    """

    @staticmethod
    def forward(ctx, s_logp: Tensor, t_logp: Tensor, kind: str) -> Tensor:  # type: ignore[override]
        ctx.kind = kind
        ctx.save_for_backward(s_logp, t_logp)
        if s_logp.shape != t_logp.shape or s_logp.dim() == 0:
            return _full_value(kind, s_logp, t_logp)
        width = s_logp.shape[-1]
        s2, t2 = s_logp.reshape(-1, width), t_logp.reshape(-1, width)
        out = torch.empty(s2.shape[0], dtype=torch.result_type(s_logp, t_logp), device=s_logp.device)
        for rows in row_blocks(s2.shape[0], width):
            out[rows] = _full_value(kind, s2[rows], t2[rows])
        return out.reshape(s_logp.shape[:-1])

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        s_logp, t_logp = ctx.saved_tensors
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if s_logp.shape != t_logp.shape or s_logp.dim() == 0:  # broadcast inputs: one block, reduced to each shape
            s_b, t_b = torch.broadcast_tensors(s_logp, t_logp)
            gs = torch.empty_like(s_b) if need_s else None
            gt = torch.empty_like(t_b) if need_t else None
            _full_grads(ctx.kind, s_b, t_b, grad.unsqueeze(-1), need_s, need_t, gs, gt)
            return (gs.sum_to_size(s_logp.shape) if gs is not None else None,
                    gt.sum_to_size(t_logp.shape) if gt is not None else None, None)
        width = s_logp.shape[-1]
        s2, t2, g2 = s_logp.reshape(-1, width), t_logp.reshape(-1, width), grad.reshape(-1, 1)
        gs = torch.empty_like(s2) if need_s else None
        gt = torch.empty_like(t2) if need_t else None
        for rows in row_blocks(s2.shape[0], width):
            _full_grads(ctx.kind, s2[rows], t2[rows], g2[rows], need_s, need_t,
                        gs[rows] if gs is not None else None, gt[rows] if gt is not None else None)
        return (gs.view(s_logp.shape) if gs is not None else None,
                gt.view(t_logp.shape) if gt is not None else None, None)


def reverse_kl(s_logp: Tensor, t_logp: Tensor) -> Tensor:
    """KL(s || t) = sum_v s_v (log s_v - log t_v)."""
    return _FullDivergence.apply(s_logp, t_logp, "rkl")


def forward_kl(s_logp: Tensor, t_logp: Tensor) -> Tensor:
    """KL(t || s) = sum_v t_v (log t_v - log s_v)."""
    return _FullDivergence.apply(s_logp, t_logp, "fkl")


def jensen_shannon(s_logp: Tensor, t_logp: Tensor) -> Tensor:
    """JS(s, t) = 1/2 KL(t || m) + 1/2 KL(s || m), m = (s + t) / 2 (fixed 0.5 mixture, in nats)."""
    return _FullDivergence.apply(s_logp, t_logp, "js")


def topk_restrict(
    s_logp: Tensor, t_logp: Tensor, k: int, support: str = "student", renormalize: bool = True
) -> tuple[Tensor, Tensor]:
    """Restrict both distributions to K vocabulary entries.

    The support is the K entries with the largest student (`support="student"`) or target (`"target"`)
    probability, chosen without gradient. With `renormalize`, both are renormalised on the support (proper
    distributions); otherwise the raw probabilities are kept (a partial sum of the full divergence).
    K >= vocabulary size returns the inputs unchanged: the full vocabulary.
    """
    if k >= s_logp.shape[-1]:
        return s_logp, t_logp
    if support == "student":
        ref = s_logp
    elif support == "target":
        ref = t_logp
    else:
        raise ValueError(f"topk_support must be 'student' or 'target', got {support!r}")
    idx = ref.detach().topk(k, dim=-1, sorted=False).indices
    return renormalized(s_logp.gather(-1, idx), t_logp.gather(-1, idx), renormalize)


def renormalized(s_k: Tensor, t_k: Tensor, renormalize: bool) -> tuple[Tensor, Tensor]:
    """Log-probabilities restricted to a support, renormalised on it when asked."""
    if renormalize:
        s_k = s_k - s_k.logsumexp(-1, keepdim=True)
        t_k = t_k - t_k.logsumexp(-1, keepdim=True)
    return s_k, t_k


def sampled_reverse_kl(s_logp: Tensor, t_logp: Tensor, labels: Tensor) -> Tensor:
    """Vanilla OPD's sampled-token estimator of the reverse KL: value log s(y) - log t(y) at the sampled y.

    Differentiated as a REINFORCE term, as in on-policy distillation: the gradient is
    (log s(y) - log t(y)) * grad log s(y), i.e. the negative reverse-KL "advantage" weighting the score function.
    Because y was sampled from s, this is an unbiased estimate of the gradient of KL(s || t) at this position
    (the other term, E_s[grad log s] = 0, vanishes in expectation). Differentiating log s(y) - log t(y) directly
    would give grad log s(y) alone: it pushes down every sampled token whatever the teacher says.
    The returned value equals the estimate; only its gradient is the surrogate's.
    """
    idx = labels.unsqueeze(-1)
    ls = s_logp.gather(-1, idx).squeeze(-1)
    lt = t_logp.gather(-1, idx).squeeze(-1)
    adv = (ls - lt).detach()
    return adv + adv * (ls - ls.detach())


FULL_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "js": jensen_shannon,
    "rkl": reverse_kl,
    "fkl": forward_kl,
}


def divergence(
    name: str,
    s_logp: Tensor,
    t_logp: Tensor,
    labels: Optional[Tensor] = None,
    *,
    top_k: int = 128,
    topk_support: str = "student",
    topk_renormalize: bool = True,
) -> Tensor:
    """Per-row divergence `name` (one of DIVERGENCES) of the student from the target."""
    if name == "sampled_rkl":
        if labels is None:
            raise ValueError("sampled_rkl needs the sampled token ids")
        return sampled_reverse_kl(s_logp, t_logp, labels)
    base, _, topk = name.partition("_")
    if base not in FULL_FUNCTIONS or topk not in ("", "topk"):
        raise ValueError(f"unknown divergence {name!r}; choose from {', '.join(DIVERGENCES)}")
    if topk:
        s_logp, t_logp = topk_restrict(s_logp, t_logp, top_k, topk_support, topk_renormalize)
    return FULL_FUNCTIONS[base](s_logp, t_logp)
