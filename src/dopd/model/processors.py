"""Image-only processors for the Qwen-VL families.

transformers 5.x's `Qwen2VLProcessor` / `Qwen3VLProcessor` (and `AutoProcessor` for those configs) require a video
processor, and the Qwen video processors need torchvision, which this project does not install. The processors
below are the library's own classes with the video processor removed from their `__init__` signature (processor
attributes are derived from that signature), so text + image processing, `mm_token_type_ids` and
`save_pretrained` behave exactly as in the library; video input is unsupported.
"""

from __future__ import annotations

from typing import Any, Optional

from transformers.processing_utils import ProcessorMixin


def _set_token_attrs(self: Any, tokenizer: Any, with_vision_bounds: bool) -> None:
    self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
    self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
    self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(self.image_token)
    self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(self.video_token)
    if with_vision_bounds:
        self.vision_start_token = getattr(tokenizer, "vision_start_token", None) or "<|vision_start|>"
        self.vision_end_token = getattr(tokenizer, "vision_end_token", None) or "<|vision_end|>"
        self.vision_start_token_id = tokenizer.convert_tokens_to_ids(self.vision_start_token)
        self.vision_end_token_id = tokenizer.convert_tokens_to_ids(self.vision_end_token)


def _make_image_only(base: type, name: str, with_vision_bounds: bool) -> type:
    def __init__(self, image_processor=None, tokenizer=None, chat_template: Optional[str] = None, **kwargs):
        _set_token_attrs(self, tokenizer, with_vision_bounds)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return type(name, (base,), {"__init__": __init__, "__module__": __name__,
                                "__doc__": f"{base.__name__} without a video processor (no torchvision needed)."})


def _build() -> dict[str, type]:
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    return {
        "qwen2_vl": _make_image_only(Qwen2VLProcessor, "Qwen2VLImageOnlyProcessor", False),
        "qwen2_5_vl": _make_image_only(Qwen2_5_VLProcessor, "Qwen2_5_VLImageOnlyProcessor", False),
        "qwen3_vl": _make_image_only(Qwen3VLProcessor, "Qwen3VLImageOnlyProcessor", True),
    }


_CLASSES: dict[str, type] = _build()
Qwen2VLImageOnlyProcessor = _CLASSES["qwen2_vl"]
Qwen2_5_VLImageOnlyProcessor = _CLASSES["qwen2_5_vl"]
Qwen3VLImageOnlyProcessor = _CLASSES["qwen3_vl"]


def image_only_processor_class(model_type: str) -> type:
    return _CLASSES[model_type]


def load_image_processor(name_or_path: str, min_pixels: int, max_pixels: int, **hub_kwargs: Any) -> Any:
    """The checkpoint's image processor (PIL backend when torchvision is absent), bounded to [min, max] pixels."""
    from transformers import AutoImageProcessor

    import transformers.utils.logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # silence the "falling back to the PIL class" notice: that is the point
    try:
        image_processor = AutoImageProcessor.from_pretrained(name_or_path, **hub_kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    image_processor.size = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
    for attr, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if hasattr(image_processor, attr):
            setattr(image_processor, attr, int(value))
    return image_processor


def build_image_only_processor(model_type: str, name_or_path: str, tokenizer: Any, min_pixels: int,
                               max_pixels: int, **hub_kwargs: Any) -> Any:
    image_processor = load_image_processor(name_or_path, min_pixels, max_pixels, **hub_kwargs)
    cls = image_only_processor_class(model_type)
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template)
