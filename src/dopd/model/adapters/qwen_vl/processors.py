"""Image-only processors for the Qwen-VL families, saved so that stock transformers loads what we save.

transformers 5.x's `Qwen2VLProcessor` / `Qwen3VLProcessor` (and `AutoProcessor` for those configs) require a video
processor, and the Qwen video processors need torchvision, which this project does not install. The processors
below are the library's own classes with the video processor removed from their `__init__` signature (processor
attributes are derived from that signature), so text + image processing, `mm_token_type_ids` and
`save_pretrained` behave exactly as in the library; video input is unsupported.

Saving (checkpoints, the final model, `dopd-cli export`) must give a folder that loads in a process that never
imported `dopd` (vLLM, lmms-eval, VLMEvalKit):
- the classes carry transformers' own names (`Qwen2VLProcessor`, `Qwen2_5_VLProcessor`, `Qwen3VLProcessor`), so
  `processor_class` in processor_config.json and tokenizer_config.json names a class transformers knows;
- the base checkpoint's own processing files (`BASE_PROCESSOR_FILES`: preprocessor, video preprocessor, chat
  template and processor configs) are copied byte for byte over what `save_pretrained` wrote. The training-time
  pixel bounds (`image_min_pixels` / `image_max_pixels`) therefore never replace the checkpoint's, and the
  processor_config.json does not nest an image-processor config that would shadow preprocessor_config.json.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any, Optional

from transformers.processing_utils import ProcessorMixin

logger = logging.getLogger(__name__)

#: transformers' own processor class name per model type (what a saved folder must say)
STOCK_PROCESSOR_NAMES = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor",
                         "qwen3_vl": "Qwen3VLProcessor"}
#: a base checkpoint's processing files, copied unchanged into every folder we save
BASE_PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "chat_template.json",
                        "chat_template.jinja", "processor_config.json")
#: each family's published pixel bounds, used only when a checkpoint's preprocessor config states none
FAMILY_PIXEL_BOUNDS = {"qwen2_vl": (3136, 12845056), "qwen2_5_vl": (3136, 12845056),
                       "qwen3_vl": (65536, 16777216)}


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


def _make_image_only(base: type, with_vision_bounds: bool) -> type:
    def __init__(self, image_processor=None, tokenizer=None, chat_template: Optional[str] = None, **kwargs):
        _set_token_attrs(self, tokenizer, with_vision_bounds)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
        self.base_files: dict[str, str] = {}  # file name -> local path of the base checkpoint's copy
        self.checkpoint_pixels: Optional[tuple[int, int]] = None  # the base's (min, max) pixels

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        if push_to_hub:
            logger.warning("push_to_hub is not supported for %s: saving locally only", base.__name__)
        files = ProcessorMixin.save_pretrained(self, save_directory, **kwargs)
        restore_base_files(self, str(save_directory))
        return files

    # The stock class name (not a name of our own): `processor_class` in the saved processor_config.json and
    # tokenizer_config.json must name a class that `AutoProcessor` finds without importing dopd.
    return type(base.__name__, (base,), {
        "__init__": __init__, "save_pretrained": save_pretrained, "__module__": __name__,
        "__qualname__": base.__name__,
        "__doc__": f"{base.__name__} without a video processor (no torchvision needed); saved under the stock "
                   "class name with the base checkpoint's processing files.",
    })


def _build() -> dict[str, type]:
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    return {
        "qwen2_vl": _make_image_only(Qwen2VLProcessor, False),
        "qwen2_5_vl": _make_image_only(Qwen2_5_VLProcessor, False),
        "qwen3_vl": _make_image_only(Qwen3VLProcessor, True),
    }


_CLASSES: dict[str, type] = _build()
Qwen2VLImageOnlyProcessor = _CLASSES["qwen2_vl"]
Qwen2_5_VLImageOnlyProcessor = _CLASSES["qwen2_5_vl"]
Qwen3VLImageOnlyProcessor = _CLASSES["qwen3_vl"]


def image_only_processor_class(model_type: str) -> type:
    return _CLASSES[model_type]


def resolve_file(name_or_path: str, filename: str, **hub_kwargs: Any) -> Optional[str]:
    """Local path of `filename` in a checkpoint folder or a hub repo (downloaded / from the cache), else None."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file

    kw = {k: v for k, v in hub_kwargs.items() if k in ("cache_dir", "revision", "token", "local_files_only")}
    try:
        return cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **kw)
    except OSError:
        return None


def base_processor_files(name_or_path: str, **hub_kwargs: Any) -> dict[str, str]:
    """The checkpoint's processing files that exist (`BASE_PROCESSOR_FILES`), name -> local path."""
    found = {name: resolve_file(name_or_path, name, **hub_kwargs) for name in BASE_PROCESSOR_FILES}
    return {name: path for name, path in found.items() if path}


