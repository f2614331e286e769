"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: image-only processor, `<image>` -> vision tokens, multimodal RoPE inputs."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Sequence

import torch
from torch import nn
from transformers import AutoTokenizer

from dopd.data.vision import open_rgb
from dopd.hparams import ConfigError

from ...pretrained import hub_kwargs, load_generation_config
from ..base import ModelAdapter
from ..prompt import IMAGE_PLACEHOLDER, count_images, split_image_placeholders
from .processors import (
    base_processor_files, build_image_only_processor, checkpoint_pixel_bounds, load_image_processor,
    read_processor_chat_template,
)
from .vision_utils import default_crop_min_pixels, default_min_image_size, fetch_image

logger = logging.getLogger(__name__)


def _resolve_bounds(name_or_path: str, model_args: Any, checkpoint: tuple[int, int]) -> tuple[int, int]:
    """`image_min_pixels` / `image_max_pixels` when set, else the checkpoint's own bounds. A configured maximum
    below the checkpoint's minimum lowers the minimum to it (small demo bounds set only the maximum)."""
    set_min = getattr(model_args, "image_min_pixels", None)
    set_max = getattr(model_args, "image_max_pixels", None)
    lo = int(set_min) if set_min else checkpoint[0]
    hi = int(set_max) if set_max else checkpoint[1]
    if lo > hi:
        if set_min:
            raise ConfigError(f"{name_or_path}: image_min_pixels={lo} exceeds image_max_pixels={hi}")
        logger.info("%s: image_max_pixels=%d is below the checkpoint's min_pixels=%d; using %d for both",
                    name_or_path, hi, lo, hi)
        lo = hi
    return lo, hi


