"""Privilege-illusion diagnostics: per regime, what the teacher and the privileged student think of the sampled
token, and whether the regime's gradient moves the student toward the teacher's preference on it.

Pure tensor code, no model inside. The objective's routing pass records whether each target's top choice is the
sampled token (from the [chunk, V] rows it computes anyway); its loss pass fills a `DiagnosticsProbe` (the
student's log s(y) and the first-order change of log s(y) under a gradient step, from the chunk's gradient rows),
and adds `diagnostic_metrics` to `out.metrics` (the trainer logs them as `dopd/<regime>/<stat>`). Computed only
when both privileged policies are scored (q_S and q_T exist). See docs/objective.md, "Diagnostics".

Per valid token n with sampled token y, s = S(.|x, y<n), q_S = S(y|x,p,y<n), q_T = T(y|x,p,y<n) (temperature 1):

- `teacher_rejected_frac`: share of tokens with q_T < REJECT_PROB (0.1) and y not the teacher's top choice;
- `priv_top_differs_frac`: share of tokens where the privileged student's top choice is not y;
- `priv_logp_gain`: mean of log q_S - log s(y) (> 0: seeing p raises the student's probability of its own sample);
- `grad_agrees_teacher_frac`: among tokens whose loss has a gradient, the share where the sign of d log s(y) under a
  gradient-descent step on that token's logits equals the sign of the teacher's preference log q_T - log s(y);
- `rejected_raised_frac`: among teacher-rejected tokens with a gradient, the share whose step RAISES log s(y).

Each is reported per regime (`HT/...`, `HS/...`, `LH/...`, `LL/...`) and over all valid tokens (`all/...`); NaN
where undefined (an empty regime, no token with a gradient, no rejected token).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .routing import REGIMES, teacher_rejects

REJECT_PROB = 0.1
DIAG_STATS = (
    "teacher_rejected_frac", "priv_top_differs_frac", "priv_logp_gain", "grad_agrees_teacher_frac",
    "rejected_raised_frac",
)
_SUB_ROWS = 64  # rows per [rows, V] temporary in logp_step_direction


@torch.no_grad()
def logp_step_direction(s_logp: Tensor, grad_logp: Tensor, labels: Tensor, grad_sum: Optional[Tensor] = None) -> Tensor:
    """Per row: d log s(y) / d(step size) of a gradient-descent step on that row's logits, i.e. -(e_y - s) . dL/dz.

    s_logp [n, V]: the student's log-probabilities (s = exp); grad_logp [n, V]: dL_n/d log s (each entry taken as an
    independent input, as the objective's per-chunk autograd gives it); with l = log_softmax(z),
    dL/dz = g - s * sum(g), so the value is -(g_y - s_y sum(g) - s.g + (s.s) sum(g)). grad_sum: sum(g) per row if
    already computed. Returns [n] float32; 0 where the row has no gradient. The [n, V] products are taken in blocks
    of rows, so the peak is a small temporary.
    """
    n = s_logp.shape[0]
    out = torch.zeros(n, dtype=torch.float32, device=s_logp.device)
    idx = labels.long().unsqueeze(1)
    for a in range(0, n, _SUB_ROWS):
        b = min(n, a + _SUB_ROWS)
        g = grad_logp[a:b].float()
        s = s_logp[a:b].float().exp()
        total = g.sum(-1) if grad_sum is None else grad_sum[a:b].reshape(-1).float()
        g_y = g.gather(1, idx[a:b]).squeeze(1)
        s_y = s.gather(1, idx[a:b]).squeeze(1)
        s_dot_g = torch.linalg.vecdot(s, g)
        s_dot_s = torch.linalg.vecdot(s, s)
        out[a:b] = -(g_y - s_y * total - s_dot_g + s_dot_s * total)
    return out


@torch.no_grad()
def diagnostic_metrics(
    regimes: Tensor,
    log_s: Tensor,
    log_q_s: Tensor,
    log_q_t: Tensor,
    teacher_top_is_label: Tensor,
    priv_top_is_label: Tensor,
    step_dir: Optional[Tensor] = None,
) -> dict[str, float]:
    """The statistics of the module docstring, per regime and over all tokens. Every argument is [N] over the valid
    tokens: regime index (into REGIMES; other values count only in `all`), log s(y), log q_S, log q_T (temperature
    1), whether each target's argmax is y, and `logp_step_direction` (None: no gradient was taken). One device sync."""
    n = regimes.numel()
    device = regimes.device
    rejected = teacher_rejects(log_q_t, teacher_top_is_label, REJECT_PROB)
    differs = ~priv_top_is_label.bool()
    gain = (log_q_s.float() - log_s.float())
    ones = torch.ones(n, dtype=torch.float32, device=device)
    groups = torch.zeros(n, len(REGIMES) + 1, dtype=torch.float32, device=device)
    routed = (regimes >= 0) & (regimes < len(REGIMES))
    if bool(routed.any()):
        groups[routed, :len(REGIMES)] = torch.nn.functional.one_hot(regimes[routed], len(REGIMES)).float()
    groups[:, len(REGIMES)] = 1.0  # "all"
    columns = [ones, rejected.float(), differs.float(), gain]
    if step_dir is not None:
        pref = (log_q_t.float() - log_s.float()).sign()
        step = step_dir.float().sign()
        moved = (step != 0) & (pref != 0)
        rej_moved = rejected & (step != 0)
        columns += [moved.float(), (moved & (step == pref)).float(), rej_moved.float(), (rej_moved & (step > 0)).float()]
    sums = (torch.stack(columns, 1).t() @ groups).tolist() if n else [[0.0] * groups.shape[1]] * len(columns)

    def ratio(num: float, den: float) -> float:
        return num / den if den else float("nan")

    metrics: dict[str, float] = {}
    for j, name in enumerate((*REGIMES, "all")):
        count = sums[0][j]
        metrics[f"{name}/teacher_rejected_frac"] = ratio(sums[1][j], count)
        metrics[f"{name}/priv_top_differs_frac"] = ratio(sums[2][j], count)
        metrics[f"{name}/priv_logp_gain"] = ratio(sums[3][j], count)
        if step_dir is not None:
            metrics[f"{name}/grad_agrees_teacher_frac"] = ratio(sums[5][j], sums[4][j])
            metrics[f"{name}/rejected_raised_frac"] = ratio(sums[7][j], sums[6][j])
        else:
            metrics[f"{name}/grad_agrees_teacher_frac"] = float("nan")
            metrics[f"{name}/rejected_raised_frac"] = float("nan")
    return metrics


