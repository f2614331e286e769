"""Reading an annotator's grounding answer back: text in a model family's convention -> boxes in ORIGINAL pixels.

The forward direction (a box in original pixels -> the family's text) is `dopd.data.grounding`; this module is its
inverse, so a box written by `format_box` and read back here lands where it started (to the rounding of the
forward mapping), and a coordinate `c` read here and written again gives `c` exactly:

- `qwen2_vl`:   `<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`, 0-1000 of the
  original width/height (servers that strip special tokens leave `label(x1,y1),(x2,y2)`, also read);
- `qwen3_vl`:   JSON `[{"bbox_2d": [x1, y1, x2, y2], "label": ...}]`, 0-1000;
- `qwen2_5_vl`: the same JSON, in pixels of the image as the processor resized it (`view_size`).

JSON may sit inside a ```json code fence, be followed or preceded by prose, or be cut off after some complete
objects (each complete object is kept). Boxes are then clipped to the image, their corners put in order, and
dropped when less than one original pixel wide or high.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from dopd.data.grounding import get_convention

Size = tuple[int, int]  # (width, height)
MIN_SIDE = 1.0  # boxes narrower or lower than this many original pixels are dropped
DECIMALS = 4  # stored precision: the forward mapping's rounding (half a unit) is never crossed


@dataclass
class RawBox:
    """A box as the annotator wrote it: coordinates in its convention, `image` 0-based (default 0)."""

    label: str
    coords: list[float]
    image: int = 0


class ParseError(ValueError):
    """The answer holds no box in the expected format."""


_NUM = r"(-?\d+(?:\.\d+)?)"
_PAIR = rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)"
_QWEN2_BOX = re.compile(rf"<\|box_start\|>\s*{_PAIR}\s*,\s*{_PAIR}\s*<\|box_end\|>")
_QWEN2_REF = re.compile(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>", re.S)
# special tokens stripped by the server (vLLM's default): "label(x1,y1),(x2,y2)", one per line
_QWEN2_BARE = re.compile(rf"([^\n()]*?)\s*{_PAIR}\s*,\s*{_PAIR}")
_IMAGE_HEADING = re.compile(r"^\s*(?:Image|Picture)\s+(\d+)\s*:?\s*$", re.I | re.M)


def _image_of_offset(text: str, offset: int) -> int:
    """0-based image index from the last `Image N:` heading before `offset` (0 when there is none)."""
    index = 0
    for match in _IMAGE_HEADING.finditer(text, 0, offset):
        index = max(0, int(match.group(1)) - 1)
    return index


def parse_qwen2_vl(text: str) -> list[RawBox]:
    """Qwen2-VL's special-token boxes; a reference followed by several boxes gives each box its label."""
    boxes: list[RawBox] = []
    refs = [(m.start(), m.end(), m.group(1).strip()) for m in _QWEN2_REF.finditer(text)]
    for match in _QWEN2_BOX.finditer(text):
        label = next((lab for start, end, lab in reversed(refs) if end <= match.start()), "")
        coords = [float(match.group(i)) for i in range(1, 5)]
        boxes.append(RawBox(label, coords, _image_of_offset(text, match.start())))
    if boxes or "<|box_start|>" in text:
        return boxes
    for match in _QWEN2_BARE.finditer(text):
        label = match.group(1).strip().strip(":-*").strip()
        coords = [float(match.group(i)) for i in range(2, 6)]
        boxes.append(RawBox(label, coords, _image_of_offset(text, match.start())))
    return boxes


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)
_OBJECT = re.compile(r"\{[^{}]*\}")


