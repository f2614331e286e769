"""The canonical sample every dataset format converts to, and its privileged record.

A sample carries no loaded image: images are paths, opened only when views are built or data is validated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

IMAGE_PLACEHOLDER = "<image>"
ROLES = ("system", "user", "assistant")

BBox = tuple[float, float, float, float]


class SampleError(ValueError):
    """One sample cannot be used; `field` names the offending field (e.g. `privileged.boxes[1].bbox`)."""

    def __init__(self, field: str, reason: str, kind: str = "format") -> None:
        super().__init__(f"field `{field}`: {reason}")
        self.field = field
        self.reason = reason
        self.kind = kind


@dataclass
class Box:
    """A labelled box in pixels of the ORIGINAL image number `image` (0-based) of the sample."""

    label: str
    bbox: BBox
    image: int = 0


@dataclass
class Crop:
    """A region (pixels of the ORIGINAL image `image`) shown zoomed as an extra image in the privileged view."""

    bbox: BBox
    image: int = 0


@dataclass
class PrivilegedRecord:
    hint: Optional[str] = None
    boxes: list[Box] = field(default_factory=list)
    crops: list[Crop] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.hint or self.boxes or self.crops)


@dataclass
class CanonicalSample:
    uid: str  # "<dataset>:<index>"
    dataset: str
    index: int  # row of the dataset (across the files of a folder, in sorted order)
    source_file: str
    messages: list[dict[str, str]]  # the prompt: everything before the last assistant turn
    response: Optional[str] = None  # the reference answer, when the sample has one
    images: list[str] = field(default_factory=list)  # absolute paths, in `<image>` order
    privileged: PrivilegedRecord = field(default_factory=PrivilegedRecord)
    privilege: list[str] = field(default_factory=list)  # processor names, see dopd.data.privilege


def _bbox(value: Any, where: str) -> BBox:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise SampleError(where, f"expected [x1, y1, x2, y2] (4 numbers), got {value!r}", kind="privileged")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _image_index(value: Any, where: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise SampleError(where, f"expected an image index (integer), got {value!r}", kind="privileged")
    return value


def _known_keys(obj: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise SampleError(
            where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}", kind="privileged"
        )


def parse_privileged(raw: Any, where: str = "privileged") -> PrivilegedRecord:
    """Read the `privileged` column of one sample.

    Accepted shapes: missing/None/"" (none), a string (a hint), or an object with optional `hint` (text),
    `boxes` (list of {"label", "bbox": [x1, y1, x2, y2], "image": i}) and `crops` (list of [x1, y1, x2, y2] or
    {"bbox": [...], "image": i}); `image` defaults to 0. A string holding a JSON object (`{...}`, e.g. a CSV cell)
    is read as the object. Keys set to null are treated as absent (readers such as `datasets` fill them in).
    """
    if raw is None:
        return PrivilegedRecord()
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{") and text.endswith("}"):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError:
                return PrivilegedRecord(hint=raw)
        else:
            return PrivilegedRecord(hint=raw if text else None)
    if not isinstance(raw, dict):
        raise SampleError(where, f"expected a string (hint) or an object, got {type(raw).__name__}", kind="privileged")
    _known_keys(raw, ("hint", "boxes", "crops"), where)

    hint = raw.get("hint")
    if hint is not None and not isinstance(hint, str):
        raise SampleError(f"{where}.hint", f"expected text, got {type(hint).__name__}", kind="privileged")

    boxes = []
    raw_boxes = raw.get("boxes") or []
    if not isinstance(raw_boxes, list):
        raise SampleError(f"{where}.boxes", "expected a list of boxes", kind="privileged")
    for i, box in enumerate(raw_boxes):
        at = f"{where}.boxes[{i}]"
        if not isinstance(box, dict):
            raise SampleError(at, 'expected {"label": ..., "bbox": [x1, y1, x2, y2]}', kind="privileged")
        _known_keys({k for k, v in box.items() if v is not None}, ("label", "bbox", "image"), at)
        label = box.get("label")
        if not isinstance(label, str) or not label.strip():
            raise SampleError(f"{at}.label", "expected a non-empty text label", kind="privileged")
        boxes.append(Box(label=label, bbox=_bbox(box.get("bbox"), f"{at}.bbox"),
                         image=_image_index(box.get("image"), f"{at}.image")))

    crops = []
    raw_crops = raw.get("crops") or []
    if not isinstance(raw_crops, list):
        raise SampleError(f"{where}.crops", "expected a list of regions", kind="privileged")
    for i, crop in enumerate(raw_crops):
        at = f"{where}.crops[{i}]"
        if isinstance(crop, dict):
            _known_keys({k for k, v in crop.items() if v is not None}, ("bbox", "image"), at)
            crops.append(Crop(bbox=_bbox(crop.get("bbox"), f"{at}.bbox"),
                              image=_image_index(crop.get("image"), f"{at}.image")))
        else:
            crops.append(Crop(bbox=_bbox(crop, at)))
    return PrivilegedRecord(hint=hint or None, boxes=boxes, crops=crops)


@dataclass
class SampleIssue:
    """Why one sample is invalid, with enough to find it: file, sample index, field."""

    dataset: str
    source_file: str
    index: int
    field: str
    reason: str
    kind: str = "format"  # groups issues in summaries: format, roles, placeholders, image, privileged, box, render

    @property
    def uid(self) -> str:
        return f"{self.dataset}:{self.index}"

    def __str__(self) -> str:
        return f"{self.source_file}: sample {self.index}: field `{self.field}`: {self.reason}"
