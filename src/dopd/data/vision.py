"""What the data layer needs to know about a model's vision side (`VisionSpec`), and a model-free default.

Orientation convention: every image is used as it is displayed, i.e. with its EXIF orientation applied
(`PIL.ImageOps.exif_transpose`), and `bbox` / crop coordinates refer to that displayed image. `open_rgb` and
`image_size` below are the only places images are opened or measured, so views, boxes, crops and check-data agree.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from PIL import Image, ImageOps

#: EXIF orientation values (tag 0x0112) that swap width and height (transpose, 90 deg, transverse, 270 deg)
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
_ORIENTATION_TAG = 0x0112
#: the largest long/short side ratio the Qwen-VL image processing accepts (qwen-vl-utils and transformers raise)
MAX_ASPECT_RATIO = 200


@runtime_checkable
class VisionSpec(Protocol):
    """Implemented by every model adapter; `DefaultVision` when there is no model (check-data, tests)."""

    grounding: str  # a key of dopd.data.grounding.CONVENTIONS
    min_image_size: int  # shortest side a crop is upscaled to
    # optional: `crop_min_pixels: int`, the area a crop is upscaled to at least (0 when absent)

    def load_image(self, path: str) -> Image.Image:
        """The image opened, RGB, resized the way the model's processor will see it."""
        ...


def open_rgb(path: str) -> Image.Image:
    """The image at `path` as displayed (EXIF orientation applied), fully loaded, RGB (no resizing)."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened (not yet transposed) image as displayed, from its header and EXIF only."""
    w, h = image.size
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the stored orientation is all there is
        orientation = None
    return (h, w) if orientation in _SWAPPING_ORIENTATIONS else (w, h)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of the original image as displayed (EXIF orientation applied), from the header only."""
    with Image.open(path) as image:
        return oriented_size(image)


def aspect_ratio(width: float, height: float) -> float:
    """Long side over short side (inf for an empty side)."""
    short = min(width, height)
    return float("inf") if short <= 0 else max(width, height) / short


class DefaultVision:
    """No resizing, the `plain` grounding convention, crops upscaled to at least 28 px (one Qwen-VL patch)."""

    grounding = "plain"
    min_image_size = 28
    crop_min_pixels = 0

    def load_image(self, path: str) -> Image.Image:
        return open_rgb(path)
