"""The Qwen-VL families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) and what serves only them.

- `adapter`: the adapters (`<image>` -> vision tokens, pixel bounds, multimodal RoPE inputs);
- `processors`: image-only processors (no torchvision) that save folders stock `AutoProcessor` loads back;
- `vision_utils`: images exactly as the processors see them, through qwen-vl-utils.
"""

from __future__ import annotations

from .adapter import Qwen2_5_VLAdapter, Qwen2VLAdapter, Qwen3VLAdapter, QwenVLAdapter

__all__ = ["Qwen2VLAdapter", "Qwen2_5_VLAdapter", "Qwen3VLAdapter", "QwenVLAdapter"]
