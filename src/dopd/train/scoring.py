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


class VocabSlicedHead(torch.nn.Module):
    """An lm_head restricted to the tokenizer's vocabulary.

    Checkpoints often pad the output layer beyond the tokenizer (Qwen: 151,936 rows for 151,665 tokens). Sampling
    never picks those rows, so the distributions the objective compares must not include them either.
    """

    def __init__(self, head: torch.nn.Module, vocab_size: int) -> None:
        super().__init__()
        self.head = head
        self.vocab_size = vocab_size

    @property
    def weight(self) -> torch.Tensor:
        return self.head.weight[: self.vocab_size]

    @property
    def bias(self):
        bias = getattr(self.head, "bias", None)
        return bias[: self.vocab_size] if isinstance(bias, torch.Tensor) else None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden, self.weight, self.bias)


def restrict_head(head: torch.nn.Module, vocab_size: int) -> torch.nn.Module:
    rows = head.weight.shape[0]
    return head if rows <= vocab_size else VocabSlicedHead(head, vocab_size)
