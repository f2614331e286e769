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
    return F.log_softmax(z, dim=-1).clamp_min(LOG_FLOOR)


def reverse_kl(s_logp: Tensor, t_logp: Tensor) -> Tensor:
    """KL(s || t) = sum_v s_v (log s_v - log t_v)."""
    return (s_logp.exp() * (s_logp - t_logp)).sum(-1)


def forward_kl(s_logp: Tensor, t_logp: Tensor) -> Tensor:
    """KL(t || s) = sum_v t_v (log t_v - log s_v)."""
    return (t_logp.exp() * (t_logp - s_logp)).sum(-1)


def jensen_shannon(s_logp: Tensor, t_logp: Tensor) -> Tensor:
    """JS(s, t) = 1/2 KL(t || m) + 1/2 KL(s || m), m = (s + t) / 2 (fixed 0.5 mixture, in nats)."""
    m_logp = torch.logaddexp(s_logp, t_logp) - math.log(2.0)
    return 0.5 * (t_logp.exp() * (t_logp - m_logp)).sum(-1) + 0.5 * (s_logp.exp() * (s_logp - m_logp)).sum(-1)


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
    s_k = s_logp.gather(-1, idx)
    t_k = t_logp.gather(-1, idx)
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


_FULL: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
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
    if base not in _FULL or topk not in ("", "topk"):
        raise ValueError(f"unknown divergence {name!r}; choose from {', '.join(DIVERGENCES)}")
    if topk:
        s_logp, t_logp = topk_restrict(s_logp, t_logp, top_k, topk_support, topk_renormalize)
    return _FULL[base](s_logp, t_logp)
