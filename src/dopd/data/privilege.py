"""Privilege processors: each turns one kind of privileged information p into part of the view x+p.

A processor reads the sample and the images of the view being built and either appends a delimited text block to
the last user turn, changes images (always copies), or both. Register new ones with `@register_processor(name)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from PIL import Image, ImageDraw, ImageFont

from dopd.hparams import ConfigError

from .grounding import GroundingConvention
from .sample import IMAGE_PLACEHOLDER, CanonicalSample
from .vision import VisionSpec, image_size, open_rgb

# Used when a registry entry has no `privilege` key: whatever the privileged column holds is used.
DEFAULT_PRIVILEGE = ("hint", "boxes_text", "crops")

CROP_LINE = "Zoomed view of region {region} of image {image}: " + IMAGE_PLACEHOLDER
BOX_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


@dataclass
class PrivilegeContext:
    """The privileged view under construction. `images` starts as the plain view's images (shared objects:
    processors must replace an image by an edited copy, never draw on it)."""

    sample: CanonicalSample
    vision: VisionSpec
    data_args: Any
    convention: GroundingConvention
    images: list[Image.Image]
    blocks: list[str] = field(default_factory=list)  # text appended to the last user turn, in order
    _original_sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    _view_sizes: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._view_sizes = {i: img.size for i, img in enumerate(self.images)}

    def original_size(self, index: int) -> tuple[int, int]:
        if index not in self._original_sizes:
            self._original_sizes[index] = image_size(self.sample.images[index])
        return self._original_sizes[index]

    def view_size(self, index: int) -> tuple[int, int]:
        """Size of image `index` as the model sees it (after the processor's resize)."""
        return self._view_sizes[index]


Processor = Callable[[PrivilegeContext], bool]
PROCESSORS: dict[str, Processor] = {}


def register_processor(name: str) -> Callable[[Processor], Processor]:
    def wrap(fn: Processor) -> Processor:
        PROCESSORS[name] = fn
        return fn

    return wrap


def parse_privilege_names(value: Union[str, Sequence[str], None]) -> list[str]:
    """`"hint,crops"` or `["hint", "crops"]` -> names, in order; `"none"` -> []. Unknown names raise ValueError."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"privilege: expected processor names, got {item!r}")
        item = item.strip()
        if not item or item.lower() == "none":
            continue
        if item not in PROCESSORS:
            raise ValueError(f"unknown privilege processor `{item}` (known: {', '.join(PROCESSORS)}, none)")
        if item not in names:
            names.append(item)
    return names


TEMPLATES = {"hint_template": "hint", "boxes_template": "boxes", "crops_template": "crops",
             "reference_template": "reference"}


def check_templates(data_args: Any) -> None:
    """Each template must keep its placeholder, or p would silently vanish from the privileged view."""
    for name, key in TEMPLATES.items():
        if "{" + key + "}" not in getattr(data_args, name):
            raise ConfigError(f"`{name}` must contain {{{key}}}")


def _template(data_args: Any, name: str, key: str, value: str) -> str:
    template = getattr(data_args, name)
    return template.replace("{" + key + "}", value)


@register_processor("hint")
def hint_processor(ctx: PrivilegeContext) -> bool:
    hint = ctx.sample.privileged.hint
    if not hint:
        return False
    ctx.blocks.append(_template(ctx.data_args, "hint_template", "hint", hint.strip()))
    return True


@register_processor("reference")
def reference_processor(ctx: PrivilegeContext) -> bool:
    """The sample's own reference answer as p (the OPSD setting)."""
    if not ctx.sample.response:
        return False
    ctx.blocks.append(_template(ctx.data_args, "reference_template", "reference", ctx.sample.response.strip()))
    return True


@register_processor("boxes_text")
def boxes_text_processor(ctx: PrivilegeContext) -> bool:
    boxes = ctx.sample.privileged.boxes
    if not boxes:
        return False
    conv = ctx.convention
    by_image: dict[int, list[str]] = {}
    for box in boxes:
        text = conv.format_box(box.label, box.bbox, ctx.original_size(box.image), ctx.view_size(box.image))
        by_image.setdefault(box.image, []).append(text)
    parts = [conv.preamble] if conv.preamble else []
    for index in sorted(by_image):
        joined = conv.join(by_image[index])
        parts.append(f"Image {index + 1}:\n{joined}" if len(ctx.sample.images) > 1 else joined)
    ctx.blocks.append(_template(ctx.data_args, "boxes_template", "boxes", "\n".join(parts)))
    return True


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def draw_boxes(image: Image.Image, boxes: Sequence[tuple[str, Sequence[float]]]) -> Image.Image:
    """A copy of `image` with each (label, [x1, y1, x2, y2] in this image's pixels) outlined and labelled."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 64))
    font = _font(max(10, min(out.size) // 12))
    for i, (label, (x1, y1, x2, y2)) in enumerate(boxes):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left, bottom - top
        ty = y1 - th - 2 if y1 - th - 2 >= 0 else y1 + width  # above the box, or inside when at the top edge
        draw.rectangle([x1, ty, x1 + tw + 4, ty + th + 2], fill=colour)
        draw.text((x1 + 2 - left, ty + 1 - top), label, fill=(255, 255, 255), font=font)
    return out


@register_processor("boxes_draw")
def boxes_draw_processor(ctx: PrivilegeContext) -> bool:
    boxes = ctx.sample.privileged.boxes
    if not boxes:
        return False
    by_image: dict[int, list[tuple[str, list[float]]]] = {}
    for box in boxes:
        (w, h), (rw, rh) = ctx.original_size(box.image), ctx.view_size(box.image)
        x1, y1, x2, y2 = box.bbox
        by_image.setdefault(box.image, []).append((box.label, [x1 * rw / w, y1 * rh / h, x2 * rw / w, y2 * rh / h]))
    for index, items in by_image.items():
        ctx.images[index] = draw_boxes(ctx.images[index], items)
    return True


def upscale_to_min_side(image: Image.Image, min_side: int, min_pixels: int = 0) -> Image.Image:
    """Upscale keeping the aspect ratio so the shortest side is at least `min_side` and the area at least
    `min_pixels` (never downscale)."""
    w, h = image.size
    scale = max(min_side / min(w, h), math.sqrt(min_pixels / (w * h)) if min_pixels > 0 else 0.0)
    if scale <= 1.0:
        return image
    size = (max(min_side, math.ceil(w * scale - 1e-9)), max(min_side, math.ceil(h * scale - 1e-9)))
    return image.resize(size, Image.Resampling.BICUBIC)


def crop_box(bbox: Sequence[float]) -> tuple[int, int, int, int]:
    """The pixel box a crop region is cut with (rounded to whole pixels)."""
    return tuple(int(round(v)) for v in bbox)  # type: ignore[return-value]


def crop_region(original: Image.Image, bbox: Sequence[float], min_side: int, min_pixels: int = 0) -> Image.Image:
    """The region cut from the (EXIF-oriented) original, upscaled so it gets a meaningful number of visual
    tokens: short side >= `min_side`, area >= `min_pixels`, aspect kept."""
    return upscale_to_min_side(original.crop(crop_box(bbox)), min_side, min_pixels)


@register_processor("crops")
def crops_processor(ctx: PrivilegeContext) -> bool:
    crops = ctx.sample.privileged.crops
    if not crops:
        return False
    originals: dict[int, Image.Image] = {}
    lines = []
    for crop in crops:
        if crop.image not in originals:
            originals[crop.image] = open_rgb(ctx.sample.images[crop.image])
        ctx.images.append(crop_region(originals[crop.image], crop.bbox, ctx.vision.min_image_size,
                                      int(getattr(ctx.vision, "crop_min_pixels", 0) or 0)))
        region = ctx.convention.format_region(crop.bbox, ctx.original_size(crop.image), ctx.view_size(crop.image))
        lines.append(CROP_LINE.format(region=region, image=crop.image + 1))
    ctx.blocks.append(_template(ctx.data_args, "crops_template", "crops", "\n".join(lines)))
    return True


def processor_names(sample: CanonicalSample, data_args: Optional[Any]) -> list[str]:
    """`data_args.privilege` when set (it overrides the registry), else the sample's own list."""
    override = getattr(data_args, "privilege", None)
    return parse_privilege_names(override) if override else list(sample.privilege)
