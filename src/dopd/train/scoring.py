"""Scoring helpers: the response positions of a teacher-forced forward, packed to [B, R] so that the three
views (x, x+p for the student, x+p for the teacher), whose prompts differ in length, line up token by token."""

from __future__ import annotations

import torch


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

