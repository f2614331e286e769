"""What the data layer needs to know about a model's vision side (`VisionSpec`), and a model-free default."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from PIL import Image


@runtime_checkable
class VisionSpec(Protocol):
    """Implemented by every model adapter; `DefaultVision` when there is no model (check-data, tests)."""

    grounding: str  # a key of dopd.data.grounding.CONVENTIONS
    min_image_size: int  # shortest side a crop is upscaled to

    def load_image(self, path: str) -> Image.Image:
        """The image opened, RGB, resized the way the model's processor will see it."""
        ...


def open_rgb(path: str) -> Image.Image:
    """The image at `path`, fully loaded and converted to RGB (no resizing)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of the original image, read from the header only."""
    with Image.open(path) as image:
        return image.size


class DefaultVision:
    """No resizing, the `plain` grounding convention, crops upscaled to at least 28 px (one Qwen-VL patch)."""

    grounding = "plain"
    min_image_size = 28

    def load_image(self, path: str) -> Image.Image:
        return open_rgb(path)