def read_processor_chat_template(files: dict[str, str]) -> Optional[str]:
    """The processor's own chat template, as transformers reads it: chat_template.json (legacy; it wins when both
    exist) else chat_template.jinja."""
    if "chat_template.json" in files:
        with open(files["chat_template.json"], encoding="utf-8") as fh:
            template = json.load(fh).get("chat_template")
        if template:
            return template
    if "chat_template.jinja" in files:
        with open(files["chat_template.jinja"], encoding="utf-8") as fh:
            return fh.read()
    return None


def restore_base_files(processor: Any, out_dir: str) -> None:
    """After `save_pretrained`: put the base checkpoint's processing files back, so the folder loads like the base.

    Files the base has are copied over ours. Where the base has no processor_config.json, ours is reduced to the
    stock `processor_class` (a nested image-processor config there would shadow preprocessor_config.json). Where
    the base has no preprocessor_config.json, the image processor is saved with the checkpoint's pixel bounds,
    not the training-time ones. chat_template.jinja, when the base has none, stays as written (the processor's
    template: transformers 5 tokenizers save and read their template there)."""
    files = dict(getattr(processor, "base_files", None) or {})
    stock = type(processor).__name__
    for name, src in files.items():
        dst = os.path.join(out_dir, name)
        if os.path.abspath(src) != os.path.abspath(dst):
            shutil.copyfile(src, dst)
    if "processor_config.json" not in files:
        with open(os.path.join(out_dir, "processor_config.json"), "w", encoding="utf-8") as fh:
            json.dump({"processor_class": stock}, fh, indent=2)
            fh.write("\n")
    if "preprocessor_config.json" not in files:
        image_processor = processor.image_processor
        saved = image_processor.size
        bounds = getattr(processor, "checkpoint_pixels", None)
        try:
            if bounds:
                image_processor.size = {"shortest_edge": int(bounds[0]), "longest_edge": int(bounds[1])}
            image_processor.save_pretrained(out_dir)
        finally:
            image_processor.size = saved
        path = os.path.join(out_dir, "preprocessor_config.json")
        with open(path, encoding="utf-8") as fh:
            cfg = json.load(fh)
        cfg["processor_class"] = stock
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(cfg, fh, indent=2)
            fh.write("\n")


def _size_get(size: Any, key: str) -> Optional[int]:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def checkpoint_pixel_bounds(image_processor: Any, model_type: str) -> tuple[int, int]:
    """(min_pixels, max_pixels) the checkpoint's preprocessor config states: `size.shortest_edge/longest_edge`
    (transformers 5.x; older configs' `min_pixels` / `max_pixels` are mapped there on load), else
    `min_pixels` / `max_pixels` attributes, else the family's published defaults."""
    size = getattr(image_processor, "size", None)
    lo = _size_get(size, "shortest_edge") if size is not None else None
    hi = _size_get(size, "longest_edge") if size is not None else None
    lo = lo or (int(image_processor.min_pixels) if getattr(image_processor, "min_pixels", None) else None)
    hi = hi or (int(image_processor.max_pixels) if getattr(image_processor, "max_pixels", None) else None)
    default_lo, default_hi = FAMILY_PIXEL_BOUNDS.get(model_type, FAMILY_PIXEL_BOUNDS["qwen2_vl"])
    return lo or default_lo, hi or default_hi


def load_image_processor(name_or_path: str, **hub_kwargs: Any) -> Any:
    """The checkpoint's image processor as the checkpoint configures it (PIL backend when torchvision is absent)."""
    from transformers import AutoImageProcessor

    import transformers.utils.logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # silence the "falling back to the PIL class" notice: that is the point
    try:
        return AutoImageProcessor.from_pretrained(name_or_path, **hub_kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def bound_image_processor(image_processor: Any, min_pixels: int, max_pixels: int) -> Any:
    """Resize bounds used while training (in memory only: saving restores the checkpoint's files)."""
    image_processor.size = {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}
    for attr, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if hasattr(image_processor, attr):
            setattr(image_processor, attr, int(value))
    return image_processor


def build_image_only_processor(model_type: str, name_or_path: str, tokenizer: Any, image_processor: Any,
                               min_pixels: int, max_pixels: int, chat_template: Optional[str],
                               base_files: Optional[dict[str, str]] = None,
                               checkpoint_pixels: Optional[tuple[int, int]] = None) -> Any:
    """The family's image-only processor around `image_processor` (bounded to [min, max] pixels), remembering
    the base checkpoint's processing files and pixel bounds for `save_pretrained`."""
    bound_image_processor(image_processor, min_pixels, max_pixels)
    cls = image_only_processor_class(model_type)
    processor = cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)
    processor.base_files = dict(base_files or {})
    processor.checkpoint_pixels = checkpoint_pixels
    return processor
