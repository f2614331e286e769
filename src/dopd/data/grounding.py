"""How each model family writes a box in text (its grounding convention), keyed by name in `CONVENTIONS`.

A model adapter declares `grounding = "<name>"`; boxes and crop regions of the privileged view are written in that
family's own convention so the model reads them the way it was trained to. Coordinates always start from the box in
pixels of the ORIGINAL image; `relative` conventions scale them to integers 0-1000 of the original width/height,
absolute ones map them into the pixels of the image as the processor resizes it (`view_size`).

Examples for a 200x100 image, box [20, 10, 100, 50] labelled "red circle" (qwen2_5_vl: image resized to 400x200):

    qwen2_vl    <|object_ref_start|>red circle<|object_ref_end|><|box_start|>(100,100),(500,500)<|box_end|>
    qwen3_vl    {"bbox_2d": [100, 100, 500, 500], "label": "red circle"}
    qwen2_5_vl  {"bbox_2d": [40, 20, 200, 100], "label": "red circle"}
    plain       red circle: [100, 100, 500, 500]
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

BBox = Sequence[float]
Size = tuple[int, int]  # (width, height)


def _round(value: float) -> int:
    return int(math.floor(value + 0.5))  # half up, not banker's rounding


def relative_1000(bbox: BBox, original_size: Size) -> list[int]:
    """Integers 0-1000 relative to the original width and height."""
    w, h = original_size
    scale = (1000.0 / w, 1000.0 / h, 1000.0 / w, 1000.0 / h)
    return [min(1000, max(0, _round(v * s))) for v, s in zip(bbox, scale)]


def absolute_resized(bbox: BBox, original_size: Size, view_size: Size) -> list[int]:
    """Pixels of the image as the processor resizes it (the box scaled from the original size)."""
    (w, h), (rw, rh) = original_size, view_size
    scale = (rw / w, rh / h, rw / w, rh / h)
    limit = (rw, rh, rw, rh)
    return [min(lim, max(0, _round(v * s))) for v, s, lim in zip(bbox, scale, limit)]


@dataclass(frozen=True)
class GroundingConvention:
    name: str
    relative: bool  # True: 0-1000 of the original image; False: pixels of the resized image
    box: Callable[[str, list[int]], str]  # (label, coords) -> text of one box
    region: Callable[[list[int]], str]  # coords -> text of an unlabelled region (crops)
    join: Callable[[list[str]], str]  # texts of the boxes of one image -> one text
    preamble: Optional[str] = None  # a line before the boxes, for readers without a trained convention

    def coords(self, bbox: BBox, original_size: Size, view_size: Size) -> list[int]:
        if self.relative:
            return relative_1000(bbox, original_size)
        return absolute_resized(bbox, original_size, view_size)

    def format_box(self, label: str, bbox: BBox, original_size: Size, view_size: Size) -> str:
        return self.box(label, self.coords(bbox, original_size, view_size))

    def format_region(self, bbox: BBox, original_size: Size, view_size: Size) -> str:
        return self.region(self.coords(bbox, original_size, view_size))


def _qwen2_box(label: str, c: list[int]) -> str:
    return (f"<|object_ref_start|>{label}<|object_ref_end|>"
            f"<|box_start|>({c[0]},{c[1]}),({c[2]},{c[3]})<|box_end|>")


def _qwen2_region(c: list[int]) -> str:
    return f"<|box_start|>({c[0]},{c[1]}),({c[2]},{c[3]})<|box_end|>"


def _json_box(label: str, c: list[int]) -> str:
    return json.dumps({"bbox_2d": c, "label": label}, ensure_ascii=False)


def _json_list(items: list[str]) -> str:
    """The JSON list Qwen2.5-VL/Qwen3-VL answer grounding queries with, one object per line."""
    return "[\n" + ",\n".join(f"  {item}" for item in items) + "\n]"


def _list_region(c: list[int]) -> str:
    return f"[{c[0]}, {c[1]}, {c[2]}, {c[3]}]"


CONVENTIONS: dict[str, GroundingConvention] = {
    "qwen2_vl": GroundingConvention("qwen2_vl", True, _qwen2_box, _qwen2_region, "\n".join),
    "qwen3_vl": GroundingConvention("qwen3_vl", True, _json_box, _list_region, _json_list),
    "qwen2_5_vl": GroundingConvention("qwen2_5_vl", False, _json_box, _list_region, _json_list),
    "plain": GroundingConvention(
        "plain", True, lambda label, c: f"{label}: {_list_region(c)}", _list_region, "\n".join,
        preamble="Boxes are [x1, y1, x2, y2], scaled to 0-1000 of the image width and height.",
    ),
}


def get_convention(name: str) -> GroundingConvention:
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValueError(f"unknown grounding convention `{name}` (known: {', '.join(CONVENTIONS)})") from None