class DiagnosticsProbe:
    """Per-token buffers the objective's loss pass fills; `metrics(...)` turns them, with the routing pass's
    results, into `diagnostic_metrics`. Used only when both privileged policies are scored.

    Hooks (each called once per chunk of valid tokens, `rows` a slice of the valid-token list):
    `student_rows(rows, s_logp, z)` with the student's log-probabilities at temperature 1 (or, when the loss runs
    at another temperature, s_logp=None and the logits z); `student_grad(rows, s_logp, grad_logp, grad_sum)` with
    the chunk's dL/d log s rows (only when a gradient is taken).
    """

    def __init__(self, labels: Tensor) -> None:
        n, device = labels.numel(), labels.device
        self.labels = labels
        self.log_s = torch.zeros(n, dtype=torch.float32, device=device)
        self.step_dir = torch.zeros(n, dtype=torch.float32, device=device)
        self.has_grad = False

    @torch.no_grad()
    def student_rows(self, rows: slice, s_logp: Optional[Tensor], z: Optional[Tensor] = None) -> None:
        idx = self.labels[rows].unsqueeze(1)
        if s_logp is not None:
            self.log_s[rows] = s_logp.gather(1, idx).squeeze(1).float()
        else:
            zf = z.float()
            self.log_s[rows] = (zf.gather(1, idx).squeeze(1) - zf.logsumexp(-1)).clamp_min(-1.0e4)

    @torch.no_grad()
    def student_grad(self, rows: slice, s_logp: Tensor, grad_logp: Tensor, grad_sum: Optional[Tensor] = None) -> None:
        self.step_dir[rows] = logp_step_direction(s_logp, grad_logp, self.labels[rows], grad_sum)
        self.has_grad = True

    def metrics(self, regimes: Tensor, log_q_s: Tensor, log_q_t: Tensor, teacher_top_is_label: Tensor,
                priv_top_is_label: Tensor) -> dict[str, float]:
        return diagnostic_metrics(regimes, self.log_s, log_q_s, log_q_t, teacher_top_is_label, priv_top_is_label,
                                  self.step_dir if self.has_grad else None)
