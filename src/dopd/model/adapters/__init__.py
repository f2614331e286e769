"""Built-in adapters; importing this package registers them."""

from .base import IGNORE_INDEX, IMAGE_PLACEHOLDER, EncodedPrompt, ModelAdapter
from .qwen_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter, QwenVLAdapter
from .text import TextAdapter

__all__ = [
    "EncodedPrompt", "IGNORE_INDEX", "IMAGE_PLACEHOLDER", "ModelAdapter", "Qwen2VLAdapter", "Qwen2_5_VLAdapter",
    "Qwen3VLAdapter", "QwenVLAdapter", "TextAdapter",
]
