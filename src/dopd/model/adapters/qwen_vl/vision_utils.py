"""Image loading exactly as the Qwen-VL processors will see it, through qwen-vl-utils.

`qwen_vl_utils` 0.0.14 imports torchvision at module import, although only its video path uses it. This project
never installs torchvision (the registry wheel is a CUDA build that breaks imports on CPU machines), so
`import_qwen_vl_utils()` imports it behind a small, contained shim: when torchvision cannot be imported, stub
modules named `torchvision`, `torchvision.io` and `torchvision.transforms` are placed in `sys.modules` only for
the duration of that one import and removed right after, so nothing else (transformers' availability checks
included) ever sees them. The image functions we use (`fetch_image`, `smart_resize`) never touch torchvision;
the video functions would fail with an AttributeError on the stub, which is fine: videos are not supported here.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import types
from functools import lru_cache
from typing import Any, Union

from PIL import Image

_STUB_NAMES = ("torchvision", "torchvision.io", "torchvision.transforms")


def _torchvision_importable() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision")
        return True
    except Exception:  # a broken (e.g. CUDA-only) wheel: behave as if absent
        return False


def _make_stubs() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchvision")
    root.__version__ = "0.0.0+dopd-stub"
    io = types.ModuleType("torchvision.io")
    transforms = types.ModuleType("torchvision.transforms")

    class InterpolationMode:  # the only name imported from torchvision.transforms at module level
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    transforms.InterpolationMode = InterpolationMode
    root.io, root.transforms = io, transforms
    return {"torchvision": root, "torchvision.io": io, "torchvision.transforms": transforms}


@lru_cache(maxsize=1)
def import_qwen_vl_utils() -> types.ModuleType:
    """Import `qwen_vl_utils.vision_process`, with or without torchvision (see the module docstring)."""
    if _torchvision_importable():
        return importlib.import_module("qwen_vl_utils.vision_process")
    stubs = _make_stubs()
    inserted = [name for name in _STUB_NAMES if name not in sys.modules]
    for name in inserted:
        sys.modules[name] = stubs[name]
    try:
        return importlib.import_module("qwen_vl_utils.vision_process")
    finally:
        for name in inserted:
            sys.modules.pop(name, None)


def fetch_image(image: Union[str, Image.Image], patch_size: int, min_pixels: int, max_pixels: int) -> Image.Image:
    """Open (path, file:// URL or PIL image), convert to RGB and resize with qwen-vl-utils' `smart_resize`.

    The result has both sides multiples of `2 * patch_size` (the merged-patch factor: 28 for Qwen2/2.5-VL, 32 for
    Qwen3-VL) and a pixel count within [min_pixels, max_pixels], so the processor (given the same bounds) keeps it
    as it is.
    """
    vp = import_qwen_vl_utils()
    ele: dict[str, Any] = {"image": image, "min_pixels": min_pixels, "max_pixels": max_pixels}
    params = inspect.signature(vp.fetch_image).parameters
    if "image_patch_size" in params:
        out = vp.fetch_image(ele, image_patch_size=patch_size)
    else:  # qwen-vl-utils < 0.0.12 takes the merged factor
        out = vp.fetch_image(ele, size_factor=2 * patch_size)
    if isinstance(image, Image.Image) and out is image:
        out = out.copy()
    return out


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """qwen-vl-utils' `smart_resize` (height, width) for a given merged-patch factor."""
    return import_qwen_vl_utils().smart_resize(height, width, factor=factor, min_pixels=min_pixels,
                                                max_pixels=max_pixels)


#: visual tokens a zoomed crop gets at least (unless `image_max_pixels` allows fewer): 256 merged patches, e.g. a
#: 448x448 crop for Qwen2/2.5-VL (200,704 pixels), 512x512 for Qwen3-VL (262,144 pixels)
CROP_MIN_TOKENS = 256


def default_min_image_size(factor: int, min_pixels: int) -> int:
    """Shortest side a crop is upscaled to: two merged patches, or the side of the minimum-pixel square."""
    return max(2 * factor, math.isqrt(max(min_pixels, 0)))


def default_crop_min_pixels(factor: int, min_pixels: int, max_pixels: int) -> int:
    """Area a zoomed crop is upscaled to at least: `CROP_MIN_TOKENS` merged patches, kept within the image
    bounds [min_pixels, max_pixels] (small demo bounds give small crops)."""
    return int(min(max(CROP_MIN_TOKENS * factor * factor, min_pixels), max_pixels))