def _json_values(text: str) -> list[Any]:
    """Every JSON list/object that decodes, scanning from each `[` or `{` (fenced content first)."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start, ch in enumerate(candidate):
            if ch not in "[{":
                continue
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            return [value]
    # cut off or otherwise broken as a whole: the complete flat objects it holds
    found = []
    for match in _OBJECT.finditer(text):
        try:
            found.append(json.loads(match.group(0)))
        except json.JSONDecodeError:
            continue
    return found


def _json_box(obj: Any) -> Optional[RawBox]:
    if not isinstance(obj, dict):
        return None
    coords = obj.get("bbox_2d", obj.get("bbox"))
    if (not isinstance(coords, (list, tuple)) or len(coords) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in coords)):
        return None
    label = obj.get("label", obj.get("name", ""))
    image = obj.get("image", 1)
    image = int(image) - 1 if isinstance(image, int) and not isinstance(image, bool) and image >= 1 else 0
    return RawBox(str(label).strip() if label is not None else "", [float(v) for v in coords], image)


def parse_json_boxes(text: str) -> list[RawBox]:
    """Qwen2.5-VL / Qwen3-VL JSON: a list of {"bbox_2d", "label"} (or one such object), `image` 1-based."""
    boxes = []
    for value in _json_values(text):
        items = value if isinstance(value, list) else [value]
        if isinstance(value, dict) and not any(k in value for k in ("bbox_2d", "bbox")):
            items = next((v for v in value.values() if isinstance(v, list)), [])  # {"objects": [...]}
        boxes += [box for box in map(_json_box, items) if box is not None]
    return boxes


PARSERS = {"qwen2_vl": parse_qwen2_vl, "qwen2_5_vl": parse_json_boxes, "qwen3_vl": parse_json_boxes}
GROUNDINGS = tuple(PARSERS)


def parse_boxes(text: str, grounding: str) -> list[RawBox]:
    """The boxes of one answer, in the annotator's own coordinates; ParseError when none can be read."""
    if grounding not in PARSERS:
        raise ValueError(f"annotator_grounding: unknown `{grounding}` (use {', '.join(GROUNDINGS)})")
    boxes = PARSERS[grounding](text)
    if not boxes:
        raise ParseError(f"no {grounding} box found in the answer")
    return boxes


# ------------------------------------------------------------------------------------ coordinates, both ways
def to_original(coords: Sequence[float], grounding: str, original_size: Size, view_size: Optional[Size] = None
                ) -> list[float]:
    """Annotator coordinates -> pixels of the original image: the exact inverse of `dopd.data.grounding`'s
    `relative_1000` (c * size / 1000) and `absolute_resized` (c * size / resized size). Not clipped."""
    w, h = original_size
    if get_convention(grounding).relative:
        sx, sy = w / 1000.0, h / 1000.0
    else:
        if view_size is None:
            raise ValueError(f"{grounding} boxes are in resized-image pixels: the resized size is needed")
        sx, sy = w / view_size[0], h / view_size[1]
    x1, y1, x2, y2 = coords
    return [x1 * sx, y1 * sy, x2 * sx, y2 * sy]


def clip_box(bbox: Sequence[float], size: Size) -> Optional[list[float]]:
    """Corners in order, clipped to the image, rounded to `DECIMALS`; None when less than `MIN_SIDE` wide or high."""
    w, h = size
    x1, x2 = sorted((bbox[0], bbox[2]))
    y1, y2 = sorted((bbox[1], bbox[3]))
    x1, x2 = min(max(x1, 0.0), w), min(max(x2, 0.0), w)
    y1, y2 = min(max(y1, 0.0), h), min(max(y2, 0.0), h)
    if x2 - x1 < MIN_SIDE or y2 - y1 < MIN_SIDE:
        return None
    return [round(v, DECIMALS) for v in (x1, y1, x2, y2)]


def crop_region(bbox: Sequence[float], size: Size, margin: float) -> list[int]:
    """The box grown by `margin` x its width/height on each side, to whole pixels, clipped to the image."""
    w, h = size
    x1, y1, x2, y2 = bbox
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    return [max(0, math.floor(x1 - mx)), max(0, math.floor(y1 - my)),
            min(w, math.ceil(x2 + mx)), min(h, math.ceil(y2 + my))]


@dataclass
class BoxResult:
    boxes: list[dict[str, Any]]  # {"label", "bbox", "image"} in original pixels, the repo's schema
    dropped: int  # read but dropped: degenerate, outside every image, or unlabelled


def boxes_to_original(raw: Sequence[RawBox], grounding: str, original_sizes: Sequence[Size],
                      view_sizes: Optional[Sequence[Size]] = None) -> BoxResult:
    """Convert, clip and filter the boxes of one answer (`original_sizes[i]`, `view_sizes[i]`: image i)."""
    out, dropped = [], 0
    for box in raw:
        if not 0 <= box.image < len(original_sizes) or not box.label:
            dropped += 1
            continue
        size = original_sizes[box.image]
        view = view_sizes[box.image] if view_sizes is not None else None
        clipped = clip_box(to_original(box.coords, grounding, size, view), size)
        if clipped is None:
            dropped += 1
            continue
        out.append({"label": box.label, "bbox": clipped, "image": box.image})
    return BoxResult(out, dropped)
