"""Batching encoded prompts: left-padded for generation, right-padded prompt+response rows with labels for scoring.

Padding choices (why):
- generation: left padding, so that every row's next token is at the last column. `generate` derives positions
  from the attention mask (`cumsum - 1`), and the Qwen-VL multimodal RoPE index ignores masked tokens.
- scoring: right padding. Every prompt then starts at position 0 with no explicit `position_ids`, so the text
  models' default positions equal the ones used at generation time, and pads (after the response) cannot
  influence earlier tokens under the causal mask.

The labels contract: `labels[b, t]` is the token that position t predicts (`input_ids[b, t + 1]`) where t + 1 is
a response position, `IGNORE_INDEX` (-100) elsewhere, so `logits[:, t]` is scored against `labels[:, t]` with no
shift. `labels != -100` selects, row by row and in order, exactly the response tokens, so the same mask shape works
for the plain and the privileged views of one rollout.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from .prompt import EncodedPrompt

IGNORE_INDEX = -100

#: input_ids [B, T] -> the family's `mm_token_type_ids` [B, T] (1 image, 2 video, 0 text), or None
TokenTypesFn = Callable[[torch.Tensor], Optional[torch.Tensor]]


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [B, max len], rows padded with `pad_id` on `side` ("left" | "right")."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        n = len(row)
        if n == 0:
            continue
        sl = slice(width - n, width) if side == "left" else slice(0, n)
        ids[b, sl] = torch.tensor(list(row), dtype=torch.long)
        mask[b, sl] = 1
    return ids, mask


def collate_mm(prompts: Sequence[EncodedPrompt]) -> dict[str, torch.Tensor]:
    """Each multimodal tensor of the prompts concatenated along dim 0, in prompt order (the processor's layout)."""
    keys: list[str] = []
    for p in prompts:
        keys += [k for k in p.mm_inputs if k not in keys]
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        parts = [p.mm_inputs[key] for p in prompts if key in p.mm_inputs]
        out[key] = torch.cat(parts, dim=0)
    return out


def make_batch(rows: Sequence[Sequence[int]], prompts: Sequence[EncodedPrompt], pad_id: int, side: str,
               token_types: Optional[TokenTypesFn] = None) -> dict[str, torch.Tensor]:
    """Padded ids and mask, the prompts' multimodal tensors and (if the family has them) `mm_token_type_ids`."""
    input_ids, attention_mask = pad_rows(rows, pad_id, side)
    batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    batch.update(collate_mm(prompts))
    mm_types = token_types(input_ids) if token_types is not None else None
    if mm_types is not None:
        batch["mm_token_type_ids"] = mm_types * attention_mask
    return batch


def collate_prompts(prompts: Sequence[EncodedPrompt], pad_id: int, token_types: Optional[TokenTypesFn] = None
                    ) -> dict[str, torch.Tensor]:
    """Left-padded batch for `generate`: input_ids, attention_mask and the family's multimodal tensors."""
    return make_batch([p.input_ids for p in prompts], prompts, pad_id, "left", token_types)


def build_scoring_batch(prompts: Sequence[EncodedPrompt], responses: Sequence[Sequence[int]], pad_id: int,
                        token_types: Optional[TokenTypesFn] = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Right-padded prompt+response batch and `labels` (see the module docstring for the contract).

    `prompts` and `responses` pair up row by row (repeat a prompt for each of its G responses).
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    rows = [list(p.input_ids) + [int(t) for t in r] for p, r in zip(prompts, responses)]
    batch = make_batch(rows, prompts, pad_id, "right", token_types)
    labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        plen, rlen = len(p.input_ids), len(r)
        if rlen:
            labels[b, plen - 1:plen - 1 + rlen] = torch.tensor([int(t) for t in r], dtype=torch.long)
    return batch, labels
