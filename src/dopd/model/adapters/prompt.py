"""An encoded prompt and the `<image>` placeholder convention our messages use (shared by every adapter module)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

IMAGE_PLACEHOLDER = "<image>"


@dataclass
class EncodedPrompt:
    """One rendered, tokenised prompt view.

    `input_ids`: token ids with image placeholders already expanded to the model's vision tokens.
    `mm_inputs`: multimodal tensors for this prompt alone (e.g. `pixel_values` [patches, D], `image_grid_thw`
    [n_images, 3]); empty for text. `truncated`: the prompt exceeded `cutoff_len` (see `encode_prompt`).
    """

    input_ids: list[int]
    mm_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def split_image_placeholders(text: str) -> list[dict[str, str]]:
    """'a <image> b' -> [{'type': 'text', 'text': 'a '}, {'type': 'image'}, {'type': 'text', 'text': ' b'}]."""
    parts: list[dict[str, str]] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i > 0:
            parts.append({"type": "image"})
        if chunk:
            parts.append({"type": "text", "text": chunk})
    return parts


def count_images(messages: Sequence[dict[str, Any]]) -> int:
    """Number of `<image>` placeholders over all messages."""
    return sum(str(m.get("content", "")).count(IMAGE_PLACEHOLDER) for m in messages)
