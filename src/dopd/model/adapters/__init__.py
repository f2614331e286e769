"""Built-in adapters and the table that picks one: `config.model_type` -> adapter class.

`ADAPTERS` is the one mapping; `dopd.model.registry.register_adapter` adds families from outside code to it, and
`FALLBACK_ADAPTER` serves every causal LM with a chat template that is not in it.
"""

from __future__ import annotations

from .base import ModelAdapter
from .batching import IGNORE_INDEX
from .prompt import IMAGE_PLACEHOLDER, EncodedPrompt
from .qwen_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter, QwenVLAdapter
from .text import TextAdapter

ADAPTERS: dict[str, type[ModelAdapter]] = {
    "qwen2": TextAdapter,
    "qwen3": TextAdapter,
    "llama": TextAdapter,
    "mistral": TextAdapter,
    "qwen2_vl": Qwen2VLAdapter,
    "qwen2_5_vl": Qwen2_5_VLAdapter,
    "qwen3_vl": Qwen3VLAdapter,
}
FALLBACK_ADAPTER: type[ModelAdapter] = TextAdapter

__all__ = [
    "ADAPTERS", "EncodedPrompt", "FALLBACK_ADAPTER", "IGNORE_INDEX", "IMAGE_PLACEHOLDER", "ModelAdapter",
    "Qwen2VLAdapter", "Qwen2_5_VLAdapter", "Qwen3VLAdapter", "QwenVLAdapter", "TextAdapter",
]
