"""Scoring: teacher-forced forwards over the rollout's answers, their response positions packed to [B, R] so that
the three views (x, x+p for the student, x+p for the teacher), whose prompts differ in length, line up token by token.

`score_responses` is one such forward (`ScoredPass`); `score_targets` runs the no-grad ones a method needs, the
privileged student and the teacher (`ScoringTargets`). The student's graded pass on x is the trainer's, with grad.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple, Optional, Sequence

import torch

from dopd.distill import DOPDLossConfig
from dopd.train.dataset import EncodedSample
from dopd.train.rollout import repeat_each

if TYPE_CHECKING:
    from dopd.model.adapters.base import ModelAdapter


class ScoredPass(NamedTuple):
    """One teacher-forced forward at the response positions."""

    hidden: torch.Tensor  # [B, R, H]: the hidden state that predicts each response token
    labels: torch.Tensor  # [B, R]: the response tokens, -100 past each row's end
    lm_head: torch.nn.Module  # the model's output embedding: logits = lm_head(hidden)


class ScoringTargets(NamedTuple):
    """The no-grad passes of one micro-batch on its answers, None where the method needs none.

    A tuple in this order (not two `ScoredPass`es) because `benchmarks/real_pair_lr_probe.py` reads it by position."""

    hidden_p: Optional[torch.Tensor] = None  # the privileged student on x+p, [B, R, H]
    labels_p: Optional[torch.Tensor] = None  # its response tokens, [B, R]
    hidden_t: Optional[torch.Tensor] = None  # the teacher on its view (x+p, or x), [B, R, H]
    labels_t: Optional[torch.Tensor] = None  # its response tokens, [B, R]
    head_t: Optional[torch.nn.Module] = None  # the teacher's lm_head

    def to(self, device: torch.device | str) -> ScoringTargets:
        """The tensors on `device` (the step's cache may hold them on the CPU); the head stays where it is."""
        return ScoringTargets(*(t.to(device) if isinstance(t, torch.Tensor) else t for t in self))


#: one teacher-forced forward: (model, adapter, prompts, responses) -> ScoredPass
ScoreFn = Callable[[torch.nn.Module, "ModelAdapter", list, list[list[int]]], ScoredPass]


class Scorable(NamedTuple):
    """A model and the adapter that renders and runs it."""

    model: torch.nn.Module
    adapter: ModelAdapter


def gather_response(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack the positions with `labels != -100` to the left: [B, T, H], [B, T] -> [B, R, H], [B, R].

    R is the longest response; shorter rows are padded with zeros / -100. Differentiable in `hidden`.
    """
    mask = labels.ne(-100)
    counts = mask.sum(dim=1)
    width = int(counts.max().item()) if counts.numel() else 0
    rows, cols = mask.nonzero(as_tuple=True)
    rank = (mask.cumsum(dim=1) - 1)[rows, cols]
    packed = hidden.new_zeros(hidden.shape[0], width, hidden.shape[-1])
    packed = packed.index_put((rows, rank), hidden[rows, cols])
    packed_labels = labels.new_full((labels.shape[0], width), -100)
    packed_labels[rows, rank] = labels[rows, cols]
    return packed, packed_labels


def score_responses(model: torch.nn.Module, adapter: ModelAdapter, prompts: Sequence, responses: list[list[int]],
                    device: torch.device) -> ScoredPass:
    """`model` teacher-forced on each prompt followed by its response (`adapter.build_scoring_batch`), the hidden
    states of the response positions packed by `gather_response`. Gradient as the caller's mode allows."""
    batch, labels = adapter.build_scoring_batch(prompts, responses)
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    hidden, lm_head = adapter.forward_hidden(model, batch)
    packed, packed_labels = gather_response(hidden, labels.to(hidden.device))
    return ScoredPass(packed, packed_labels, lm_head)


def score_targets(score: ScoreFn, cfg: DOPDLossConfig, samples: Sequence[EncodedSample], responses: list[list[int]],
                  group: int, student: Scorable, teacher: Optional[Scorable]) -> ScoringTargets:
    """The no-grad passes `cfg` needs on `responses` (`group` answers per sample, prompt-major): the privileged
    student on x+p and the teacher on its view. `score` runs each forward (the trainer's `_score`)."""
    targets = ScoringTargets()
    with torch.no_grad():
        if cfg.needs_privileged_student:
            privileged = repeat_each([s.privileged for s in samples], group)
            hidden_p, labels_p, _ = score(student.model, student.adapter, privileged, responses)
            targets = targets._replace(hidden_p=hidden_p, labels_p=labels_p)
        if cfg.needs_teacher:
            teacher_prompts = repeat_each([s.teacher for s in samples], group)
            hidden_t, labels_t, head_t = score(teacher.model, teacher.adapter, teacher_prompts, responses)
            targets = targets._replace(hidden_t=hidden_t, labels_t=labels_t, head_t=head_t)
    return targets


def check_same_tokens(reference: torch.Tensor, other: torch.Tensor, name: str) -> None:
    """The views must score the very answer ids the student sampled: raise when `other`'s labels differ."""
    if reference.shape != other.shape or not torch.equal(reference, other):
        raise RuntimeError(
            f"the {name} scored different response tokens than the student: the views must share the answer ids"
        )