class QwenVLAdapter(ModelAdapter):
    """Shared by the three Qwen-VL families; subclasses set the grounding convention and module names."""

    is_vlm = True
    auto_model_class = "AutoModelForImageTextToText"
    vision_module_names = ("model.visual",)
    projector_module_names = ("model.visual.merger",)

    def __init__(self, name_or_path: str, config: Any, tokenizer: Any, processor: Any = None,
                 model_args: Any = None, generation_config: Any = None,
                 pixel_bounds: tuple[int, int] = (0, 0), checkpoint_pixels: tuple[int, int] = (0, 0)) -> None:
        super().__init__(name_or_path, config, tokenizer, processor, model_args, generation_config)
        #: (min, max) pixels in use: `image_min_pixels` / `image_max_pixels`, else the checkpoint's own
        self.pixel_bounds = pixel_bounds
        #: (min, max) pixels of the checkpoint's preprocessor config
        self.checkpoint_pixels = checkpoint_pixels

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: Any, model_args: Any = None) -> QwenVLAdapter:
        kw = hub_kwargs(model_args)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kw)
        base_files = base_processor_files(name_or_path, **kw)
        # the processor's own template (chat_template.json / .jinja) wins over the tokenizer's: older Qwen-VL
        # checkpoints keep a text-only template in tokenizer_config.json, and vLLM & co. render with the processor's
        template = read_processor_chat_template(base_files) or getattr(tokenizer, "chat_template", None)
        if not template:
            raise ConfigError(f"{name_or_path}: no chat template found (chat_template.json / chat_template.jinja "
                              "or the tokenizer's)")
        tokenizer.chat_template = template  # one template for the adapter, whichever object renders
        image_processor = load_image_processor(name_or_path, **kw)
        checkpoint = checkpoint_pixel_bounds(image_processor, config.model_type)
        min_pixels, max_pixels = _resolve_bounds(name_or_path, model_args, checkpoint)
        processor = build_image_only_processor(config.model_type, name_or_path, tokenizer, image_processor,
                                               min_pixels, max_pixels, template, base_files=base_files,
                                               checkpoint_pixels=checkpoint)
        return cls(name_or_path, config, tokenizer, processor, model_args,
                   generation_config=load_generation_config(name_or_path, **kw),
                   pixel_bounds=(min_pixels, max_pixels), checkpoint_pixels=checkpoint)

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
        return int(self.pixel_bounds[0])

    @property
    def max_pixels(self) -> int:
        return int(self.pixel_bounds[1])

    @property
    def min_image_size(self) -> int:  # type: ignore[override]
        return default_min_image_size(self.image_factor, self.min_pixels)

    @property
    def crop_min_pixels(self) -> int:
        """Area a zoomed crop is upscaled to at least: `crop_min_pixels` when set, else 256 merged patches
        (256 visual tokens), within [min_pixels, max_pixels]."""
        configured = getattr(self.model_args, "crop_min_pixels", None)
        if configured:
            return int(min(max(int(configured), self.min_pixels), self.max_pixels))
        return default_crop_min_pixels(self.image_factor, self.min_pixels, self.max_pixels)

    def load_image(self, path: Any) -> Any:
        """PIL RGB image resized exactly as the processor will see it (qwen-vl-utils `fetch_image`); files are
        opened with their EXIF orientation applied (`dopd.data.vision.open_rgb`)."""
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if isinstance(path, str) and not path.startswith(("http://", "https://", "data:image")):
            path = open_rgb(path[7:] if path.startswith("file://") else path)
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

    def prepare_messages(self, messages: list[dict[str, Any]], images: list[Any]
                         ) -> tuple[list[dict[str, Any]], list[Any]]:
        """One image per `<image>` placeholder; paths are loaded with `load_image`."""
        n = count_images(messages)
        if n != len(images):
            raise ValueError(f"{n} <image> placeholder(s) in the messages but {len(images)} image(s)")
        images = [img if hasattr(img, "size") and not isinstance(img, (str, bytes)) else self.load_image(img)
                  for img in images]
        return messages, images

    def image_token_counts(self, images: Sequence[Any]) -> list[int]:
        if not images:
            return []
        sizes = [(img.height, img.width) for img in images]
        return list(self.processor._get_num_multimodal_tokens(image_sizes=sizes)["num_image_tokens"])

    def prompt_length(self, messages: Sequence[dict[str, Any]], image_tokens: Sequence[int]) -> int:
        text = self.render(messages)
        n_text = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return n_text + sum(int(c) - 1 for c in image_tokens)  # each <|image_pad|> expands to c tokens

    def tokenize_rendered(self, text: str, images: Sequence[Any]) -> tuple[list[int], dict[str, torch.Tensor]]:
        out = self.processor(text=[text], images=list(images) or None, return_tensors="pt")
        ids = out["input_ids"][0].tolist()
        mm = {k: out[k] for k in ("pixel_values", "image_grid_thw") if k in out}
        return ids, mm

    # ---------------------------------------------------------------- model inputs
    def mm_token_type_ids(self, input_ids: torch.Tensor) -> Optional[torch.Tensor]:
        """1 at image tokens, 2 at video tokens: the Qwen-VL forward needs it for multimodal RoPE
        (Qwen2/Qwen3-VL raise without it; Qwen2.5-VL would silently fall back to 1-D positions)."""
        types = (input_ids == self.image_token_id).long()
        if self.video_token_id is not None:
            types = types + 2 * (input_ids == int(self.video_token_id)).long()
        return types

    def cast_pixels(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if "pixel_values" in batch:
            visual = self.unwrap(model).model.visual
            dtype = next(visual.parameters()).dtype
            batch = {**batch, "pixel_values": batch["pixel_values"].to(dtype)}
        return batch


class Qwen2VLAdapter(QwenVLAdapter):
    family = "qwen2_vl"
    grounding = "qwen2_vl"


class Qwen2_5_VLAdapter(QwenVLAdapter):
    family = "qwen2_5_vl"
    grounding = "qwen2_5_vl"


class Qwen3VLAdapter(QwenVLAdapter):
    family = "qwen3_vl"
    grounding = "qwen3_vl"
    projector_module_names = ("model.visual.merger", "model.visual.deepstack_merger_list")
