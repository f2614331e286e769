"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: image-only processor, `<image>` -> vision tokens, multimodal RoPE inputs."""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..processors import build_image_only_processor
from ..registry import register_adapter
from ..vision_utils import default_min_image_size, fetch_image
from .base import IMAGE_PLACEHOLDER, ModelAdapter, count_images, split_image_placeholders
from .text import hub_kwargs, load_generation_config

DEFAULT_MIN_PIXELS = 32 * 32
DEFAULT_MAX_PIXELS = 768 * 768


def _read_chat_template(name_or_path: str) -> Optional[str]:
    """Older Qwen-VL checkpoints keep the template in the processor's chat_template.json(.jinja) only."""
    if not os.path.isdir(name_or_path):
        return None
    jinja = os.path.join(name_or_path, "chat_template.jinja")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as fh:
            return fh.read()
    js = os.path.join(name_or_path, "chat_template.json")
    if os.path.isfile(js):
        with open(js, encoding="utf-8") as fh:
            return json.load(fh).get("chat_template")
    return None


class QwenVLAdapter(ModelAdapter):
    """Shared by the three Qwen-VL families; subclasses set the grounding convention and module names."""

    is_vlm = True
    auto_model_class = "AutoModelForImageTextToText"
    vision_module_names = ("model.visual",)
    projector_module_names = ("model.visual.merger",)

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: Any, model_args: Any = None) -> "QwenVLAdapter":
        from transformers import AutoTokenizer

        from dopd.hparams import ConfigError

        kw = hub_kwargs(model_args)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kw)
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = _read_chat_template(name_or_path)
        if not tokenizer.chat_template:
            raise ConfigError(f"{name_or_path}: no chat template found (tokenizer or chat_template.json)")
        min_pixels = getattr(model_args, "image_min_pixels", DEFAULT_MIN_PIXELS)
        max_pixels = getattr(model_args, "image_max_pixels", DEFAULT_MAX_PIXELS)
        processor = build_image_only_processor(config.model_type, name_or_path, tokenizer, min_pixels, max_pixels,
                                               **kw)
        adapter = cls(name_or_path, config, tokenizer, processor, model_args)
        adapter.generation_config = load_generation_config(name_or_path, **kw)
        return adapter

    # ---------------------------------------------------------------- vision spec
    @property
    def patch_size(self) -> int:
        return int(self.config.vision_config.patch_size)

    @property
    def merge_size(self) -> int:
        return int(getattr(self.config.vision_config, "spatial_merge_size", 2))

    @property
    def image_factor(self) -> int:
        """Side multiple of a resized image: patch size x spatial merge (28 Qwen2/2.5-VL, 32 Qwen3-VL)."""
        return self.patch_size * self.merge_size

    @property
    def min_pixels(self) -> int:
        return int(getattr(self.model_args, "image_min_pixels", DEFAULT_MIN_PIXELS))

    @property
    def max_pixels(self) -> int:
        return int(getattr(self.model_args, "image_max_pixels", DEFAULT_MAX_PIXELS))

    @property
    def min_image_size(self) -> int:  # type: ignore[override]
        return default_min_image_size(self.image_factor, self.min_pixels)

    def load_image(self, path: Any) -> Any:
        """PIL RGB image resized exactly as the processor will see it (qwen-vl-utils `fetch_image`)."""
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        return fetch_image(path, self.patch_size, self.min_pixels, self.max_pixels)

    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    @property
    def video_token_id(self) -> Optional[int]:
        return getattr(self.config, "video_token_id", None)

    @property
    def suppressed_token_ids(self) -> list[int]:  # type: ignore[override]
        names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        return [int(v) for v in (getattr(self.config, n, None) for n in names) if v is not None]

    # ---------------------------------------------------------------- rendering
    def to_template_messages(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for m in messages:
            content = str(m["content"])
            if IMAGE_PLACEHOLDER in content:
                out.append({"role": m["role"], "content": split_image_placeholders(content)})
            else:
                out.append({"role": m["role"], "content": content})
        return out

    def _prepare_messages(self, messages: list[dict[str, Any]], images: list[Any]
                          ) -> tuple[list[dict[str, Any]], list[Any]]:
        n = count_images(messages)
        if n != len(images):
            raise ValueError(f"{n} <image> placeholder(s) in the messages but {len(images)} image(s)")
        images = [img if hasattr(img, "size") and not isinstance(img, (str, bytes)) else self.load_image(img)
                  for img in images]
        return messages, images

    def _image_token_counts(self, images: Sequence[Any]) -> list[int]:
        if not images:
            return []
        sizes = [(img.height, img.width) for img in images]
        return list(self.processor._get_num_multimodal_tokens(image_sizes=sizes)["num_image_tokens"])

    def _length_estimate(self, messages: Sequence[dict[str, Any]], image_tokens: Sequence[int]) -> int:
        text = self.render(messages)
        n_text = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return n_text + sum(int(c) - 1 for c in image_tokens)  # each <|image_pad|> expands to c tokens

    def _tokenize_rendered(self, text: str, images: Sequence[Any]) -> tuple[list[int], dict[str, torch.Tensor]]:
        out = self.processor(text=[text], images=list(images) or None, return_tensors="pt")
        ids = out["input_ids"][0].tolist()
        mm = {k: out[k] for k in ("pixel_values", "image_grid_thw") if k in out}
        return ids, mm

    # ---------------------------------------------------------------- model inputs
    def _mm_token_type_ids(self, input_ids: torch.Tensor) -> Optional[torch.Tensor]:
        """1 at image tokens, 2 at video tokens: the Qwen-VL forward needs it for multimodal RoPE
        (Qwen2/Qwen3-VL raise without it; Qwen2.5-VL would silently fall back to 1-D positions)."""
        types = (input_ids == self.image_token_id).long()
        if self.video_token_id is not None:
            types = types + 2 * (input_ids == int(self.video_token_id)).long()
        return types

    def _cast_pixels(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "pixel_values" in batch:
            visual = self.unwrap(model).model.visual
            dtype = next(visual.parameters()).dtype
            batch = {**batch, "pixel_values": batch["pixel_values"].to(dtype)}
        return batch


@register_adapter("qwen2_vl")
class Qwen2VLAdapter(QwenVLAdapter):
    family = "qwen2_vl"
    grounding = "qwen2_vl"


@register_adapter("qwen2_5_vl")
class Qwen2_5_VLAdapter(QwenVLAdapter):
    family = "qwen2_5_vl"
    grounding = "qwen2_5_vl"


@register_adapter("qwen3_vl")
class Qwen3VLAdapter(QwenVLAdapter):
    family = "qwen3_vl"
    grounding = "qwen3_vl"
    projector_module_names = ("model.visual.merger", "model.visual.deepstack_merger_list")
