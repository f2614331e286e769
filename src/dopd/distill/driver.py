"""The one driver of the objective, shared by both entry points.

`dopd_loss` (logits, loss.py) and `dopd_loss_from_hidden` (hidden states and lm_heads, chunked.py) differ only in
how they produce logit rows: each checks its inputs, lays out the valid tokens (`ValidTokens`), gives its targets
as row functions and its student as a fused pass-2 autograd Function. `run_objective` does the rest, the same way for
both: pass 1 (or the one handed in) -> the routing plan -> pass 2 (the fused Function, given a `Run`) -> the outputs
and the diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from .config import DOPDLossConfig
from .diagnostics import DiagnosticsProbe
from .outputs import DOPDLossOutput, check_needed, scatter_outputs, valid_positions
from .passes import GradSink, RoutingPass, RowFn, loss_pass, routing_pass
from .plan import Plan, make_plan
from .routing import Thresholds, teacher_rejects

Targets = dict[str, Optional[RowFn]]  # "privileged_student" / "teacher" -> rows of the valid tokens (None: absent)


@dataclass
class ValidTokens:
    """The response tokens (labels != -100) of a [B, T] batch, in flattened [B*T] order."""

    shape: tuple[int, int]  # (B, T)
    flat_idx: Tensor  # [N] their flat positions
    labels: Tensor  # [N] long, the sampled token ids
    seq: Tensor  # [N] their sequence index

    @classmethod
    def of_labels(cls, labels: Tensor, device: torch.device) -> "ValidTokens":
        flat_idx, labels_v, seq = valid_positions(labels.to(device))
        return cls((labels.shape[0], labels.shape[1]), flat_idx, labels_v, seq)

    @property
    def n(self) -> int:
        return self.flat_idx.numel()

    @property
    def dense(self) -> bool:
        """Every position is valid: the rows are plain slices, nothing is gathered."""
        return self.n == self.shape[0] * self.shape[1]

    def rows(self, x: Tensor) -> Tensor:
        """[B, T, D] -> the valid tokens' rows [N, D] (differentiable; a view when dense)."""
        flat = x.reshape(-1, x.shape[-1])
        return flat if self.dense else flat[self.flat_idx]

    def chunk(self, chunk_size: Optional[int]) -> int:
        """Rows per chunk: `chunk_size`, or all of them for None or 0."""
        return max(1, chunk_size or self.n or 1)


@dataclass
class Run:
    """One call's pass 2 as its fused autograd Function sees it: the valid tokens, their routing plan, the targets'
    rows, the config, the rows per chunk and the diagnostics probe (None without pass 1)."""

    tokens: ValidTokens
    plan: Plan
    targets: Targets
    config: DOPDLossConfig
    chunk: int
    probe: Optional[DiagnosticsProbe]

    def loss_pass(self, student_rows: Callable[[int, int], Tensor], sink: Optional[GradSink],
                  device: torch.device) -> tuple[Tensor, Tensor]:
        """Pass 2 over the valid tokens (`passes.loss_pass`): per-token loss [N] and student entropy [N]."""
        return loss_pass(student_rows, self.tokens.n, self.plan, self.targets, self.config, self.chunk, sink, device,
                         self.probe)


def check_inputs(config: Optional[DOPDLossConfig], student: Tensor, priv: Optional[Tensor], teacher: Optional[Tensor],
                 labels: Tensor, name: str, dims: str, what: str) -> tuple[DOPDLossConfig, ValidTokens]:
    """The checks both entry points share, before their own: the student's input (`name`, shaped `dims`) against
    labels [B, T], and the privileged student's and the teacher's `what` present where the config needs them.
    Returns the config (the default one for None) and the valid tokens."""
    config = config if config is not None else DOPDLossConfig()
    if student.dim() != 3 or student.shape[:2] != labels.shape:
        raise ValueError(
            f"{name} must be {dims} with labels [B, T]; got {tuple(student.shape)} and {tuple(labels.shape)}"
        )
    check_needed(config, priv, teacher, what)
    return config, ValidTokens.of_labels(labels, student.device)


FusedLoss = Callable[[Run], tuple[Tensor, Tensor, Tensor]]  # a Run -> (loss, per-token loss [N], entropy [N])


def run_objective(
    tokens: ValidTokens,
    targets: Targets,
    config: DOPDLossConfig,
    fused: FusedLoss,
    *,
    chunk_size: Optional[int],
    generator: Optional[torch.Generator],
    thresholds: Optional[Thresholds],
    denominator: Optional[float],
    routing: Optional[RoutingPass],
) -> DOPDLossOutput:
    """The objective once the inputs are checked: the arguments are those of `dopd_loss`."""
    chunk = tokens.chunk(chunk_size)
    routing, probe = start_routing(targets, tokens.labels, chunk, routing)
    stat_s, stat_t, veto = plan_inputs(routing, config)
    plan = make_plan(config, tokens.labels, tokens.seq, tokens.shape[0], stat_s, stat_t, generator, thresholds,
                     denominator, veto=veto)
    loss, per_tok, entropy = fused(Run(tokens, plan, targets, config, chunk, probe))
    out = scatter_outputs(tokens.shape, tokens.flat_idx, plan, per_tok, entropy, loss, config)
    out.metrics.update(diagnostics_of(probe, plan, routing))
    return out


def start_routing(targets: Targets, labels_v: Tensor, chunk: int,
                  routing: Optional[RoutingPass] = None) -> tuple[Optional[RoutingPass], Optional[DiagnosticsProbe]]:
    """Pass 1 (or the one handed in, computed earlier over the same labels) and the diagnostics probe the loss pass
    fills: both None unless both privileged policies are scored."""
    if targets.get("privileged_student") is None or targets.get("teacher") is None:
        return None, None
    if routing is None:
        routing = routing_pass(targets, labels_v, chunk)
    else:
        routing.check_matches(labels_v)
    return routing, DiagnosticsProbe(labels_v)


def plan_inputs(routing: Optional[RoutingPass], config: DOPDLossConfig
                ) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """What `make_plan` routes with: the configured statistics (privileged student's, teacher's; None without pass
    1) and the teacher-veto mask (None when `teacher_veto` is off)."""
    if routing is None:
        return None, None, None
    stat_s, stat_t = routing.statistics(config.routing_statistic)
    veto = (teacher_rejects(routing.log_q_t, routing.teacher_top_is_label, config.teacher_veto_prob)
            if config.teacher_veto else None)
    return stat_s, stat_t, veto


def diagnostics_of(probe: Optional[DiagnosticsProbe], plan: Plan, routing: Optional[RoutingPass]) -> dict[str, float]:
    if probe is None or routing is None:
        return {}
    return probe.metrics(plan.regimes, routing.log_q_s, routing.log_q_t, routing.teacher_top_is_label,
                         routing.priv_top_is_label)
